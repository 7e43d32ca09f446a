"""The REST API (django-ninja; OpenAPI schema at /api/openapi.json, docs at /api/docs).

Every call carries a project API token (``Authorization: Bearer cul_…``); the token's project scopes everything, so
another project's ids answer 404 exactly as in the browser.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import SuspiciousOperation, ValidationError
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import get_object_or_404
from ninja import Field, File, Form, NinjaAPI, Query, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle
from pydantic import ConfigDict, ModelWrapValidatorHandler, ValidationInfo, model_validator

from config import ratelimit
from config.middleware import request_refusal

from . import extensions, selectors, services
from .formats import all_formats
from .forms import FolderPathsField, TraceFilterForm, upload_names
from .models import ApiToken, DuplicatePolicy, IngestJob, Membership, Role, Step, Trace

MAX_PAGE = 500


class TokenRateThrottle(BaseThrottle):
    """The API's rate limit (``settings.CULPRIT_RATE_LIMITS["api"]``), counted per token in the shared cache."""

    def allow_request(self, request: HttpRequest) -> bool:
        self._wait = ratelimit.hit("api", ratelimit.by_token(request))
        return not self._wait

    def wait(self) -> float | None:
        return float(self._wait) or None


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        return services.api_token_authenticate(token)


class CulpritApi(NinjaAPI):
    """The API, plus what other apps add to its OpenAPI document (``openapi_extenders``: callables that edit the
    schema in place), so an app further up the dependency chain can document itself without tracing importing it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.openapi_extenders: list[Any] = []

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        _document_errors(schema)
        for extend in self.openapi_extenders:
            extend(schema)
        return schema


_ERROR_BODY = {"application/json": {"schema": {"type": "object", "properties": {"detail": {}}}}}
_COMMON_ERRORS = {
    "400": "A malformed request (e.g. a NUL character in the query string)",
    "413": "The request body is over the size limit",
    "401": "No valid project API token (Authorization: Bearer cul_…)",
    "422": "The request does not match the operation's parameters or body",
    "429": "Rate limited: retry after the Retry-After header's seconds",
}


def _document_errors(schema: Any) -> None:
    """Every operation can answer these (the token check, ninja's validation, the rate limit): say so in the schema,
    so clients and schema-driven tests know them."""
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            known = {str(code) for code in responses}  # ninja keys its own by int, JSON by string: never both
            extra = dict(_COMMON_ERRORS) | (
                {"404": "Not found in the token's project"} if "{" in path else {}
            )
            for status, text in extra.items():
                if status not in known:
                    responses[status] = {"description": text, "content": _ERROR_BODY}


api = CulpritApi(
    title="Culprit API",
    version="1",
    description=(
        "Upload multi-agent traces, follow their import, read traces, steps and labels, and run attribution "
        "(start a run, follow it to its score, read its verdicts)."
    ),
    auth=TokenAuth(),
    throttle=[TokenRateThrottle()],
    urls_namespace="api",
)


@api.exception_handler(SuspiciousOperation)
@api.exception_handler(MultiPartParserError)
def _refused_request(request: HttpRequest, exc: Exception) -> HttpResponse:
    """Django refuses too many files or too big a body while ninja reads the request; without this the client would
    get Django's bare HTML "Bad Request (400)" from a JSON API."""
    detail, status = request_refusal(exc) or ("the request was refused as malformed", 400)
    return api.create_response(request, {"detail": detail}, status=status)


class FormatOut(Schema):
    name: str
    label: str


class JobOut(Schema):
    id: int
    batch: str
    filename: str
    status: str
    format: str
    confidence: float | None
    error: str
    trace_ids: list[int]
    report: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


class UploadOut(Schema):
    batch: str
    jobs: list[JobOut]
    detail: str = ""  # set when the jobs are saved but the task queue is down


class GoldOut(Schema):
    agent: str
    step: int
    reason: str
    category: str
    source: str
    confidence: float | None


class ErrorLabelOut(Schema):
    """One labelled error of the trace (TRAIL lists several per run; MAST labels are trace-level, without a step).
    ``decisive`` marks the one its gold label (what attribution is scored against) was taken from."""

    category: str = Field(description="the error's category, in its taxonomy family")
    family: str = Field(description="taxonomy family of the category: TRAIL, MAST, AgentRx; empty if none")
    step: int | None = Field(description="index of the labelled step; null for an error not tied to a step")
    span_id: str = Field(description="the source's location of the error (kept even when no step matched it)")
    agent: str
    impact: str = Field(description="impact or severity as the source gives it (HIGH / MEDIUM / LOW)")
    description: str
    evidence: str
    source: str
    decisive: bool


class AgentOut(Schema):
    name: str
    steps: int
    system_prompt: str


class TraceOut(Schema):
    id: int
    name: str
    format: str
    external_id: str
    question: str
    ground_truth: str
    outcome: str
    steps: int
    agents: int
    created_at: datetime


class TraceListItemOut(TraceOut):
    """A trace of ``GET /api/traces``; apps further up the dependency chain add fields (attribution: ``verdict``)
    through ``tracing.extensions`` and document them in the schema with their ``openapi_extenders``."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="wrap")
    @classmethod
    def _run_root_validator(
        cls, values: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        # Replaces ninja's validator of the same name, which reads only the declared fields (through its
        # DjangoGetter) and so would drop the extensions' keys; the items are plain dicts, with no resolvers to run.
        return handler(values)


class TraceDetailOut(TraceOut):
    metadata: dict[str, Any]
    agent_list: list[AgentOut]
    gold: list[GoldOut]
    errors: list[ErrorLabelOut] = Field(description="every labelled error, in label-file order")


class StepOut(Schema):
    index: int
    agent: str | None
    speaker: str
    kind: str
    content: str
    recipient: str
    tool_name: str
    tool_arguments: Any
    parent: int | None
    span_id: str
    started_at: datetime | None


class Page(Schema):
    count: int
    offset: int
    limit: int


class TracePage(Page):
    items: list[TraceListItemOut]


class StepPage(Page):
    items: list[StepOut]


class ErrorOut(Schema):
    # A sentence from us, or the list of field errors from the request validation.
    detail: str | list[dict[str, Any]]


class OtlpStatusOut(Schema):
    waiting_spans: int = Field(
        description=f"spans received and not built into steps yet (counted up to {selectors.ARRIVING_CAP:,})"
    )
    waiting_traces: int = Field(description="the traces those spans belong to")
    more: bool = Field(description="more spans wait than were counted")
    oldest_waiting_at: datetime | None = Field(description="when the oldest counted span was received")
    stalled: bool = Field(
        description="the oldest has waited longer than building takes (CULPRIT_WORKER_STALLED_AFTER): is a worker running?"
    )


class TraceQuery(Schema):
    """Documents the parameters; they are validated by ``TraceFilterForm``, as on the web page."""

    q: str = ""
    agent: str = ""
    outcome: str = ""
    format: str = ""
    has_gold: str = ""
    from_: str = Field("", alias="from")
    to: str = ""
    ordering: str = Field(
        "",
        description="A sort key, with - for descending: imported, name, started, duration, "
        "steps, agents, tokens, outcome.",
    )
    offset: int = 0
    limit: int = 50


def _job(job: IngestJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "batch": str(job.batch),
        "filename": job.filename,
        "status": job.status,
        "format": job.detected_format,
        "confidence": job.confidence,
        "error": job.error,
        "trace_ids": job.trace_ids,
        "report": job.report,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }


def _trace(trace: Trace) -> dict[str, Any]:
    return {
        "id": trace.pk,
        "name": trace.name,
        "format": trace.source_format,
        "external_id": trace.external_id,
        "question": trace.question,
        "ground_truth": trace.ground_truth,
        "outcome": trace.outcome,
        "steps": trace.step_count,
        "agents": trace.agent_count,
        "created_at": trace.created_at,
    }


MAX_OFFSET = (
    2**31 - 1
)  # far past any real trace list or trace; larger values would overflow the database's integers
MAX_ID = 2**63 - 1  # ids are 64-bit: a larger one names nothing, so it is not found rather than an overflow


def _bounds(offset: int, limit: int) -> tuple[int, int]:
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:
        raise HttpError(422, f"offset must be between 0 and {MAX_OFFSET} and limit between 1 and {MAX_PAGE}")
    return offset, limit


def _own(model: Any, request: HttpRequest, pk: int) -> Any:
    """The token's project's object with this id, or 404 (an id of another project, or none at all)."""
    if not 0 < pk <= MAX_ID:
        raise HttpError(404, "Not Found")
    return get_object_or_404(model, pk=pk, project=request.auth.project)


@api.get("/formats", response=list[FormatOut], summary="Trace formats this server can import")
def list_formats(request: HttpRequest) -> list[dict[str, str]]:
    return [{"name": f.name, "label": f.label} for f in all_formats()]


@api.post(
    "/uploads",
    response={202: UploadOut, 422: ErrorOut},
    summary="Upload trace files (JSON, JSONL, zip, logs)",
)
def upload(
    request: HttpRequest,
    files: list[UploadedFile] = File(...),  # noqa: B008 - ninja's way to declare a file field
    format: str = Form(""),
    duplicates: str = Form(DuplicatePolicy.SKIP),
    paths: list[str] | None = Form(None),  # noqa: B008 - a repeated form field, as files above
) -> Status:
    """``duplicates``: ``skip`` (the default) leaves out traces whose content is already in the project and lists
    them in the job's report (``duplicates``, ``duplicate_of``); ``import`` writes them again. ``paths``: one per
    file, the folder it came from (``Hand-Crafted/7.json``), named as ``import_traces`` names a folder's files."""
    known = {f.name for f in all_formats()}
    if format and format not in known:
        return Status(
            422, {"detail": f"unknown format {format!r} (known formats: {', '.join(sorted(known))})"}
        )
    if duplicates not in DuplicatePolicy.values:
        return Status(422, {"detail": f"duplicates must be one of {', '.join(DuplicatePolicy.values)}"})
    try:
        names = upload_names(files, FolderPathsField(required=False).clean(paths or []))
    except ValidationError as exc:
        return Status(422, {"detail": " ".join(exc.messages)})
    token: ApiToken = request.auth
    incoming = [services.incoming_from_upload(f, name=name) for f, name in zip(files, names, strict=True)]
    jobs = services.ingest_jobs_create(
        project=token.project, files=incoming, user=None, requested_format=format, duplicates=duplicates
    )
    waiting = any(getattr(j, "waiting_for_broker", False) for j in jobs)
    return Status(
        202,
        {
            "batch": str(jobs[0].batch),
            "jobs": [_job(j) for j in jobs],
            "detail": "queued; will start when the worker is back" if waiting else "",
        },
    )


@api.get("/jobs", response=list[JobOut], summary="Ingest jobs, newest first, optionally of one upload batch")
def list_jobs(request: HttpRequest, batch: str = "", limit: int = 50) -> list[dict[str, Any]]:
    _bounds(0, limit)
    jobs = IngestJob.objects.filter(project=request.auth.project).order_by("-id")
    if batch:
        try:
            jobs = jobs.filter(batch=uuid.UUID(batch))
        except ValueError:
            raise HttpError(400, "batch must be an upload batch id (a UUID)") from None
    return [_job(j) for j in jobs[:limit]]


@api.get(
    "/otlp/status",
    response=OtlpStatusOut,
    summary="Spans the OTLP endpoint received for this project that are not built into steps yet",
)
def otlp_status(request: HttpRequest, trace_id: str = "") -> dict[str, Any]:
    """The project's, or with ``trace_id`` (hex, as exporters send it) one trace's. A run's spans are queryable as
    steps once ``waiting_spans`` is 0."""
    if len(trace_id) > 64:
        raise HttpError(400, "trace_id is at most 64 characters")
    arriving = selectors.otlp_arriving(project=request.auth.project, trace_id=trace_id.lower() or None)
    return {
        "waiting_spans": arriving.spans,
        "waiting_traces": arriving.traces,
        "more": arriving.capped,
        "oldest_waiting_at": arriving.oldest,
        "stalled": arriving.stalled,
    }


@api.get("/jobs/{job_id}", response=JobOut, summary="One ingest job with its status, error and import report")
def get_job(request: HttpRequest, job_id: int) -> dict[str, Any]:
    return _job(_own(IngestJob, request, job_id))


@api.get(
    "/traces",
    response={200: TracePage, 400: ErrorOut},
    summary="Traces of the token's project: full-text search, filters and sorting",
)
def list_traces(request: HttpRequest, query: Query[TraceQuery]) -> Any:
    """``q`` searches names, tasks, ids and step content; ``agent``, ``outcome``, ``format``, ``has_gold``
    (yes/no), ``from``/``to`` (YYYY-MM-DD, the run's start) filter; ``ordering`` is one of ``imported``, ``name``,
    ``started``, ``duration``, ``steps``, ``agents``, ``tokens``, ``outcome``, ``verdict``, with ``-`` for
    descending; ``has_verdict`` (yes/no) and ``verdict_vs_gold`` (differs/agrees) filter on the latest verdict, which
    each item carries as ``verdict``. Values are checked by the same form as the web page's filters: a bad one answers
    400 naming the parameter."""
    offset, limit = _bounds(query.offset, query.limit)
    # The extensions' filters (attribution: has_verdict, verdict_vs_gold) come with the form; their OpenAPI entries
    # are added by the app that registers them.
    params = {k: v for k, v in request.GET.items() if k in TraceFilterForm.parameter_names()}
    form = TraceFilterForm(params)
    if not form.is_valid():
        return Status(400, {"detail": form.error_text()})
    traces = selectors.trace_list(project=request.auth.project, filters=form.filters())
    page = list(traces[offset : offset + limit])
    extra = extensions.trace_list_api_fields(
        page
    )  # a fixed number of queries for the page (the latest verdicts)
    return {
        "count": traces.count(),
        "offset": offset,
        "limit": limit,
        "items": [_trace(t) | extra[t.pk] for t in page],
    }


@api.get(
    "/traces/{trace_id}",
    response=TraceDetailOut,
    summary="One trace with its agents, gold labels and labelled errors",
)
def get_trace(request: HttpRequest, trace_id: int) -> dict[str, Any]:
    trace = _own(Trace, request, trace_id)
    return {
        **_trace(trace),
        "metadata": trace.metadata,
        "agent_list": [
            {"name": a.name, "steps": a.step_count, "system_prompt": a.system_prompt}
            for a in trace.agents.all()
        ],
        "gold": [
            {
                "agent": g.agent_name,
                "step": g.step_index,
                "reason": g.reason,
                "category": g.category,
                "source": g.source,
                "confidence": g.confidence,
            }
            for g in trace.gold_labels.all()
        ],
        "errors": [
            {
                "category": e.category,
                "family": e.family,
                "step": e.step_index,
                "span_id": e.span_id,
                "agent": e.agent_name,
                "impact": e.impact,
                "description": e.description,
                "evidence": e.evidence,
                "source": e.source,
                "decisive": e.decisive,
            }
            for e in trace.error_labels.order_by("position", "id")
        ],
    }


@api.delete(
    "/traces/{trace_id}",
    response={204: None, 403: ErrorOut, 404: ErrorOut},
    summary="Delete a trace with everything labelled on it (a token an owner made, while they are one)",
)
def delete_trace(request: HttpRequest, trace_id: int) -> Any:
    """As the trace page's Delete button: its steps, labels, verdicts, review items and search rows go with it, and
    for a trace the OTLP endpoint built, the spans it stored. The audit log names the token's creator."""
    trace = _own(Trace, request, trace_id)
    creator = request.auth.created_by
    if (
        creator is None
        or not Membership.objects.filter(project=request.auth.project, user=creator, role=Role.OWNER).exists()
    ):
        return Status(403, {"detail": "only a token made by one of the project's owners may delete traces"})
    services.traces_delete(project=request.auth.project, trace_ids=[trace.pk], actor=creator)
    return Status(204, None)


@api.get("/traces/{trace_id}/steps", response=StepPage, summary="A window of a trace's steps, in order")
def list_steps(request: HttpRequest, trace_id: int, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    offset, limit = _bounds(offset, limit)
    trace = _own(Trace, request, trace_id)
    steps = (
        Step.objects.filter(trace=trace, index__gte=offset, index__lt=offset + limit)
        .select_related("agent")
        .order_by("index")
    )
    return {
        "count": trace.step_count,
        "offset": offset,
        "limit": limit,
        "items": [
            {
                "index": s.index,
                "agent": s.agent.name if s.agent else None,
                "speaker": s.speaker,
                "kind": s.kind,
                "content": s.content,
                "recipient": s.recipient,
                "tool_name": s.tool_name,
                "tool_arguments": s.tool_arguments,
                "parent": s.parent_index,
                "span_id": s.span_id,
                "started_at": s.started_at,
            }
            for s in steps
        ],
    }
