"""Attribution runs: starting, running and cancelling them, storing verdicts, and the replays a counterfactual
search keeps.

A run fans out one task per trace. Each task is idempotent: the verdict is unique per (run, trace), the run's counters
move in the same transaction as the verdict they count, and a cancelled run stops taking traces.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Greatest
from django.utils import timezone

from tracing.formats.base import finite
from tracing.models import Project, Trace

from ..methods import MethodError, MethodResult, get_method
from ..methods.base import TraceView
from ..methods.sanity import flag_unsupported
from ..models import (
    AttributionRun,
    AttributorModel,
    LlmCall,
    ProjectLlmSettings,
    RunStatus,
    Verdict,
    VerdictStatus,
)
from ..selectors import trace_view, trace_views

logger = logging.getLogger(__name__)


def run_create(
    *,
    project: Project,
    method: str,
    trace_ids: Iterable[int],
    user: AbstractBaseUser | None = None,
    with_ground_truth: bool = True,
    model: str = "",
    description: str = "",
    enqueue: bool = True,
    attributor: AttributorModel | None = None,
) -> AttributionRun:
    """Record a run over ``trace_ids`` (only the project's own traces are kept) and queue it. The learned method
    uses ``attributor`` (a trained model, possibly of another project: transfer), else the project's default."""
    chosen, model, chosen_model = run_ready(
        project=project, method=method, model=model, attributor=attributor
    )
    wants_llm = chosen.needs_llm or getattr(
        chosen, "wants_llm", False
    )  # schema_guided: a model if there is one
    ids = list(
        Trace.objects.filter(project=project, pk__in=list(trace_ids))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not ids:
        raise MethodError("no traces to attribute: the selection is empty")
    params: dict = {"with_ground_truth": with_ground_truth}
    if chosen_model is not None:
        params["attributor"] = chosen_model.pk
        model = chosen_model.label
    run = AttributionRun.objects.create(
        project=project,
        method=chosen.name,
        model=model if wants_llm or "attributor" in params else "",
        trace_ids=ids,
        total=len(ids),
        params=params,
        created_by=user,
        description=description or f"{len(ids)} trace{'s' if len(ids) != 1 else ''}",
    )
    if enqueue:
        from ..tasks import start_run_task

        transaction.on_commit(lambda: start_run_task.delay(run.pk))
    return run


def run_ready(
    *, project: Project, method: str, model: str = "", attributor: AttributorModel | None = None
) -> tuple[Any, str, AttributorModel | None]:
    """Whether a run of ``method`` can start in this project: (the method, the LLM it would use, the trained model
    it would use), or ``MethodError`` saying what is missing (an unknown method, a model the project has none of, the
    learned method without a default trained model). ``run_create`` and the automatic attribution settings ask it."""
    chosen = get_method(method)  # MethodError for an unknown name
    if chosen.needs_llm or getattr(chosen, "wants_llm", False):
        model = model or _project_model(project)
        if not model and chosen.needs_llm:
            raise MethodError(
                f"{chosen.label} needs a model: set one on the project's LLM settings page first"
            )
    chosen_model = None
    if getattr(chosen, "needs_attributor", False):
        chosen_model = attributor or _default_attributor(project)
        if chosen_model is None:
            raise MethodError(
                "the learned method needs a trained model: train one on the project's model page and "
                "make it the default"
            )
    return chosen, model, chosen_model


def _default_attributor(project: Project) -> AttributorModel | None:
    from ..models import ProjectAttribution

    settings = ProjectAttribution.objects.filter(project=project).select_related("attributor").first()
    return settings.attributor if settings is not None and settings.attributor_id else None


def _project_model(project: Project) -> str:
    return ProjectLlmSettings.objects.filter(project=project).values_list("model", flat=True).first() or ""


def run_prepare(*, run: AttributionRun) -> None:
    """Before a run's traces are attributed: a heuristic run refits the project's calibrated priors when its labels
    changed (cheap: the shape of the labelled runs, not their text)."""
    if getattr(get_method(run.method), "needs_calibration", False):
        from ..learning.services import calibration_refresh

        calibration_refresh(project=run.project)


def run_claim(*, run_id: int) -> bool:
    """queued -> running, counting an attempt (the first start, or a restart after the reaper found the run's
    worker gone). The preparation happens only for the caller that wins. A run queued again with its attempts spent
    fails with the reason instead."""
    if AttributionRun.claim(run_id):
        return True
    AttributionRun.objects.filter(
        pk=run_id, status=RunStatus.QUEUED, attempts__gte=AttributionRun.MAX_ATTEMPTS
    ).update(
        status=RunStatus.FAILED,
        error="gave up after its last attempt was interrupted",
        finished_at=timezone.now(),
    )
    return False


def run_cancel(*, run: AttributionRun) -> bool:
    """Stop a run: traces not yet attributed are skipped; verdicts already written stay."""
    return bool(
        AttributionRun.objects.filter(pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).update(
            status=RunStatus.CANCELLED, finished_at=timezone.now()
        )
    )


def run_trace(*, run_id: int, trace_id: int) -> Verdict | None:
    """Attribute one trace of a run. Safe to call again: an existing verdict is returned untouched."""
    # The run's trace list is never read here: a 20,000-trace run's list is ~140 KB, read once per trace it was
    # quadratic in the run's size.
    run = AttributionRun.objects.select_related("project").defer("trace_ids").get(pk=run_id)
    existing = Verdict.objects.filter(run=run, trace_id=trace_id).first()
    if existing is not None or run.status not in (RunStatus.RUNNING, RunStatus.QUEUED):
        return existing
    trace = Trace.objects.filter(pk=trace_id, project=run.project).first()
    if trace is None:  # deleted after the task was sent: the run let it go (``runs_forget_traces``)
        return None
    result, error = _attribute(run, trace)
    # No network I/O past this point: the verdict and the counters are written together. A trace deleted during the
    # call fails the write (its foreign key) and counts nothing, as the run already let it go.
    return _store_verdict(run, trace, result, error)


# Traces per task (and per transaction) for a method that calls nothing outside the machine (``is_offline``). One
# task per trace made every heuristic verdict pay a task round trip, two updates of the same hot run row and a commit
# (24.5 traces/s with one worker process, issue 19); per batch of 25 the run row is updated once per 25 verdicts,
# and a killed worker loses at most 25 heuristic verdicts (about half a second of work), which its redelivery redoes.
OFFLINE_BATCH = 25
# A small run is still cut into this many tasks at least, so that every worker takes part in it (two workers split
# even a 30-trace run).
MIN_OFFLINE_TASKS = 8


def offline_batch_size(n: int) -> int:
    """Traces per task for an offline run of ``n`` traces."""
    return max(1, min(OFFLINE_BATCH, -(-n // MIN_OFFLINE_TASKS)))


def is_offline(run: AttributionRun) -> bool:
    """Whether the run's method works without a model or a replay hook, so its traces can be batched."""
    method = get_method(run.method)
    return not (
        method.needs_llm
        or (getattr(method, "wants_llm", False) and run.model)
        or getattr(method, "needs_replayer", False)
    )


def run_traces(*, run_id: int, trace_ids: list[int]) -> int:
    """Attribute a batch of a run's traces (an offline method's), writing their verdicts and the run's counters in
    one transaction. Safe to call again: traces that already have a verdict are skipped. Returns verdicts written."""
    run = AttributionRun.objects.select_related("project").defer("trace_ids").get(pk=run_id)
    if run.status not in (RunStatus.RUNNING, RunStatus.QUEUED):
        return 0
    done = set(Verdict.objects.filter(run=run, trace_id__in=trace_ids).values_list("trace_id", flat=True))
    # Only what a view and a verdict need: a trace's metadata and totals can be larger than its steps.
    traces = (
        Trace.objects.filter(project_id=run.project_id)
        .only(*_VIEW_FIELDS)
        .in_bulk([t for t in trace_ids if t not in done])
    )
    rows, shared = [], {}
    for trace, view in _views_in_groups([traces[t] for t in trace_ids if t in traces]):
        result, error = _attribute(run, trace, shared, view=view)
        rows.append(_verdict_row(run, trace, result, error))
    if not rows:
        return 0
    try:
        with transaction.atomic():
            _insert_verdicts(rows)
            AttributionRun.objects.filter(pk=run.pk).update(
                done=F("done") + len(rows),
                failed=F("failed") + sum(r.status == VerdictStatus.FAILED for r in rows),
                calls=F("calls") + sum(r.calls for r in rows),
                input_tokens=F("input_tokens") + sum(r.input_tokens for r in rows),
                output_tokens=F("output_tokens") + sum(r.output_tokens for r in rows),
                cost=F("cost") + sum((r.cost for r in rows), Decimal(0)),
                heartbeat_at=timezone.now(),
            )
    except IntegrityError:  # another delivery wrote some of them first: one at a time, each checked
        written = 0
        for row in rows:
            row.pk = None
            written += _save_verdict(run, row) is row
        return written
    for row in rows:
        if row.details.get("schemas"):
            from ..schemas.services import schema_uses_record

            schema_uses_record(verdict=row)
    _finish_if_done(run.pk)
    return len(rows)


def _insert_verdicts(rows: list[Verdict]) -> None:
    """Insert new verdicts in one statement. On PostgreSQL that is a COPY: Django 5.2 bulk-inserts through UNNEST
    arrays, which psycopg's client-side binding builds in Python, 1.0 ms a heuristic verdict (its details are 5 kB)
    against 0.3 ms copied (issue 19). A duplicate raises IntegrityError as ``bulk_create`` does. Rows whose ids are
    needed afterwards (an error schema's uses are recorded against them) go through ``bulk_create``."""
    if connection.vendor != "postgresql" or any(r.details.get("schemas") for r in rows):
        Verdict.objects.bulk_create(rows)
        return
    fields = [f for f in Verdict._meta.concrete_fields if not f.primary_key]
    table = connection.ops.quote_name(Verdict._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields])


# The trace fields a view is made of (``trace_views``), read for a batch of an offline run.
_VIEW_FIELDS = ("project_id", "name", "question", "ground_truth", "outcome", "source_format", "step_count")
# At most this many steps of a batch are read at once: a batch of long traces is read a few traces at a time, so a
# worker's memory holds about one long trace, not twenty-five.
VIEW_STEPS_PER_READ = 20_000


def _views_in_groups(traces: list[Trace]) -> Iterator[tuple[Trace, TraceView]]:
    """Each trace with its view, in order, read in groups of at most ``VIEW_STEPS_PER_READ`` steps (a longer trace
    alone)."""
    group: list[Trace] = []
    steps = 0
    for trace in [*traces, None]:
        if group and (trace is None or steps + trace.step_count > VIEW_STEPS_PER_READ):
            views = trace_views(group)
            yield from ((t, views[t.pk]) for t in group)
            group, steps = [], 0
        if trace is not None:
            group.append(trace)
            steps += trace.step_count


def _attribute(
    run: AttributionRun, trace: Trace, shared: dict | None = None, view=None
) -> tuple[MethodResult | None, str]:
    """Run the run's method on one trace: its result, or None and the reason it failed. ``shared`` keeps what is the
    same for every trace of a batch (the project's calibration: 6.6 ms and a query per trace otherwise); ``view``
    is the trace's view when the batch read it already."""
    shared = {} if shared is None else shared
    method = get_method(run.method)
    try:
        wants_llm = method.needs_llm or (getattr(method, "wants_llm", False) and run.model)
        llm = _llm_for(run, trace) if wants_llm else None
        view = trace_view(trace) if view is None else view
        extra = {}
        if getattr(method, "needs_replayer", False):
            replayer = replayer_for(run.project, view, run=run)
            extra = {
                "replayer": replayer,
                "store": RunReplayStore(run, trace, getattr(replayer, "name", "sandbox")),
            }
        if getattr(method, "needs_attributor", False):
            extra["attributor"] = _attributor_for_run(run)
        if getattr(method, "needs_calibration", False):
            from ..learning.services import calibration_for

            if "calibration" not in shared:
                shared["calibration"] = calibration_for(run.project)
            extra["calibration"] = shared["calibration"]
        if getattr(method, "needs_schemas", False):
            from ..schemas.selectors import SchemaSource

            extra["schemas"] = SchemaSource.for_trace(trace)
        with_ground_truth = run.params.get("with_ground_truth", True)
        result = method.run(view, llm=llm, with_ground_truth=with_ground_truth, **extra)
        if method.needs_llm:  # a judge's verdict that nothing offline supports is kept, but not as certain
            result = flag_unsupported(view, result, with_ground_truth=with_ground_truth)
        return result, ""
    except MethodError as exc:
        return None, str(exc)
    except (OperationalError, InterfaceError):
        raise  # the database: the task retries
    except Exception as exc:  # noqa: BLE001 - a bug or a bad setting fails this trace, never strands the run
        logger.exception("attribution of trace %s in run %s failed", trace.pk, run.pk)
        return None, f"the method failed unexpectedly ({type(exc).__name__})"


def replayer_for(project: Project, view, *, run: AttributionRun | None = None, campaign=None):
    """The replayer for a trace: the built-in sandbox for sandbox runs (None: the method builds it from the trace),
    else the project's HTTP replay hook when one is configured, else the project's model simulating the agents."""
    from ..replay.base import ReplayError
    from ..replay.sandbox import parse_name
    from ..replay.sandbox_v2 import SandboxV2Replayer
    from ..replay.sandbox_v2 import parse_name as parse_v2_name

    if view.source_format == "sandbox" and parse_name(view.name) is not None:
        return None
    if view.source_format == "sandbox" and parse_v2_name(view.name) is not None:
        try:
            return SandboxV2Replayer.for_trace(view)
        except ReplayError as exc:
            raise MethodError(f"no replayer for this trace: {exc}") from None
    settings = ProjectLlmSettings.objects.filter(project=project).first()
    if settings is not None and not settings.replay_hook_url and settings.model:
        from ..llm import LlmClient
        from ..replay.llm_sim import LlmSimulatedReplayer

        llm = LlmClient.for_project(
            project,
            run=run,
            trace=view.trace_id,
            method="inject_replay" if campaign is not None else "counterfactual",
            **campaign_llm_options(campaign),
        )
        return LlmSimulatedReplayer(llm)
    if settings is None or not settings.replay_hook_url:
        raise MethodError(
            "counterfactual replay of this trace needs a replayer: set the project's replay hook URL or "
            "a model (LLM-simulated replay) on the model page (sandbox runs replay without one)"
        )
    from ..crypto import decrypt
    from ..replay.http_hook import HttpHookReplayer

    auth = decrypt(settings.replay_hook_auth_encrypted) if settings.replay_hook_auth_encrypted else None
    try:
        return HttpHookReplayer(
            settings.replay_hook_url,
            auth_header=auth,
            timeout=settings.timeout_seconds,
            retries=settings.max_retries,
        )
    except (
        ValueError
    ) as exc:  # a URL saved before the form checked schemes (ftp://...) fails the trace, not the run
        raise MethodError(f"the project's replay hook cannot be used: {exc}") from None


_LOADED: dict[int, object] = {}  # model id -> Attributor; a model row never changes once trained


def _attributor_for_run(run: AttributionRun):
    from ..learning.services import attributor_load
    from ..models import AttributorModel

    model_id = run.params.get("attributor")
    if model_id not in _LOADED:
        row = AttributorModel.objects.filter(pk=model_id, status="succeeded").first()
        if row is None:
            raise MethodError("the run's trained model no longer exists")
        if len(_LOADED) > 8:
            _LOADED.clear()
        _LOADED[model_id] = attributor_load(row)
    return _LOADED[model_id]


def campaign_llm_options(campaign) -> dict:
    """What a campaign's model clients carry: its id (their calls are recorded under it) and its budget, checked
    before every request. Nothing for a call outside a campaign."""
    if campaign is None:
        return {}
    from ..llm import Limit

    limits = []
    if campaign.max_tokens is not None or campaign.max_cost is not None:
        limits.append(
            Limit("campaign budget", {"campaign_id": campaign.pk}, campaign.max_tokens, campaign.max_cost)
        )
    return {"campaign_id": campaign.pk, "extra_limits": limits}


def _llm_for(run: AttributionRun, trace: Trace):
    from ..llm import LlmClient

    return LlmClient.for_project(run.project, run=run, trace=trace, method=run.method)


def _store_verdict(
    run: AttributionRun, trace: Trace, result: MethodResult | None, error: str
) -> Verdict | None:
    return _save_verdict(run, _verdict_row(run, trace, result, error))


def _save_verdict(run: AttributionRun, row: Verdict) -> Verdict | None:
    """The verdict and the run's counters in one transaction; the verdict already there if another got first."""
    try:
        with transaction.atomic():
            row.save()
            AttributionRun.objects.filter(pk=run.pk).update(
                done=F("done") + 1,
                failed=F("failed") + (1 if row.status == VerdictStatus.FAILED else 0),
                calls=F("calls") + row.calls,
                input_tokens=F("input_tokens") + row.input_tokens,
                output_tokens=F("output_tokens") + row.output_tokens,
                cost=F("cost") + row.cost,
                heartbeat_at=timezone.now(),
            )
    except IntegrityError:  # another delivery of the same task got there first
        return Verdict.objects.filter(run=run, trace_id=row.trace_id).first()
    if row.details.get("schemas"):
        from ..schemas.services import schema_uses_record

        schema_uses_record(verdict=row)
    _finish_if_done(run.pk)
    return row


def _verdict_row(run: AttributionRun, trace: Trace, result: MethodResult | None, error: str) -> Verdict:
    if result is None:
        # A failed verdict still cost what its requests cost: the call log of this run and trace says how much.
        spent = LlmCall.objects.filter(
            run=run, trace=trace, cached=False, reserved_until__isnull=True
        ).aggregate(
            calls=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
        )
        return Verdict(
            run=run,
            trace=trace,
            method=run.method,
            status=VerdictStatus.FAILED,
            error=error[:2000],
            calls=spent["calls"] or 0,
            input_tokens=spent["input_tokens"] or 0,
            output_tokens=spent["output_tokens"] or 0,
            cost=spent["cost"] or Decimal(0),
        )
    return Verdict(
        run=run,
        trace=trace,
        method=run.method,
        agent_name=result.agent[:200],
        step_index=result.step,
        confidence=_unit(result.confidence),
        reason=result.reason,
        category=result.category[:80],
        # A method's numbers are written as JSON, which has no NaN or infinity: one such value in a batch's COPY
        # failed every verdict of the batch and left the run running.
        scores=[round(float(s), 4) if math.isfinite(s) else 0.0 for s in result.scores],
        details=finite(result.details),
        calls=result.calls,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cost=Decimal(str(round(result.cost, 6))),
    )


def _unit(value: float) -> float:
    value = float(value)
    return max(0.0, min(1.0, value)) if math.isfinite(value) else 0.0


def runs_forget_traces(project_id: int, trace_ids: list[int]) -> None:
    """Traces deleted while runs over them are queued or running (``tracing.extensions.traces_deleted``, inside the
    deleting transaction): each such run drops them, with the verdicts it wrote for them, so its counters still add
    up and it finishes when the rest is done. A finished run keeps its figures as they were."""
    gone = set(trace_ids)
    live = AttributionRun.objects.select_for_update().filter(
        project_id=project_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    )
    for run in live.only("pk", "trace_ids"):
        kept = [t for t in run.trace_ids if t not in gone]
        if len(kept) == len(run.trace_ids):
            continue
        written = Verdict.objects.filter(run=run, trace_id__in=trace_ids).aggregate(
            done=Count("pk"), failed=Count("pk", filter=Q(status=VerdictStatus.FAILED))
        )
        AttributionRun.objects.filter(pk=run.pk).update(
            trace_ids=kept,
            total=Greatest(F("total") - (len(run.trace_ids) - len(kept)), 0),
            done=Greatest(F("done") - written["done"], 0),
            failed=Greatest(F("failed") - written["failed"], 0),
        )
        _finish_if_done(run.pk)


def _finish_if_done(run_id: int) -> None:
    AttributionRun.objects.filter(pk=run_id, status=RunStatus.RUNNING, done__gte=F("total")).update(
        status=RunStatus.SUCCEEDED, finished_at=timezone.now()
    )


def run_fail(*, run_id: int, reason: str) -> None:
    AttributionRun.objects.filter(pk=run_id, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).update(
        status=RunStatus.FAILED, error=reason[:2000], finished_at=timezone.now()
    )


def run_execute_inline(*, run: AttributionRun, jobs: int = 1) -> AttributionRun:
    """Run every trace here (the CLI and `evaluate`): the same code path the workers take. An offline method's
    batches may go to ``jobs`` processes forked from this one (``_run_batches_forked``)."""
    run_prepare(run=run)
    run_claim(run_id=run.pk)
    if is_offline(run):
        batches = [
            run.trace_ids[start : start + OFFLINE_BATCH]
            for start in range(0, len(run.trace_ids), OFFLINE_BATCH)
        ]
        if jobs > 1 and len(batches) > 1 and _can_fork():
            _run_batches_forked(run.pk, batches, jobs)
        else:
            for batch in batches:
                run_traces(run_id=run.pk, trace_ids=batch)
    else:
        for trace_id in run.trace_ids:
            run_trace(run_id=run.pk, trace_id=trace_id)
    _finish_if_done(run.pk)
    run.refresh_from_db()
    return run


def _can_fork() -> bool:
    """Forked processes read what this one committed: PostgreSQL, outside a transaction (a test's, or a caller's
    whose rows the children could not see). SQLite (the embedded mode) takes one writer at a time anyway."""
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def _run_batches_forked(run_id: int, batches: list[list[int]], jobs: int) -> None:
    """``run_traces`` over ``batches`` in ``jobs`` processes forked from this one (modules already imported, each
    child its own database connection): an offline method is CPU-bound, and a single process used one core of many.
    Each batch is its own transaction, as on the workers; a child's error fails the call as it would inline."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from django.db import connections

    connections.close_all()  # a child must never share the parent's socket: each opens its own
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        for _ in pool.map(_run_batch, [(run_id, batch) for batch in batches]):
            pass


def _run_batch(job: tuple[int, list[int]]) -> int:
    run_id, trace_ids = job
    return run_traces(run_id=run_id, trace_ids=trace_ids)


def llm_test_connection(*, project: Project) -> dict:
    """One tiny request with the project's saved model settings, through the outbound policy: ``ok``, ``answer``,
    ``latency_ms``, ``error``. Recorded in the call log under the purpose "test connection"."""
    from ..llm import LlmClient

    try:
        llm = LlmClient.for_project(project, method="settings")
    except MethodError as exc:
        return {"ok": False, "answer": "", "latency_ms": 0, "error": str(exc)}
    return llm.ping()


def llm_settings_save(
    *,
    settings: ProjectLlmSettings,
    api_key: str,
    clear_key: bool,
    hook_auth: str = "",
    actor: AbstractBaseUser | None = None,
) -> ProjectLlmSettings:
    """Save model settings; a new key is encrypted before it touches the database, an empty one keeps the old.
    The change is audited (which fields changed, never a secret)."""
    from tracing.services import audit_record

    from ..crypto import encrypt

    changed = []
    if clear_key:
        settings.api_key_encrypted = ""
        changed.append("api key removed")
    elif api_key:
        settings.api_key_encrypted = encrypt(api_key.strip())
        changed.append("api key set")
    if hook_auth:
        settings.replay_hook_auth_encrypted = encrypt(hook_auth.strip())
        changed.append("hook auth set")
    previous = (
        ProjectLlmSettings.objects.filter(pk=settings.pk)
        .values("model", "api_base", "replay_hook_url")
        .first()
    )
    for field in ("model", "api_base", "replay_hook_url"):
        if (previous or {}).get(field, "") != getattr(settings, field):
            changed.append(f"{field} = {getattr(settings, field) or '(empty)'}")
    with transaction.atomic():
        settings.save()
        if changed:
            audit_record(
                action="llm_settings.changed",
                project=settings.project,
                actor=actor,
                target="model settings",
                details={"changes": changed},
            )
    return settings


# --- replay records ---------------------------------------------------------------------------------------------------


class RunReplayStore:
    """Replays of one trace within one attribution run, kept in ``ReplayRecord`` as each finishes: a counterfactual
    search re-delivered after a worker crash reads them back instead of replaying again."""

    def __init__(self, run: AttributionRun, trace: Trace, replayer: str = "") -> None:
        self.run, self.trace, self.replayer = run, trace, replayer

    def get(self, key: str) -> dict | None:
        from ..models import ReplayRecord

        row = ReplayRecord.objects.filter(run=self.run, trace=self.trace, key=key).first()
        return None if row is None else _replay_dict(row)

    def put(self, key: str, replay: dict) -> None:
        from ..models import ReplayRecord

        try:
            with transaction.atomic():
                ReplayRecord.objects.create(
                    project_id=self.run.project_id,
                    trace=self.trace,
                    run=self.run,
                    key=key[:200],
                    purpose=str(replay.get("purpose", ""))[:20],
                    replayer=self.replayer[:20],
                    corrections=replay.get("corrected_content") or {},
                    outcome=replay["outcome"],
                    final_answer=replay.get("final_answer", ""),
                    continuation=replay.get("continuation") or [],
                    tokens=int(replay.get("tokens") or 0),
                    cost=Decimal(str(round(float(replay.get("cost") or 0), 6))),
                    details=replay.get("details") or {},
                )
        except IntegrityError:
            pass  # another delivery recorded the same replay first


def _replay_dict(row) -> dict:
    return {
        "purpose": row.purpose,
        "corrections": sorted(int(k) for k in row.corrections),
        "corrected_content": row.corrections,
        "outcome": row.outcome,
        "final_answer": row.final_answer,
        "continuation": row.continuation,
        "cost": float(row.cost),
        "tokens": row.tokens,
        "details": row.details,
    }
