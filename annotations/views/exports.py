from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tracing import selectors as tracing_selectors
from tracing.models import Membership, Role

from .. import access, selectors, services
from ..exporters import get_exporter
from ..forms import ExportForm
from ..models import DatasetExport, ExportStatus
from ..selectors.exports import export_scope_text


def _exporter_membership(request: HttpRequest, slug: str) -> Membership:
    return access.project_for(request, slug, Role.ANNOTATOR, access.EXPORTERS_ONLY)  # 404 for another project


@login_required
@require_http_methods(["GET", "POST"])
def export_builder(request: HttpRequest, slug: str) -> HttpResponse:
    """The dataset builder: filters and format on top, the project's exports (with live progress) below."""
    membership = _exporter_membership(request, slug)
    project = membership.project
    # ?scope=<the trace list's query string>: its "Export them" link, only the traces the list shows.
    raw_scope = (request.POST if request.method == "POST" else request.GET).get("scope", "")
    scope = tracing_selectors.trace_scope(project=project, scope=raw_scope)
    scoped = scope["query"] if scope and scope.get("ok") else ""
    form = ExportForm(request.POST or None, initial={"scope": scoped})
    if request.method == "POST" and form.is_valid():
        if selectors.export_case_count(project=project, filters=form.filters()):
            export = services.export_create(
                project=project, fmt=form.cleaned_data["format"], filters=form.filters(), user=request.user
            )
            # Back to the same traces: the builder keeps the scope it was asked with.
            scope_query = f"?{urlencode({'scope': scoped})}" if scoped else ""
            return redirect(f"{request.path}{scope_query}#export-{export.pk}")
        form.add_error(None, "No labelled trace matches these filters: there is nothing to export.")
    if request.htmx:  # the export list polling for progress
        return render(request, "annotations/export_builder.html#exports", _builder_context(membership, form))
    if form.is_bound:
        filters = form.filters() if form.is_valid() else selectors.ExportFilters()
    else:
        filters = selectors.ExportFilters(scope=scoped)
    preview = selectors.export_preview(project=project, filters=filters)
    return render(
        request,
        "annotations/export_builder.html",
        _builder_context(membership, form) | {"preview": preview, "scope": scope},
        status=400 if form.errors else 200,
    )


@login_required
@require_GET
def export_preview(request: HttpRequest, slug: str) -> HttpResponse:
    """What the builder's current filters select (cases, steps, split sizes, label sources), before exporting.
    The builder asks for it with htmx on every change; without htmx it is the builder page with the preview."""
    membership = _exporter_membership(request, slug)
    form = ExportForm(request.GET)
    preview = (
        selectors.export_preview(project=membership.project, filters=form.filters())
        if form.is_valid()
        else None
    )
    if request.htmx:
        return render(request, "annotations/export_builder.html#preview", {"preview": preview, "form": form})
    return render(
        request, "annotations/export_builder.html", _builder_context(membership, form) | {"preview": preview}
    )


def _builder_context(membership: Membership, form: ExportForm) -> dict[str, object]:
    exports = list(selectors.exports_for_project(project=membership.project))
    for export in exports:
        export.scope_text = export_scope_text(export)
    return {
        "project": membership.project,
        "membership": membership,
        "form": form,
        "exports": exports,
        "pending": any(not e.is_finished for e in exports),
        "not_gold": selectors.answers_not_gold(project=membership.project),
    }


def _finished_file(export: DatasetExport) -> Path:
    if export.status != ExportStatus.SUCCEEDED or not export.file:
        raise Http404("This export has no file (yet)")
    path = Path(settings.MEDIA_ROOT) / export.file.name
    if not path.is_file():
        raise Http404("The export's file is gone")
    return path


@login_required
@require_GET
def export_download(request: HttpRequest, export_id: int) -> FileResponse:
    export, _ = access.export_for(request, export_id)
    path = _finished_file(export)
    return FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=export.filename,
        content_type=get_exporter(export.format).content_type,
    )


@login_required
@require_GET
def export_manifest_download(request: HttpRequest, export_id: int) -> HttpResponse:
    export, _ = access.export_for(request, export_id)
    _finished_file(export)
    response = HttpResponse(
        json.dumps(export.manifest, indent=2, ensure_ascii=False), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{export.filename}.manifest.json"'
    return response


@login_required
@require_POST
def export_delete(request: HttpRequest, export_id: int) -> HttpResponse:
    export, _ = access.export_for(request, export_id)
    slug = export.project.slug
    services.export_delete(export=export, actor=request.user)
    return redirect("annotations:export_builder", slug=slug)
