"""Fault injection: sandbox runs, and injection campaigns that break successful runs on purpose and keep the
labelled failures (plan, fan out, budget, cancel, settle each injection exactly once)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from tracing.jobs import LIVE_STATUSES
from tracing.models import Project, Trace

from ..methods import MethodError
from ..models import ProjectLlmSettings
from ..replay.base import ReplayError
from ..selectors import trace_view
from .runs import replayer_for

logger = logging.getLogger(__name__)


def sandbox_cases_generate(
    *, project: Project, runs: int, seed: int, version: int = 1, mode: str = "injected"
) -> tuple[int, int]:
    """Run the built-in sandbox ``runs`` times with one injected fault each; keep the runs the fault broke as traces
    labelled at the faulty step (source: injected). Idempotent by trace name. Returns (kept, already there).
    ``version=2``: sandbox v2's labelled failures of ``mode`` (injected, or natural), see ``_sandbox_v2_generate``."""
    from tracing import services as tracing_services
    from tracing.models import LabelSource, Provenance

    from ..replay import sandbox

    if version == 2:
        return _sandbox_v2_generate(project=project, runs=runs, seed=seed, mode=mode)
    kept = existing = 0
    for i in range(runs):
        task_seed, fault_seed = seed + i, i
        name = sandbox.trace_name(task_seed, fault_seed)
        if Trace.objects.filter(project=project, name=name).exists():
            existing += 1
            continue
        result = sandbox.run(sandbox.generate_task(task_seed), sandbox.inject(task_seed, fault_seed))
        if result.outcome != "failure":
            continue  # the fault did not break this run (the verifier caught it): no labelled case
        with transaction.atomic():
            tracing_services.trace_create_from_parsed(
                project=project,
                upload=None,
                ordinal=0,
                parsed=sandbox.to_parsed(result, name=name, fault_seed=fault_seed),
                provenance=Provenance.INJECTED,
                label_source=LabelSource.INJECTED,
            )
        kept += 1
    return kept, existing


def _sandbox_v2_generate(*, project: Project, runs: int, seed: int, mode: str) -> tuple[int, int]:
    """Sandbox v2 failures, each labelled at its counterfactual decisive step: injected ones (provenance and label
    source "injected"), or natural ones (provenance "generated", label source "counterfactual": nobody injected
    anything, the label comes from replaying every action). Idempotent by trace name."""
    from tracing import services as tracing_services
    from tracing.models import LabelSource, Provenance

    from ..replay.sandbox_v2_faults import generate_labelled, to_parsed

    provenance, source = (
        (Provenance.INJECTED, LabelSource.INJECTED)
        if mode == "injected"
        else (Provenance.GENERATED, LabelSource.COUNTERFACTUAL)
    )
    kept = existing = 0
    for case in generate_labelled(runs, seed, mode):
        if Trace.objects.filter(project=project, name=case.name).exists():
            existing += 1
            continue
        with transaction.atomic():
            tracing_services.trace_create_from_parsed(
                project=project,
                upload=None,
                ordinal=0,
                parsed=to_parsed(case),
                provenance=provenance,
                label_source=source,
            )
        kept += 1
    return kept, existing


# --- injection campaigns ----------------------------------------------------------------------------------------------


def campaign_cost_cap_refusal(*, project: Project) -> str | None:
    """Why a campaign of ``project`` cannot take a money budget, or None when it can (the campaign form and
    ``inject_faults --max-cost`` both ask). A money cap on a model nobody can price would never trigger (its calls
    cost $0 as far as anyone knows), so it is refused instead of promised; without a model nothing can be spent."""
    from ..llm import model_prices

    row = ProjectLlmSettings.objects.filter(project=project).first()
    if row is None or not row.model:
        return None
    if row.input_price_per_mtok is not None and row.output_price_per_mtok is not None:
        return None
    if model_prices(row.model) is not None:
        return None
    return f"No price is known for the project's model ({row.model}), so a money cap cannot be enforced"


def campaign_create(
    *,
    project: Project,
    trace_ids: Iterable[int],
    faults_per_trace: int = 3,
    seed: int = 0,
    writer: str = "perturb",
    kinds: list[str] | None = None,
    max_replays: int | None = None,
    max_tokens: int | None = None,
    max_cost: float | Decimal | None = None,
    user: AbstractBaseUser | None = None,
    description: str = "",
    enqueue: bool = True,
):  # -> InjectionCampaign
    """Plan to break each successful trace of ``trace_ids`` with up to ``faults_per_trace`` faults, and queue it.

    Sandbox runs are broken by the sandbox's own deterministic faults; other traces by a fault writer (``perturb``,
    offline, or ``llm``, the project's model) and replayed through the project's replay hook or model.
    """
    from tracing.models import Outcome

    from ..models import InjectionCampaign
    from ..replay.sandbox import parse_name

    if writer not in ("perturb", "llm"):
        raise MethodError(f"unknown fault writer {writer!r}: use perturb or llm")
    if faults_per_trace < 1:
        raise MethodError("faults per trace must be at least 1")
    traces = list(
        Trace.objects.filter(project=project, pk__in=list(trace_ids), outcome=Outcome.SUCCEEDED)
        .order_by("pk")
        .only("pk", "name", "source_format")
    )
    if not traces:
        raise MethodError(
            "no successful traces in the selection: faults are injected into runs that succeeded"
        )
    real = [t for t in traces if not (t.source_format == "sandbox" and parse_name(t.name) is not None)]
    settings = ProjectLlmSettings.objects.filter(project=project).first()
    if real and not (settings and (settings.replay_hook_url or settings.model)):
        raise MethodError(
            f"{len(real)} of the selected traces are not sandbox runs: replaying them needs the "
            "project's replay hook URL or a model (set one on the model page)"
        )
    if writer == "llm" and not (settings and settings.model):
        raise MethodError("LLM-written faults need a model: set one on the project's model page")
    notes = []
    if writer == "llm" and len(real) < len(traces):
        # Sandbox runs replay deterministically from a fault seed; a model-written step cannot be replayed there.
        notes.append(
            f"--writer llm is not used for the {len(traces) - len(real)} sandbox run"
            f"{'s' if len(traces) - len(real) != 1 else ''}: they are broken by the sandbox's own faults "
            "(no model calls)"
        )
    campaign = InjectionCampaign.objects.create(
        project=project,
        trace_ids=[t.pk for t in traces],
        created_by=user,
        params={
            "faults_per_trace": faults_per_trace,
            "seed": seed,
            "writer": writer,
            "kinds": kinds or [],
            "notes": notes,
        },
        max_replays=max_replays,
        max_tokens=max_tokens,
        max_cost=Decimal(str(max_cost)) if max_cost is not None else None,
        description=description or f"{len(traces)} successful trace{'s' if len(traces) != 1 else ''}",
    )
    if enqueue:
        from ..tasks import start_campaign_task

        transaction.on_commit(lambda: start_campaign_task.delay(campaign.pk))
    return campaign


def campaign_claim(*, campaign_id: int) -> bool:
    """queued -> running, counting an attempt (as ``runs.run_claim``)."""
    from ..models import CampaignStatus, InjectionCampaign

    if InjectionCampaign.claim(campaign_id):
        return True
    InjectionCampaign.objects.filter(
        pk=campaign_id, status=CampaignStatus.QUEUED, attempts__gte=InjectionCampaign.MAX_ATTEMPTS
    ).update(
        status=CampaignStatus.FAILED,
        error="gave up after its last attempt was interrupted",
        finished_at=timezone.now(),
    )
    return False


def campaign_plan(*, campaign) -> int:
    """Write the campaign's injections (idempotent: a key is planned once). Returns how many are planned."""
    from ..models import Injection, InjectionCampaign, InjectionStatus
    from ..replay import perturb, sandbox

    params = campaign.params
    n, seed = int(params.get("faults_per_trace", 3)), int(params.get("seed", 0))
    rows: list[Injection] = []
    for trace in Trace.objects.filter(pk__in=campaign.trace_ids, project=campaign.project).order_by("pk"):
        view = trace_view(trace)
        parsed = sandbox.parse_name(trace.name) if trace.source_format == "sandbox" else None
        try:
            if parsed is not None:
                rows += _plan_sandbox(campaign, trace, view, parsed, n, seed)
            else:
                if params.get("writer") == "llm":  # the model writes a fault of a taxonomy category
                    from ..replay.fault_writer import choose_targets

                    targets = [
                        (index, category, category) for index, category in choose_targets(view, n, seed)
                    ]
                else:
                    targets = [
                        (index, kind, perturb.KINDS[kind])
                        for index, kind in perturb.choose_targets(view, n, seed, params.get("kinds") or None)
                    ]
                if not targets:
                    raise MethodError("no agent action in this trace can take a fault")
                rows += [
                    Injection(
                        campaign=campaign,
                        origin=trace,
                        key=f"t{trace.pk}:s{index}:{kind}"[:120],
                        step_index=index,
                        agent_name=view.steps[index].agent,
                        fault_kind=kind[:40],
                        category=category,
                        original=view.steps[index].content,
                    )
                    for index, kind, category in targets
                ]
        except (MethodError, sandbox.ReplayError) as exc:
            rows.append(
                Injection(
                    campaign=campaign,
                    origin=trace,
                    key=f"t{trace.pk}:plan",
                    fault_kind="none",
                    status=InjectionStatus.FAILED,
                    error=str(exc)[:2000],
                    finished_at=timezone.now(),
                )
            )
    with transaction.atomic():
        Injection.objects.bulk_create(rows, ignore_conflicts=True)
        total = Injection.objects.filter(campaign=campaign).count()
        settled = Injection.objects.filter(campaign=campaign).exclude(status=InjectionStatus.PENDING)
        InjectionCampaign.objects.filter(pk=campaign.pk).update(
            total=total, done=settled.count(), failed=settled.filter(status=InjectionStatus.FAILED).count()
        )
    return total


def _plan_sandbox(campaign, trace: Trace, view, parsed, n: int, seed: int) -> list:
    """Sandbox faults for a clean sandbox run: the fault seeds ``seed``, ``seed+1``… each pick one (action, kind)."""
    from ..models import Injection
    from ..replay import sandbox

    task_seed, faults = parsed
    if faults:
        raise MethodError("this sandbox run already carries a fault: inject into clean runs (sandbox/task-N)")
    sandbox.SandboxReplayer(task_seed).check(view)  # the stored run must be the sandbox's own
    by_key = {key: index for index, key in sandbox.turn_keys(view.steps).items()}
    rows, seen = [], set()
    for fault_seed in range(seed, seed + 4 * n):  # a few spare seeds: two seeds may pick the same fault
        if len(rows) == n:
            break
        (((agent, turn), kind),) = sandbox.inject(task_seed, fault_seed).items()
        index = by_key[(agent, turn)]
        if (index, kind) in seen:
            continue
        seen.add((index, kind))
        rows.append(
            Injection(
                campaign=campaign,
                origin=trace,
                key=f"t{trace.pk}:sandbox-{fault_seed}",
                step_index=index,
                agent_name=agent,
                fault_kind=kind,
                category=sandbox.FAULT_KINDS[kind],
                original=view.steps[index].content,
            )
        )
    return rows


def campaign_cancel(*, campaign) -> bool:
    """Stop a campaign: injections not started are skipped; cases already kept stay."""
    from ..models import CampaignStatus

    return _campaign_stop(
        campaign.pk,
        CampaignStatus.CANCELLED,
        "cancelled",
        from_statuses=(CampaignStatus.QUEUED, CampaignStatus.RUNNING),
    )


def _campaign_stop(campaign_id: int, status: str, reason: str, *, from_statuses: tuple[str, ...]) -> bool:
    from ..models import InjectionCampaign, InjectionStatus

    with transaction.atomic():
        stopped = InjectionCampaign.objects.filter(pk=campaign_id, status__in=from_statuses).update(
            status=status, stop_reason=reason[:300], finished_at=timezone.now()
        )
        if stopped:
            skipped = (
                InjectionCampaign.objects.get(pk=campaign_id)
                .injections.filter(status=InjectionStatus.PENDING)
                .update(status=InjectionStatus.SKIPPED, error=reason[:2000], finished_at=timezone.now())
            )
            InjectionCampaign.objects.filter(pk=campaign_id).update(done=F("done") + skipped)
    return bool(stopped)


def campaign_finish_if_done(campaign_id: int) -> None:
    from ..models import CampaignStatus, InjectionCampaign

    InjectionCampaign.objects.filter(
        pk=campaign_id, status=CampaignStatus.RUNNING, done__gte=F("total")
    ).update(status=CampaignStatus.SUCCEEDED, finished_at=timezone.now())


def campaigns_forget_traces(project_id: int, trace_ids: list[int]) -> None:
    """Traces deleted while campaigns over them are queued or running (``tracing.extensions.traces_deleted``, inside
    the deleting transaction, before the traces go): each such campaign drops them and the injections planned on them
    (deleted here, just before the traces), so its counters still add up and it finishes when the rest is done.
    An injection being replayed now settles into nothing (``_injection_settle``). A finished campaign keeps its
    figures as they were, as a finished run does."""
    from ..models import CampaignStatus, Injection, InjectionCampaign, InjectionStatus

    gone = set(trace_ids)
    live = InjectionCampaign.objects.select_for_update().filter(
        project_id=project_id, status__in=LIVE_STATUSES
    )
    for campaign in live.only("pk", "trace_ids"):
        kept = [t for t in campaign.trace_ids if t not in gone]
        if len(kept) == len(campaign.trace_ids):
            continue
        doomed = Injection.objects.filter(campaign=campaign, origin_id__in=trace_ids)
        # Locked first: one settling now either commits before this reads it or finds it gone.
        list(doomed.select_for_update().values_list("pk", flat=True))
        settled = ~Q(status=InjectionStatus.PENDING)
        counts = doomed.aggregate(
            planned=Count("pk"),
            settled=Count("pk", filter=settled),
            kept=Count("pk", filter=Q(status=InjectionStatus.KEPT)),
            failed=Count("pk", filter=Q(status=InjectionStatus.FAILED)),
        )
        InjectionCampaign.objects.filter(pk=campaign.pk).update(
            trace_ids=kept,
            total=Greatest(F("total") - counts["planned"], 0),
            done=Greatest(F("done") - counts["settled"], 0),
            kept=Greatest(F("kept") - counts["kept"], 0),
            failed=Greatest(F("failed") - counts["failed"], 0),
        )
        doomed.delete()  # before the traces, so the campaign that finishes now holds none of them
        if kept:
            campaign_finish_if_done(campaign.pk)
        else:
            _campaign_stop(
                campaign.pk,
                CampaignStatus.CANCELLED,
                "every trace it was to break was deleted",
                from_statuses=LIVE_STATUSES,
            )


def _reserve_replay(campaign_id: int) -> str:
    """Take one replay from the campaign's budget; "" when granted, else why not. Atomic across workers: a budget
    found spent stops the campaign cleanly (status *stopped*, the injections not started skipped)."""
    from ..models import CampaignStatus, InjectionCampaign

    current = InjectionCampaign.objects.get(pk=campaign_id)
    if not current.is_live:
        return f"the campaign is {current.get_status_display().lower()}"
    spent = ""
    if current.max_tokens is not None and current.tokens >= current.max_tokens:
        spent = f"token budget of {current.max_tokens:,} reached"
    elif current.max_cost is not None and current.cost >= current.max_cost:
        spent = f"cost budget of ${current.max_cost} reached"
    else:
        rows = InjectionCampaign.live_rows(campaign_id)
        if current.max_replays is not None:
            rows = rows.filter(replays__lt=F("max_replays"))
        if rows.update(replays=F("replays") + 1):
            return ""
        spent = f"replay budget of {current.max_replays:,} replays reached"
    _campaign_stop(campaign_id, CampaignStatus.STOPPED, spent, from_statuses=LIVE_STATUSES)
    return spent


def injection_execute(*, injection_id: int):  # -> Injection | None
    """Break one origin trace at one step, replay it, and keep the case when the run now fails.

    Safe to call again after a crash: a settled injection is returned untouched, and a replay that finished before
    the crash is read back from its ``ReplayRecord`` rather than run again.
    """
    from ..models import CampaignStatus, Injection, InjectionStatus, ReplayRecord

    injection = (
        Injection.objects.select_related("campaign", "origin", "campaign__project")
        .filter(pk=injection_id)
        .first()
    )
    if injection is None:  # its trace was deleted (``campaigns_forget_traces``) after it was queued
        return None
    campaign = injection.campaign
    if injection.status != InjectionStatus.PENDING:
        return injection
    # Queued here means queued again by the reaper (injections exist only once a worker planned the campaign): its
    # injections still run; the restarted start task only queues those still pending.
    if not campaign.is_live:
        return _injection_settle(injection, InjectionStatus.SKIPPED, error=f"campaign {campaign.status}")
    record = ReplayRecord.objects.filter(campaign=campaign, trace=injection.origin, key=injection.key).first()
    if record is None:
        refused = _reserve_replay(campaign.pk)
        if refused:
            injection.refresh_from_db()  # the stop may have skipped it already
            return (
                injection
                if injection.status != InjectionStatus.PENDING
                else _injection_settle(injection, InjectionStatus.SKIPPED, error=refused)
            )
        try:
            record = _injection_replay(injection)
        except (MethodError, ReplayError) as exc:
            if "campaign budget of" in str(
                exc
            ):  # our own BudgetExceeded, refused before the request was made
                _campaign_stop(
                    campaign.pk, CampaignStatus.STOPPED, str(exc)[:300], from_statuses=LIVE_STATUSES
                )
                injection.refresh_from_db()
                if injection.status != InjectionStatus.PENDING:
                    return injection
            return _injection_settle(injection, InjectionStatus.FAILED, error=str(exc))
    kept = record.outcome == "failure"  # the fault broke the run: a labelled case
    return _injection_settle(
        injection, InjectionStatus.KEPT if kept else InjectionStatus.DISCARDED, record=record
    )


def _injection_replay(injection):
    """Run the faulty replay and record it (with what it cost, against the campaign's budget)."""
    from ..models import InjectionCampaign, ReplayRecord
    from ..replay import sandbox
    from ..replay.base import Budget

    campaign, origin = injection.campaign, injection.origin
    seeds = _sandbox_seeds(injection)
    tokens, details = 0, {}
    if seeds is not None:
        result = sandbox.run(sandbox.generate_task(seeds[0]), sandbox.inject(*seeds))
        faulty = (
            result.steps[injection.step_index].content if injection.step_index < len(result.steps) else ""
        )
        outcome, answer, cost, replayer_name = result.outcome, result.final_answer, 0.0, "sandbox"
        continuation = [
            sandbox._step_dict(i, s)
            for i, s in enumerate(result.steps)  # noqa: SLF001
            if i >= injection.step_index
        ]
    else:
        view = trace_view(origin)
        replayer = replayer_for(campaign.project, view, campaign=campaign)
        writer = _fault_writer(campaign)
        budget = Budget()
        try:
            # The model writes a fault of a category; the offline perturber applies a fault kind.
            faulty = writer.write(
                view,
                injection.step_index,
                injection.category if writer.name == "llm" else injection.fault_kind,
            )
            replayed = replayer.replay(view, {injection.step_index: faulty}, budget=budget)
        except (MethodError, ReplayError):
            _charge_failed_injection(campaign.pk, writer, replayer)
            raise
        outcome, answer, cost, continuation = (
            replayed.outcome,
            replayed.final_answer,
            replayed.cost,
            replayed.continuation,
        )
        details = {**(replayed.details or {}), "explanation": writer.last_explanation}
        # The fault writer's requests count too (the replay's own are in ``budget`` and ``cost``).
        written = writer.llm.usage() if getattr(writer, "llm", None) is not None else None
        tokens = budget.tokens + (written.input_tokens + written.output_tokens if written else 0)
        cost += written.cost if written else 0.0
        replayer_name = getattr(replayer, "name", "")
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = ReplayRecord.objects.create(
                    project=campaign.project,
                    trace=origin,
                    campaign=campaign,
                    key=injection.key,
                    purpose="inject",
                    replayer=replayer_name[:20],
                    corrections={str(injection.step_index): faulty},
                    outcome=outcome,
                    final_answer=answer,
                    continuation=continuation,
                    tokens=tokens,
                    cost=Decimal(str(round(cost, 6))),
                    details=details,
                )
        except IntegrityError:  # a parallel delivery recorded it first: keep theirs, count once
            return ReplayRecord.objects.get(campaign=campaign, trace=origin, key=injection.key)
        InjectionCampaign.objects.filter(pk=campaign.pk).update(
            tokens=F("tokens") + tokens, cost=F("cost") + record.cost
        )
    return record


def _charge_failed_injection(campaign_id: int, writer, replayer) -> None:
    """What a failed injection's model clients spent still counts against the campaign (both are built for this one
    injection, so their totals are exactly its requests)."""
    from ..models import InjectionCampaign

    spent = [
        c.usage() for c in (getattr(writer, "llm", None), getattr(replayer, "llm", None)) if c is not None
    ]
    tokens = sum(u.input_tokens + u.output_tokens for u in spent)
    if tokens:
        InjectionCampaign.objects.filter(pk=campaign_id).update(
            tokens=F("tokens") + tokens, cost=F("cost") + Decimal(str(round(sum(u.cost for u in spent), 6)))
        )


def _sandbox_seeds(injection) -> tuple[int, int] | None:
    """(task seed, fault seed) of a sandbox injection (its origin is ``sandbox/task-N``, its key ends in
    ``sandbox-<fault seed>``), None for an injection into a real trace."""
    from ..replay import sandbox

    origin = injection.origin
    parsed = sandbox.parse_name(origin.name) if origin.source_format == "sandbox" else None
    return None if parsed is None else (parsed[0], int(injection.key.rsplit("sandbox-", 1)[1]))


def _fault_writer(campaign):
    from ..replay.perturb import Perturber

    if campaign.params.get("writer") == "llm":
        from ..llm import LlmClient
        from ..replay.fault_writer import FaultWriter
        from .runs import campaign_llm_options

        return FaultWriter(
            LlmClient.for_project(campaign.project, method="fault_writer", **campaign_llm_options(campaign))
        )
    return Perturber()


def _injection_settle(injection, status: str, *, record=None, error: str = ""):
    """Write the injection's end state, the kept case's trace and the campaign's counters in one transaction."""
    from ..models import Injection, InjectionCampaign, InjectionStatus

    with transaction.atomic():
        locked = Injection.objects.select_for_update().filter(pk=injection.pk).first()
        if locked is None:  # its trace was deleted during the replay: the campaign no longer counts it
            return injection
        if locked.status != InjectionStatus.PENDING:
            return locked
        if record is not None:
            locked.outcome, locked.final_answer = record.outcome, record.final_answer[:5000]
            locked.faulty = (record.corrections or {}).get(str(locked.step_index), "")
        if status == InjectionStatus.KEPT:
            locked.result_trace = _kept_case_trace(locked, record)
        locked.status, locked.error, locked.finished_at = status, error[:2000], timezone.now()
        locked.save()
        InjectionCampaign.objects.filter(pk=locked.campaign_id).update(
            done=F("done") + 1,
            kept=F("kept") + (1 if status == InjectionStatus.KEPT else 0),
            failed=F("failed") + (1 if status == InjectionStatus.FAILED else 0),
            heartbeat_at=timezone.now(),
        )
    campaign_finish_if_done(locked.campaign_id)
    return locked


def _kept_case_trace(injection, record) -> Trace:
    """The broken run as a new trace labelled at the fault (source: injected), linked to the run it came from."""
    from tracing import services as tracing_services
    from tracing.models import LabelSource, Provenance

    from ..models import Injection, InjectionStatus
    from ..replay import sandbox

    origin = injection.origin
    same = (
        Injection.objects.filter(
            origin=origin,
            step_index=injection.step_index,
            faulty=injection.faulty,
            status=InjectionStatus.KEPT,
            result_trace__isnull=False,
        )
        .exclude(pk=injection.pk)
        .values_list("result_trace_id", flat=True)
        .first()
    )
    if same is not None:  # an earlier campaign made this very case: link it rather than copy it
        return Trace.objects.get(pk=same)
    seeds = _sandbox_seeds(injection)
    if seeds is not None:
        name = sandbox.trace_name(*seeds)
        existing = Trace.objects.filter(project=origin.project_id, name=name).first()
        if existing is not None:  # the same sandbox case, generated before: link it rather than copy it
            return existing
        parsed = sandbox.to_parsed(
            sandbox.run(sandbox.generate_task(seeds[0]), sandbox.inject(*seeds)),
            name=name,
            fault_seed=seeds[1],
        )
    else:
        from ..replay.base import ReplayResult
        from ..replay.fault_writer import parsed_case

        fault = {
            "index": injection.step_index,
            "agent": injection.agent_name,
            "category": injection.category,
            "original": injection.original,
            "faulty": injection.faulty,
            "explanation": (record.details or {}).get("explanation", ""),
        }
        replayed = ReplayResult(
            continuation=record.continuation,
            outcome=record.outcome,
            final_answer=record.final_answer,
            cost=float(record.cost),
            details=record.details,
        )
        parsed = parsed_case(trace_view(origin), fault, replayed, record.replayer)
        parsed.metadata["injection"] |= {
            "campaign": injection.campaign_id,
            "fault_kind": injection.fault_kind,
        }
    trace = tracing_services.trace_create_from_parsed(
        project=origin.project,
        upload=None,
        ordinal=0,
        parsed=parsed,
        provenance=Provenance.INJECTED,
        label_source=LabelSource.INJECTED,
    )
    Trace.objects.filter(pk=trace.pk).update(derived_from=origin)
    return trace


def campaign_execute_inline(*, campaign):
    """Plan and run every injection in this process (the CLI): the same code path the workers take."""
    from ..models import Injection, InjectionStatus

    campaign_claim(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    campaign_plan(campaign=campaign)
    for injection_id in (
        Injection.objects.filter(campaign=campaign, status=InjectionStatus.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    ):
        injection_execute(injection_id=injection_id)
    campaign_finish_if_done(campaign.pk)
    campaign.refresh_from_db()
    return campaign


def sandbox_generate_start(
    *, project: Project, runs: int, seed: int, clean: int = 0, version: int = 2, mode: str = "injected"
) -> None:
    """Queue the sandbox generation (``runs`` failed runs of sandbox ``version``, ``mode`` for v2; ``clean``
    fault-free v1 runs) once the request's transaction commits; the task is idempotent by trace name, so a double
    submit only repeats finished work cheaply."""
    from ..tasks import generate_sandbox_cases_task

    project_id = project.pk
    transaction.on_commit(
        lambda: generate_sandbox_cases_task.delay(project_id, runs, seed, clean, version=version, mode=mode)
    )


def sandbox_clean_runs_generate(*, project: Project, runs: int, seed: int) -> tuple[int, int]:
    """Store ``runs`` fault-free sandbox runs (``sandbox/task-<seed>``, all succeeded): the raw material of
    injection campaigns. Idempotent by name. Returns (written, already there)."""
    from tracing import services as tracing_services
    from tracing.models import Provenance

    from ..replay import sandbox

    written = existing = 0
    for task_seed in range(seed, seed + runs):
        name = sandbox.trace_name(task_seed)
        if Trace.objects.filter(project=project, name=name).exists():
            existing += 1
            continue
        with transaction.atomic():
            tracing_services.trace_create_from_parsed(
                project=project,
                upload=None,
                ordinal=0,
                parsed=sandbox.to_parsed(sandbox.run(sandbox.generate_task(task_seed)), name=name),
                provenance=Provenance.GENERATED,
            )
        written += 1
    return written, existing
