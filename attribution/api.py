"""The attribution app's part of the REST API: the methods, and attribution runs -- start one over chosen traces (or
every trace of the project), follow it, read its score and its verdicts. A pipeline can thus upload a failed run
(``POST /api/uploads``), attribute it and read who broke it without a browser.

``tracing`` owns the API object and knows nothing of attribution, so this router is attached from
``AttributionConfig.ready``. The token's project scopes everything: another project's run answers 404. A run is
started as the token's creator, with the same checks as the Attribute button (a method that needs a model needs one
set on the project's LLM settings page; budgets apply).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db.models import Exists, OuterRef
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from tracing.api import (  # the token's project and the page bounds, as tracing's calls
    MAX_ID,
    ErrorOut,
    _bounds,
    _own,
)
from tracing.models import GoldLabel, Trace

from . import selectors, services
from .methods import MethodError, all_methods
from .models import AttributionRun, RunStatus, Verdict

router = Router(tags=["attribution"])

MAX_TRACE_IDS = (
    100_000  # a run's trace list in one request; a bigger project is attributed with "every trace"
)


class MethodOut(Schema):
    name: str = Field(description="the value of a run's method")
    label: str
    needs_llm: bool = Field(
        description="whether the method needs a model set on the project's LLM settings page"
    )


class RunIn(Schema):
    method: str = Field(description="one of GET /api/methods' names, e.g. heuristic or learned")
    trace_ids: list[int] | None = Field(
        default=None,
        max_length=MAX_TRACE_IDS,
        description="the traces to attribute (the project's own; others are left out); omitted: every trace",
    )
    gold: Literal["any", "yes", "no"] = Field(
        default="any",
        description="with trace_ids omitted: every trace, or only those with (yes) or without a gold label",
    )
    with_ground_truth: bool = Field(default=True, description="show the task's known answer to the method")
    description: str = Field(default="", max_length=300)


class ScoreOut(Schema):
    n: int = Field(description="traces of the run with a gold label, the ones scored")
    agent_accuracy: float
    step_accuracy: float
    agent_interval: list[float] = Field(description="Wilson 95% interval of the agent accuracy")
    step_interval: list[float] = Field(description="Wilson 95% interval of the step accuracy")
    left_out: int = Field(
        0,
        description="labelled traces not scored because the run's learned model trained on them "
        "(on them it shows its memory); its cross-validated figures are on the model",
    )


class RunOut(Schema):
    id: int
    method: str
    model: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    total: int
    done: int
    failed: int
    calls: int
    cost: float
    description: str
    error: str
    created_at: datetime
    finished_at: datetime | None
    score: ScoreOut | None = Field(
        default=None, description="exact-match accuracy against the gold labels, once the run has finished"
    )


class VerdictOut(Schema):
    trace_id: int
    trace_name: str
    status: str = Field(description="ok, or failed (with error)")
    agent: str
    step: int | None
    confidence: float
    category: str
    reason: str
    error: str


class VerdictPage(Schema):
    count: int
    offset: int
    limit: int
    items: list[VerdictOut]


@router.get("/methods", response=list[MethodOut], summary="Attribution methods this server runs")
def list_methods(request: HttpRequest) -> list[dict[str, Any]]:
    return [{"name": m.name, "label": m.label, "needs_llm": bool(m.needs_llm)} for m in all_methods()]


@router.post(
    "/runs",
    response={201: RunOut, 400: ErrorOut},
    summary="Start an attribution run over traces of the token's project",
)
def create_run(request: HttpRequest, body: RunIn) -> Status:
    """Queued for the workers, like the Attribute button's runs: follow it with ``GET /api/runs/{id}``. A method the
    server does not know, one that needs a model the project has none of, or an empty selection answer 400."""
    project = request.auth.project
    if body.trace_ids is None:
        traces = Trace.objects.filter(project=project)
        if body.gold != "any":
            labelled = Exists(GoldLabel.objects.filter(trace_id=OuterRef("pk")))
            traces = traces.filter(labelled if body.gold == "yes" else ~labelled)
        ids = list(traces.order_by("pk").values_list("pk", flat=True))
    else:
        ids = [i for i in body.trace_ids if 0 < i <= MAX_ID]
    try:
        run = services.run_create(
            project=project,
            method=body.method,
            trace_ids=ids,
            user=request.auth.created_by,
            with_ground_truth=body.with_ground_truth,
            description=body.description or "API",
        )
    except MethodError as exc:
        return Status(400, {"detail": str(exc)})
    return Status(201, _run(run))


@router.get("/runs", response=list[RunOut], summary="The project's attribution runs, newest first")
def list_runs(request: HttpRequest, limit: int = 20) -> list[dict[str, Any]]:
    if not 1 <= limit <= 100:
        raise HttpError(422, "limit must be between 1 and 100")
    return [_run(r, scored=False) for r in selectors.runs_for_project(request.auth.project.pk, limit=limit)]


@router.get("/runs/{run_id}", response=RunOut, summary="One run: its progress, and its score once finished")
def get_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _run(_own(AttributionRun, request, run_id))


@router.get("/runs/{run_id}/verdicts", response=VerdictPage, summary="A window of a run's verdicts, by trace")
def list_verdicts(request: HttpRequest, run_id: int, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    offset, limit = _bounds(offset, limit)
    run = _own(AttributionRun, request, run_id)
    verdicts = Verdict.objects.filter(run=run)
    page = (
        verdicts.select_related("trace").only(*_VERDICT_FIELDS).order_by("trace_id")[offset : offset + limit]
    )
    return {"count": verdicts.count(), "offset": offset, "limit": limit, "items": [_verdict(v) for v in page]}


_VERDICT_FIELDS = (
    "trace_id",
    "trace__name",
    "status",
    "agent_name",
    "step_index",
    "confidence",
    "category",
    "reason",
    "error",
)


def _run(run: AttributionRun, scored: bool = True) -> dict[str, Any]:
    score = selectors.run_score(run=run) if scored and run.status == RunStatus.SUCCEEDED else None
    return {
        "id": run.pk,
        "method": run.method,
        "model": run.model,
        "status": run.status,
        "total": run.total,
        "done": run.done,
        "failed": run.failed,
        "calls": run.calls,
        "cost": float(run.cost),
        "description": run.description,
        "error": run.error,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "score": score,
    }


def _verdict(v: Verdict) -> dict[str, Any]:
    return {
        "trace_id": v.trace_id,
        "trace_name": v.trace.name,
        "status": v.status,
        "agent": v.agent_name,
        "step": v.step_index,
        "confidence": v.confidence,
        "category": v.category,
        "reason": v.reason,
        "error": v.error,
    }
