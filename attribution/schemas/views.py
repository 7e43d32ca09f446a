"""Pages of the error-schema cache: browse and search, one schema with its exemplars, statistics and audit log, and
the owners' actions (approve, edit, retire, restore, distil now, opt in to the shared library)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tracing import selectors as tracing_selectors
from tracing.models import Membership, Role

from ..models import ErrorSchema
from . import selectors, services
from .forms import LibraryForm, RetireForm, SchemaEditForm, SchemaSearchForm


def _owner(membership: Membership) -> Membership:
    if membership.role != Role.OWNER:
        raise PermissionDenied("Only owners change the project's error schemas")
    return membership


def _schema_for(request: HttpRequest, slug: str, schema_id: int) -> tuple[ErrorSchema, Membership]:
    membership = tracing_selectors.membership_for_user(user=request.user, slug=slug)
    schema = selectors.schema_for_project(project=membership.project, schema_id=schema_id)
    if schema is None:
        raise Http404("No such schema")
    return schema, membership


@login_required
@require_GET
def schema_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = tracing_selectors.membership_for_user(user=request.user, slug=slug)
    form = SchemaSearchForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {"q": "", "status": ""}
    schemas = selectors.schema_list(project=membership.project, q=data["q"], status=data["status"])[:200]
    context = {
        "project": membership.project,
        "membership": membership,
        "form": form,
        "schemas": schemas,
        "counts": selectors.schema_counts(project=membership.project),
        "library_form": LibraryForm(
            initial={"use_shared_library": selectors.uses_shared_library(project=membership.project)}
        ),
    }
    template = "attribution/schema_list.html#results" if request.htmx else "attribution/schema_list.html"
    response = render(request, template, context)
    response["Vary"] = "HX-Request"
    return response


@login_required
@require_GET
def schema_detail(request: HttpRequest, slug: str, schema_id: int) -> HttpResponse:
    schema, membership = _schema_for(request, slug, schema_id)
    context = selectors.schema_detail_context(schema) | {
        "project": membership.project,
        "membership": membership,
        "retire_form": RetireForm(),
    }
    return render(request, "attribution/schema_detail.html", context)


@login_required
@require_POST
def schema_approve(request: HttpRequest, slug: str, schema_id: int) -> HttpResponse:
    schema, membership = _schema_for(request, slug, schema_id)
    _owner(membership)
    try:
        services.schema_approve(schema=schema, user=request.user)
    except ValueError:
        pass  # a retired schema: the page shows it must be restored first
    return redirect("attribution:schema_detail", slug=slug, schema_id=schema.pk)


@login_required
@require_POST
def schema_retire(request: HttpRequest, slug: str, schema_id: int) -> HttpResponse:
    schema, membership = _schema_for(request, slug, schema_id)
    _owner(membership)
    form = RetireForm(request.POST)
    if not form.is_valid():  # the schema stays as it is; the page says why
        context = selectors.schema_detail_context(schema) | {
            "project": membership.project,
            "membership": membership,
            "retire_form": form,
        }
        return render(request, "attribution/schema_detail.html", context, status=400)
    services.schema_retire(schema=schema, user=request.user, reason=form.cleaned_data["reason"])
    return redirect("attribution:schema_detail", slug=slug, schema_id=schema.pk)


@login_required
@require_POST
def schema_restore(request: HttpRequest, slug: str, schema_id: int) -> HttpResponse:
    schema, membership = _schema_for(request, slug, schema_id)
    _owner(membership)
    services.schema_restore(schema=schema, user=request.user)
    return redirect("attribution:schema_detail", slug=slug, schema_id=schema.pk)


@login_required
@require_http_methods(["GET", "POST"])
def schema_edit(request: HttpRequest, slug: str, schema_id: int) -> HttpResponse:
    schema, membership = _schema_for(request, slug, schema_id)
    _owner(membership)
    initial = {
        "title": schema.title,
        "context": schema.context,
        "detection_text": schema.detection_text,
        "category": schema.category,
        "scope": schema.scope,
    }
    form = SchemaEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        services.schema_edit(schema=schema, user=request.user, **form.cleaned_data)
        return redirect("attribution:schema_detail", slug=slug, schema_id=schema.pk)
    context = {"project": membership.project, "membership": membership, "schema": schema, "form": form}
    return render(request, "attribution/schema_edit.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def schemas_distill(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _owner(tracing_selectors.membership_for_user(user=request.user, slug=slug))
    services.schemas_distill_start(project=membership.project)
    return redirect("attribution:schema_list", slug=slug)


@login_required
@require_POST
def library_settings(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _owner(tracing_selectors.membership_for_user(user=request.user, slug=slug))
    form = LibraryForm(request.POST)
    if form.is_valid():
        services.library_settings_save(
            project=membership.project, use_shared_library=form.cleaned_data["use_shared_library"]
        )
    return redirect("attribution:schema_list", slug=slug)
