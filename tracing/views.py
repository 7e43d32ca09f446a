from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.functional import cached_property
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from config import ratelimit

from . import access, extensions, selectors, services
from .formats import all_formats
from .forms import (
    SCOPE_MAX_LENGTH,
    LiveForm,
    MemberForm,
    ProjectForm,
    StepJumpForm,
    StepWindowForm,
    TokenForm,
    TraceDeleteForm,
    TraceFilterForm,
    UploadForm,
)
from .models import Membership, Role, StepKind

TRACES_PER_PAGE = 50


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    projects = list(selectors.projects_for_user(request.user)[:2])
    if len(projects) == 1:
        return redirect("tracing:trace_list", slug=projects[0].slug)
    return redirect("tracing:project_list")


@login_required
@require_http_methods(["GET", "POST"])
def project_list(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST) if request.method == "POST" else ProjectForm()
    if request.method == "POST" and form.is_valid():
        project = services.project_create(
            name=form.cleaned_data["name"], owner=request.user, description=form.cleaned_data["description"]
        )
        return redirect("tracing:trace_list", slug=project.slug)
    projects = selectors.projects_for_user(request.user)
    return render(request, "tracing/project_list.html", {"projects": projects, "form": form})


class _Counted(Paginator):
    """A paginator told its count when the search already knows it (``selectors.trace_list_count``)."""

    def __init__(self, object_list: Any, per_page: int, *, count: int | None) -> None:
        super().__init__(object_list, per_page)
        self.known = count

    @cached_property
    def count(self) -> int:
        return super().count if self.known is None else self.known


@login_required
@require_GET
def trace_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    form = TraceFilterForm(request.GET)
    form.is_valid()  # an invalid field is reported beside the form and left out; the valid ones still apply
    filters = form.filters()
    # The header's counts first: their total spares the search its name match when the steps matched every trace.
    counts = selectors.trace_counts(project=membership.project)
    # The search runs once: the page reuses the traces it found (then reads its first hits), and so does the count,
    # which it gives outright when no other filter narrows the list.
    found = selectors.trace_search(project=membership.project, q=filters.q, traces=counts["total"])
    traces = selectors.trace_list(project=membership.project, filters=filters, found=found)
    count = selectors.trace_list_count(filters=filters, found=found)
    page = _Counted(traces, TRACES_PER_PAGE, count=count).get_page(form.cleaned_data.get("page"))
    selectors.trace_row_facts(traces=page.object_list, q=filters.q)
    context = {
        "membership": membership,
        "project": membership.project,
        "form": form,
        "page": page,
        "counts": counts,
        "ordering": filters.ordering,
        "agent_names": selectors.agent_names(project=membership.project),
        "extra_columns": extensions.trace_list_columns(),
        "querystring": _without(request, "page"),
        "sort_querystring": _without(request, "page", "ordering"),
        "all_uploads_querystring": _without(request, "page", "batch"),
    }
    if not request.htmx:
        newest = selectors.newest_trace_id(project=membership.project)
        context["live"] = _project_live(membership.project, newest, drawn=True)
    template = "tracing/trace_list.html#results" if request.htmx else "tracing/trace_list.html"
    return render(request, template, context)


@login_required
@require_http_methods(["GET", "POST"])
@ratelimit.limited("upload", ratelimit.by_user)
def upload(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug, Role.ANNOTATOR, "Viewers cannot upload traces")
    form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
    if request.method == "POST" and form.is_valid():
        files = [
            services.incoming_from_upload(f, name=name)
            for f, name in zip(form.cleaned_data["files"], form.names(), strict=True)
        ]
        jobs = services.ingest_jobs_create(
            project=membership.project,
            files=files,
            user=request.user,
            requested_format=form.cleaned_data["format"],
            duplicates=form.cleaned_data["duplicates"],
        )
        if request.htmx:
            return _render_jobs(request, membership, selectors.with_traces(jobs))
        return redirect("tracing:upload_batch", slug=slug, batch=jobs[0].batch)
    if request.method == "POST" and request.htmx:  # the page's script shows the reason beside the drop zone
        return _form_errors(form)
    context = {
        "membership": membership,
        "project": membership.project,
        "form": form,
        "recent": selectors.recent_jobs(project=membership.project),
        "max_mb": settings.CULPRIT_MAX_UPLOAD_BYTES // (1024 * 1024),
        "max_bytes": settings.CULPRIT_MAX_UPLOAD_BYTES,
        "max_files": settings.CULPRIT_MAX_FILES_PER_UPLOAD,
        "formats": [f.label for f in all_formats()],
    }
    return render(request, "tracing/upload.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def upload_batch(request: HttpRequest, slug: str, batch: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    jobs = selectors.jobs_for_batch(project=membership.project, batch=batch)
    if not jobs:  # no such upload in this project (another project's batch id included)
        raise Http404("No such upload.")
    if request.htmx:
        return _render_jobs(request, membership, jobs)
    return render(
        request,
        "tracing/upload_batch.html",
        {
            "membership": membership,
            "project": membership.project,
            "jobs": jobs,
            "batch": batch,
            "pending": any(not j.is_finished for j in jobs),
        },
    )


@login_required
@require_GET
def trace_detail(request: HttpRequest, trace_id: int) -> HttpResponse:
    trace, membership = access.trace_for(request, trace_id)
    form = StepJumpForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    per_page = settings.CULPRIT_STEPS_PER_PAGE
    target = data.get("step")
    page = (
        selectors.page_of_step(index=target, per_page=per_page)
        if target is not None
        else data.get("page") or 1
    )
    context = selectors.trace_page(trace=trace, page=page, per_page=per_page) | {
        "project": trace.project,
        "membership": membership,
        "target": target,
        "kinds": StepKind,
    }
    if not request.htmx and selectors.is_otlp_received(trace):
        context["live"] = _trace_live(trace, trace.step_count)
    template = "tracing/trace_detail.html#steps" if request.htmx else "tracing/trace_detail.html"
    return render(request, template, context)


@login_required
@require_GET
def project_live(request: HttpRequest, slug: str) -> HttpResponse:
    """The live banner of a project that receives OTLP spans, which its trace list polls: the spans waiting to be
    built, and how many traces came since trace ``after`` (the newest the list showed)."""
    membership = access.project_for(request, slug)
    form = LiveForm(request.GET)
    if not form.is_valid():
        return _form_errors(form)
    live = _project_live(membership.project, form.cleaned_data["after"] or 0)
    return render(request, "tracing/_live.html", {"live": live})


@login_required
@require_GET
def trace_live(request: HttpRequest, trace_id: int) -> HttpResponse:
    """The live banner of a trace the OTLP endpoint builds, which its page polls: its spans waiting to be built, and
    how many steps it gained since the page showed ``steps``."""
    trace, _membership = access.trace_for(request, trace_id)
    form = LiveForm(request.GET)
    if not form.is_valid():
        return _form_errors(form)
    steps = form.cleaned_data["steps"]
    live = _trace_live(trace, trace.step_count if steps is None else steps)
    return render(request, "tracing/_live.html", {"live": live})


def _project_live(project: Any, after: int, drawn: bool = False) -> dict[str, Any]:
    """Every trace list watches for new traces (an exporter's first spans, a teammate's upload); it says it is live,
    and looks every 3 s rather than 10, once the project has received OTLP spans. ``drawn``: the list itself, which
    shows every trace up to ``after``."""
    arriving = selectors.otlp_arriving(project=project)
    return {
        "poll": f"{reverse('tracing:project_live', args=[project.slug])}?after={after}",
        "every": 3 if arriving.ever else 10,
        "receives": arriving.ever,
        "arriving": arriving,
        "new": 0 if drawn else selectors.traces_since(project=project, after=after),
        "new_url": reverse("tracing:trace_list", args=[project.slug]),
        "noun": "trace",
        "whole_project": True,
    }


def _trace_live(trace: Any, shown: int) -> dict[str, Any]:
    """``shown``: the step count the page was drawn with; new steps are mostly appended, so "show" opens the page
    of the first step beyond them."""
    url = reverse("tracing:trace_detail", args=[trace.pk])
    return {
        "poll": f"{reverse('tracing:trace_live', args=[trace.pk])}?steps={shown}",
        "every": 3,
        "receives": True,
        "arriving": selectors.otlp_arriving(project=trace.project, trace_id=trace.external_id),
        "new": max(0, trace.step_count - shown),
        "new_url": f"{url}?step={shown}#step-{shown}" if trace.step_count > shown else url,
        "noun": "step",
        "whole_project": False,
    }


def _form_errors(form: Any) -> HttpResponse:
    return _bad_request("; ".join(e for errors in form.errors.values() for e in errors))


def _bad_request(message: str) -> HttpResponse:
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def step_content(request: HttpRequest, trace_id: int, index: int) -> HttpResponse:
    """One window of a step's long text, its raw JSON or the run's final answer (the trace page shows their first
    CULPRIT_STEP_PREVIEW_CHARS characters), with a button for the next window when more follows. Members of the
    trace's project only."""
    trace, _membership = access.trace_for(request, trace_id)
    form = StepWindowForm(request.GET)
    if not form.is_valid():
        return _form_errors(form)
    offset, size = form.cleaned_data["offset"] or 0, settings.CULPRIT_STEP_WINDOW_CHARS
    part = form.cleaned_data["part"] or "content"
    window = selectors.step_content_window(trace=trace, index=index, offset=offset, size=size, part=part)
    if window is None:
        raise Http404("No such step")
    text, more = window
    return render(
        request,
        "tracing/_step_content_window.html",
        {
            "trace": trace,
            "index": index,
            "part": part,
            "text": text,
            "more": more,
            "next_offset": offset + len(text),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_members(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    if request.method == "POST":
        access.require_role(membership, Role.OWNER, "Only owners manage members")
        form = MemberForm(request.POST)
        if form.is_valid():
            role = None if request.POST.get("remove") else form.cleaned_data["role"]
            try:
                services.membership_change(
                    project=membership.project,
                    username=form.cleaned_data["username"],
                    role=role,
                    actor=request.user,
                )
                return redirect("tracing:project_members", slug=slug)
            except services.LastOwnerError as exc:
                form.add_error(None, str(exc))
    else:
        form = MemberForm(initial={"role": Role.ANNOTATOR})
    context = {
        "membership": membership,
        "project": membership.project,
        "form": form,
        "roles": Role.choices,
        "members": selectors.members_of(project=membership.project),
    }
    return render(request, "tracing/project_members.html", context, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def project_tokens(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug, Role.OWNER, "Only owners manage API tokens")
    new_token = ""
    form = TokenForm(request.POST) if request.method == "POST" else TokenForm()
    status = 200
    if request.method == "POST" and not form.is_valid():
        status = 400
    elif request.method == "POST" and form.revoking:
        token = selectors.api_token_of(project=membership.project, token_id=form.cleaned_data["revoke"])
        services.api_token_revoke(token=token, actor=request.user)
        return redirect("tracing:project_tokens", slug=slug)
    elif request.method == "POST":
        # Rendered, not redirected: the plain token is shown this once and is never stored.
        _, new_token = services.api_token_create(
            project=membership.project, name=form.cleaned_data["name"], user=request.user
        )
        form = TokenForm()
    context = {
        "membership": membership,
        "project": membership.project,
        "form": form,
        "new_token": new_token,
        "tokens": selectors.api_tokens_of(project=membership.project),
        "base_url": request.build_absolute_uri("/"),
    }
    return render(request, "tracing/project_tokens.html", context, status=status)


@login_required
@require_GET
def trace_original(request: HttpRequest, trace_id: int) -> FileResponse:
    """The uploaded file, byte for byte, always as a download: never rendered, sniffed or run by the browser."""
    trace, _ = access.trace_for(request, trace_id)
    if trace.upload is None or not trace.upload.file:
        raise Http404("This trace was not uploaded as a file")
    response = FileResponse(
        trace.upload.file.open("rb"),
        as_attachment=True,
        filename=trace.upload.filename.rsplit("/", 1)[-1] or "trace",
        content_type="application/octet-stream",
    )
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_http_methods(["GET", "POST"])
def traces_delete(request: HttpRequest, slug: str) -> HttpResponse:
    """Delete the traces a trace-list scope selects (``scope``: the list's query string; empty, every trace), owners
    only. GET shows what would go and asks to confirm; POST deletes when the count it confirmed still holds."""
    membership = access.project_for(request, slug, Role.OWNER, "Only owners can delete traces")
    project = membership.project
    form = TraceDeleteForm(request.POST) if request.method == "POST" else None
    scope = (request.POST if form is not None else request.GET).get("scope", "")
    filters_form = TraceFilterForm.for_scope(scope.lstrip("?"))
    if len(scope) > SCOPE_MAX_LENGTH or not filters_form.is_valid():
        return _bad_request(
            f"The trace list's filters are not valid: {filters_form.error_text() or 'too long'}"
        )
    filters = filters_form.filters()
    count = selectors.trace_count(project=project, filters=filters)
    changed = False
    if form is not None and form.is_valid():
        if form.cleaned_data["expected"] == count and count <= services.MAX_DELETE:
            ids = selectors.trace_ids(project=project, filters=filters)
            deleted = services.traces_delete(project=project, trace_ids=ids, actor=request.user)
            messages.success(request, f"Deleted {deleted} trace{'s' if deleted != 1 else ''}.")
            return redirect("tracing:trace_list", project.slug)
        changed = form.cleaned_data["expected"] != count
    sample = selectors.trace_names(project=project, filters=filters, limit=20)
    return render(
        request,
        "tracing/traces_delete.html",
        {
            "project": project,
            "membership": membership,
            "form": form,
            "scope": filters_form.data.urlencode(),
            "describe": filters_form.describe(),
            "count": count,
            "sample": sample,
            "more": count - len(sample),
            "too_many": count > services.MAX_DELETE,
            "max_delete": services.MAX_DELETE,
            "changed": changed,
        },
        status=200 if form is None or not form.errors and not changed else 400,
    )


@login_required
@require_POST
def trace_delete(request: HttpRequest, trace_id: int) -> HttpResponse:
    """Delete one trace from its page (owners only), then back to the project's list."""
    trace, _membership = access.trace_for(request, trace_id, Role.OWNER, "Only owners can delete traces")
    services.traces_delete(project=trace.project, trace_ids=[trace.pk], actor=request.user)
    messages.success(request, f"Deleted trace “{trace.name}”.")
    return redirect("tracing:trace_list", trace.project.slug)


@login_required
@require_GET
def project_audit(request: HttpRequest, slug: str) -> HttpResponse:
    """The project's audit log (owners): memberships, tokens, model settings, exports, schema promotions."""
    membership = access.project_for(request, slug, Role.OWNER, "Only owners read the audit log")
    page = Paginator(selectors.audit_events_of(project=membership.project), 100).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "tracing/project_audit.html",
        {"membership": membership, "project": membership.project, "page": page},
    )


# --- helpers ---------------------------------------------------------------------------------------------------


def _render_jobs(request: HttpRequest, membership: Membership, jobs: list) -> HttpResponse:
    context = {
        "project": membership.project,
        "jobs": jobs,
        "batch": jobs[0].batch if jobs else None,
        "pending": any(not j.is_finished for j in jobs),
    }
    return render(request, "tracing/upload_batch.html#jobs", context)


def _without(request: HttpRequest, *names: str) -> str:
    params = request.GET.copy()
    for name in names:
        params.pop(name, None)
    return params.urlencode()
