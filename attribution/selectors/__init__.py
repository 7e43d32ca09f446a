"""Reads for the attribution app: traces as the methods see them, runs, verdicts, campaigns, the trace page's panel;
the evaluation page's in ``evaluation_page`` (re-exported here)."""

# ruff: noqa: E402 -- the evaluation page's reads are imported at the end, after the reads they use
from __future__ import annotations

from collections.abc import Collection, Iterator
from itertools import groupby
from operator import itemgetter
from sys import intern

from django.db.models import Count, QuerySet

from tracing.models import Agent, GoldLabel, Step, StepKind, Trace

from ..methods.base import StepView, TraceView
from ..models import AttributionRun, ProjectLlmSettings, Verdict


def trace_view(trace: Trace) -> TraceView:
    """A read-only snapshot of a trace for the methods: one query for the steps, one for the agents."""
    return trace_views([trace])[trace.pk]


def trace_views(traces: list[Trace]) -> dict[int, TraceView]:
    """``trace_view`` of several traces in two queries: the steps of all of them, then their agents' prompts. An
    offline run reads its batch this way (issue 19): two queries per trace cost 5 ms of a 17 ms heuristic verdict."""
    ids = [t.pk for t in traces]
    # The agents first, by their own index, and their names looked up here: joining them to the steps let the
    # planner hash every agent of the project (14 ms a batch at 20,000 traces, growing with the project).
    names: dict[int, str] = {}
    prompts: dict[int, dict[str, str]] = {t: {} for t in ids}
    for agent_id, trace_id, name, prompt in (
        Agent.objects.filter(trace_id__in=ids)
        .order_by("trace_id", *Agent._meta.ordering)
        .values_list("id", "trace_id", "name", "system_prompt")
    ):
        names[agent_id] = name
        if prompt:
            prompts[trace_id][name] = prompt
    rows: dict[int, list[StepView]] = {t: [] for t in ids}
    for trace_id, i, a, k, c, s, r, t, p in (
        Step.objects.filter(trace_id__in=ids)
        .order_by("trace_id", "index")
        .values_list(
            "trace_id",
            "index",
            "agent_id",
            "kind",
            "content",
            "speaker",
            "recipient",
            "tool_name",
            "parent_index",
        )
    ):
        rows[trace_id].append(
            StepView(
                index=i,
                agent=names.get(a, ""),
                kind=k,
                content=c,
                speaker=s,
                recipient=r,
                tool_name=t,
                parent=p,
            )
        )
    return {
        trace.pk: TraceView(
            trace_id=trace.pk,
            name=trace.name,
            question=trace.question,
            ground_truth=trace.ground_truth,
            outcome=trace.outcome,
            steps=tuple(rows[trace.pk]),
            agents=tuple(dict.fromkeys(s.agent for s in rows[trace.pk] if s.agent)),
            system_prompts=prompts[trace.pk],
            source_format=trace.source_format,
        )
        for trace in traces
    }


def light_trace_views(trace_ids: list[int]) -> Iterator[TraceView]:
    """Snapshots without step content (the shape of each run: kinds, agents, recipients), for the calibration of
    the heuristic's position priors: one query for the steps of all the traces, read one trace at a time in trace id
    order (a trace without steps has none). Holding every labelled trace's steps at once took the first `evaluate`
    of a project to 312 MB at 20,000 traces and about 1 GB at 100,000 (issue 19)."""
    rows = (
        Step.objects.filter(trace_id__in=trace_ids)
        .order_by("trace_id", "index")
        .values_list("trace_id", "index", "agent__name", "kind", "recipient")
    )
    for trace_id, group in groupby(rows.iterator(chunk_size=5000), key=itemgetter(0)):
        steps = tuple(
            StepView(index=index, agent=agent or "", kind=kind, content="", recipient=recipient)
            for _, index, agent, kind, recipient in group
        )
        yield TraceView(
            trace_id=trace_id,
            name="",
            question="",
            ground_truth="",
            outcome="",
            steps=steps,
            agents=tuple(dict.fromkeys(v.agent for v in steps if v.agent)),
        )


def gold_for(trace: Trace) -> GoldLabel | None:
    """The label a verdict is scored against: adjudicated beats annotator beats the rest, newest first."""
    order = {"adjudicated": 0, "annotator": 1}
    labels = sorted(trace.gold_labels.all(), key=lambda g: (order.get(g.source, 2), -g.pk))
    return labels[0] if labels else None


def verdicts_for_trace(trace: Trace) -> QuerySet[Verdict]:
    return Verdict.objects.filter(trace=trace).select_related("run").order_by("-created_at")


def verdict_on_trace(*, trace: Trace, verdict_id: int) -> Verdict | None:
    """The trace's own verdict with this id, if it named a step (a person confirms only such a one)."""
    return (
        Verdict.objects.filter(pk=verdict_id, trace=trace, status="ok", step_index__isnull=False).first()
        if 0 < verdict_id < 2**63
        else None
    )


def runs_for_project(project_id: int, limit: int = 20) -> list[AttributionRun]:
    return list(AttributionRun.objects.filter(project_id=project_id).order_by("-id")[:limit])


def labelled_trace_ids(*, project, split: str = "all") -> list[int]:
    """The ids of the project's traces that have a gold label, optionally only one side of the dev / held-out split.
    Ids, not model instances: `evaluate` holds them for its whole run (instances took 95 MB at 100,000 traces)."""
    from django.db.models import Exists, OuterRef

    from ..splits import split_of

    # EXISTS, not a JOIN with SELECT DISTINCT over every column.
    traces = Trace.objects.filter(
        Exists(GoldLabel.objects.filter(trace_id=OuterRef("pk"))), project=project
    ).order_by("pk")
    if split == "all":
        return list(traces.values_list("pk", flat=True))
    rows = traces.values_list("pk", "source_format", "external_id", "name").iterator(chunk_size=5000)
    return [
        pk
        for pk, fmt, external, name in rows
        if split_of(source_format=fmt, external_id=external, name=name) == split
    ]


def evaluation_records(*, run: AttributionRun, split: str = "all", leave_out: Collection[int] = ()) -> list:
    """One evaluation record per verdict of ``run`` whose trace has a gold label; failed verdicts count as wrong.
    Four queries for the whole run, on plain rows: the traces are named by a subquery on the run's verdicts (a list
    of 5,000 ids cost 0.4 s to send), and no model instance is built (prefetching 33,000 of them at 5,000 traces
    took 1.6 s of the 2.6 s this took). The rows are streamed, and an agent's name (interned) and a set of acting
    agents are one object however many records share them: a run's records name a few dozen agents, and with a
    string per name and record the records of 20,000 traces took 40 MB instead of 15 (issue 19). ``leave_out``:
    traces not to score (those a learned run's model trained on)."""
    from ..evaluation import Record
    from ..splits import split_of

    in_run = Verdict.objects.filter(run=run).values("trace_id")
    golds = _gold_per_trace(GoldLabel.objects.filter(trace_id__in=in_run))
    casts: dict[tuple[str, ...], tuple[str, ...]] = {}
    acting = {
        trace_id: casts.setdefault(cast := tuple(intern(name) for _, name in group), cast)
        for trace_id, group in groupby(
            Agent.objects.filter(trace_id__in=in_run, step_count__gt=0)
            .order_by("trace_id", "position")
            .values_list("trace_id", "name")
            .iterator(chunk_size=5000),
            key=itemgetter(0),
        )
    }
    ends = first_and_last_actions(in_run)
    rows = (
        Verdict.objects.filter(run=run)
        .order_by("-created_at", "-id")  # the model's order, as before
        .values_list(
            "trace_id",
            "status",
            "agent_name",
            "step_index",
            "calls",
            "input_tokens",
            "output_tokens",
            "cost",
            "trace__source_format",
            "trace__external_id",
            "trace__name",
            "trace__step_count",
        )
        .iterator(chunk_size=5000)
    )
    records = []
    for (
        trace_id,
        status,
        agent,
        step,
        calls,
        tokens_in,
        tokens_out,
        cost,
        fmt,
        external,
        name,
        n_steps,
    ) in rows:
        gold = golds.get(trace_id)
        if (
            gold is None
            or trace_id in leave_out
            or (split != "all" and split_of(source_format=fmt, external_id=external, name=name) != split)
        ):
            continue
        ok = status == "ok"
        (first_step, first_agent), (last_step, last_agent) = ends.get(trace_id, ((0, ""), (-1, "")))
        records.append(
            Record(
                pred_agent=intern(agent) if ok else "",
                pred_step=step if ok and step is not None else -1,
                gold_agent=gold[0],
                gold_step=gold[1],
                n_steps=n_steps,
                agents=acting.get(trace_id, ()),
                calls=calls,
                tokens=tokens_in + tokens_out,
                cost=float(cost),
                first_agent=first_agent,
                first_step=first_step,
                last_agent=last_agent,
                last_step=last_step,
                group=str(trace_id),
            )
        )
    return records


def _gold_per_trace(labels: QuerySet[GoldLabel]) -> dict[int, tuple[str, int]]:
    """(agent, step) of the label each trace is scored against, chosen as ``gold_for`` chooses: adjudicated beats
    annotator beats the rest, newest first."""
    order = {"adjudicated": 0, "annotator": 1}
    best: dict[int, tuple[tuple[int, int], tuple[str, int]]] = {}
    for trace_id, pk, source, agent, step in labels.values_list(
        "trace_id", "pk", "source", "agent_name", "step_index"
    ).iterator(chunk_size=5000):
        rank = (order.get(source, 2), -pk)
        if trace_id not in best or rank < best[trace_id][0]:
            best[trace_id] = (rank, (intern(agent), step))
    return {trace_id: chosen for trace_id, (_, chosen) in best.items()}


_NOT_ACTIONS = ("tool_result", "human", "system")


def first_and_last_actions(trace_ids: list[int]) -> dict[int, tuple[tuple[int, str], tuple[int, str]]]:
    """Per trace, (index, agent) of its first and of its last agent action (the first- and last-step baselines).
    One query: four index lookups per trace (steps by trace and index). An OR of one (trace, index) pair per trace
    cost 3.1 s at 2,000 traces, growing with the square of the run."""
    from django.db.models import OuterRef, Subquery

    actions = Step.objects.filter(trace_id=OuterRef("pk"), agent__isnull=False).exclude(kind__in=_NOT_ACTIONS)
    first, last = actions.order_by("index"), actions.order_by("-index")
    rows = (
        Trace.objects.filter(pk__in=trace_ids)
        .order_by()
        .annotate(
            first=Subquery(first.values("index")[:1]),
            first_agent=Subquery(first.values("agent__name")[:1]),
            last=Subquery(last.values("index")[:1]),
            last_agent=Subquery(last.values("agent__name")[:1]),
        )
        .values_list("pk", "first", "first_agent", "last", "last_agent")
        .iterator(chunk_size=5000)
    )
    return {
        t: ((f, intern(fa or "")), (la, intern(laa or ""))) for t, f, fa, la, laa in rows if f is not None
    }


def project_spend(*, project) -> float:
    from django.db.models import Sum

    from ..models import LlmCall

    # Requests in flight hold their maximum cost until they settle: that is reserved, not spent.
    return float(
        LlmCall.objects.filter(project=project, reserved_until__isnull=True).aggregate(total=Sum("cost"))[
            "total"
        ]
        or 0
    )


# The most recent calls listed under a run's or a project's usage totals: enough to see a run's last trace.
USAGE_ROWS = 50


def llm_usage(*, project, run: AttributionRun | None = None) -> dict:
    """The LLM usage of a project or one of its runs: totals of settled calls, with the tokens counted on this side
    (``estimated``: prompts of attempts that reached the server and failed) apart from those the provider reported,
    requests in flight (reserved, not spent) apart from both, and the most recent calls."""
    from django.db.models import F, Q, Sum

    from ..models import LlmCall

    calls = LlmCall.objects.filter(project=project, **({"run": run} if run is not None else {}))
    settled = Q(reserved_until__isnull=True)
    tokens = F("input_tokens") + F("output_tokens")
    totals = calls.aggregate(
        calls=Count("id", filter=settled & Q(cached=False)),
        cached=Count("id", filter=Q(cached=True)),
        in_flight=Count("id", filter=~settled),
        reported=Sum(tokens, filter=settled & Q(estimated=False)),
        estimated=Sum(tokens, filter=settled & Q(estimated=True)),
        cost=Sum("cost", filter=settled),
    )
    return {
        "totals": {name: value or 0 for name, value in totals.items()},
        "recent": list(calls.order_by("-id")[:USAGE_ROWS]),
    }


# Buckets of the suspicion strip: a 10,000-step trace is drawn as 400 cells, each the most suspicious of its steps.
STRIP_CELLS = 400


def suspicion_strip(scores: list[float]) -> list[dict]:
    if not scores:
        return []
    size = max(1, -(-len(scores) // STRIP_CELLS))
    cells = []
    for start in range(0, len(scores), size):
        chunk = scores[start : start + size]
        top = max(range(len(chunk)), key=lambda i: chunk[i])
        cells.append(
            {
                "step": start + top,
                "first": start,
                "last": start + len(chunk) - 1,
                "score": chunk[top],
                "level": min(9, int(chunk[top] * 10)),
            }
        )
    return cells


def trace_panel_context(trace: Trace, membership) -> dict:
    from ..forms import StartRunForm

    verdicts = list(verdicts_for_trace(trace)[:30])
    latest: dict[str, Verdict] = {}
    for v in verdicts:
        latest.setdefault(v.method, v)
    newest_ok = next((v for v in verdicts if v.status == "ok" and v.scores), None)
    # Runs in flight are few; reading their id lists beats a JSON containment query SQLite cannot do.
    in_flight = AttributionRun.objects.filter(project=trace.project, status__in=["queued", "running"])
    pending = any(trace.pk in run.trace_ids for run in in_flight.only("trace_ids")[:50])
    gold = gold_for(trace)
    view = trace_view(trace)
    return {
        "trace": trace,
        "membership": membership,
        "verdicts": list(latest.values()),
        "gold": gold,
        "strip": suspicion_strip(newest_ok.scores) if newest_ok else [],
        "strip_verdict": newest_ok,
        "pending": pending,
        "form": StartRunForm(initial={"with_ground_truth": True}),
        "agent_graph": agent_graph_drawing(
            view,
            highlight=set(),
            gold=gold.agent_name if gold else "",
            blamed=newest_ok.agent_name if newest_ok else "",
        ),
        "evidence": _evidence(view, newest_ok),
        "agents": list(view.agents),  # for a person's own label (the annotations app's trace label form)
    }


def _evidence(view: TraceView, verdict: Verdict | None) -> list[str]:
    """What the blamed step used from earlier steps, from the dependency graph ("step 12 uses '17' from step 7")."""
    if verdict is None or verdict.step_index is None or len(view.steps) > 5000:
        return []
    from ..graph import build_graph, explain_use

    return explain_use(build_graph(view), verdict.step_index)[:5]


def agent_graph_drawing(view: TraceView, *, highlight: set[str], gold: str = "", blamed: str = "") -> dict:
    """The agent graph laid out for drawing (``graph.agent_graph_layout``); ``highlight`` marks agents without saying
    why (the labelling screen's verdict agents), ``gold`` and ``blamed`` are named in the legend."""
    from ..graph import agent_graph, agent_graph_layout

    drawing = agent_graph_layout(agent_graph(view), gold=gold, blamed=blamed)
    for node in drawing.get("nodes", []):
        node["hot"] = node["agent"] in highlight
    return drawing


def run_detail_context(run: AttributionRun) -> dict:
    verdicts = list(
        Verdict.objects.filter(run=run)
        .select_related("trace")
        .prefetch_related("trace__gold_labels")
        .order_by("trace_id")[:500]
    )
    rows = []
    for v in verdicts:
        gold = gold_for(v.trace)
        rows.append(
            {
                "verdict": v,
                "gold": gold,
                "agent_ok": bool(gold and v.status == "ok" and v.agent_name == gold.agent_name),
                "step_ok": bool(gold and v.status == "ok" and v.step_index == gold.step_index),
            }
        )
    scored = run_scored(run=run) if run.status == "succeeded" else None
    return {
        "run": run,
        "rows": rows,
        "usage": llm_usage(project=run.project, run=run),
        "score": scored["result"] if scored else None,
        "memorised": scored.get("memorised") if scored else None,
    }


def reusable_run(
    *, project, method: str, trace_ids: list[int], with_ground_truth: bool
) -> AttributionRun | None:
    wanted = sorted(trace_ids)
    for run in AttributionRun.objects.filter(project=project, method=method, status="succeeded").order_by(
        "-id"
    )[:50]:
        if sorted(run.trace_ids) == wanted and run.params.get("with_ground_truth") == with_ground_truth:
            return run
    return None


# What each replay of the counterfactual search was for (``methods.counterfactual._Search``), as the inspector says it.
REPLAY_PURPOSES = {
    "window": "bisection: a window of suspects, cut where the ranker's suspicion halves",
    "prefix": "binary search: every candidate up to here",
    "confirm": "confirmation: the found step alone",
    "scan": "scan: one step alone",
}


def replay_inspector_context(verdict: Verdict, selected: int | None) -> dict:
    """The replays a counterfactual verdict made, and one of them beside the original run from its first correction.

    By default the replay shown is the last one that turned the run into a success (the confirming single-step
    flip), else the last one.
    """
    replays = list((verdict.details or {}).get("replays") or [])
    for number, replay in enumerate(replays):
        replay["number"] = number
        replay["flipped"] = replay.get("outcome") == "success"
        replay["why"] = REPLAY_PURPOSES.get(
            str(replay.get("purpose") or ""), str(replay.get("purpose") or "")
        )
    if not replays:
        return {"verdict": verdict, "replays": [], "replay": None}
    if selected is None or not 0 <= selected < len(replays):
        flips = [r for r in replays if r["flipped"]]
        selected = (flips or replays)[-1]["number"]
    replay = replays[selected]
    first = min(replay.get("corrections") or [0])
    original = list(
        Step.objects.filter(trace=verdict.trace, index__gte=first)
        .select_related("agent")
        .order_by("index")[:300]
    )
    corrected = {int(k): v for k, v in (replay.get("corrected_content") or {}).items()}
    # The continuation is what the replayer said: shown like the original's steps (the trace's agent colours, the
    # kinds' names), an agent the trace never had in the neutral colour.
    colours = {a.name: a.colour for a in Agent.objects.filter(trace=verdict.trace)}
    kinds = dict(StepKind.choices)
    continuation = [
        {
            **step,
            "colour": colours.get(str(step.get("agent") or ""), 11),
            "kind_display": kinds.get(str(step.get("kind") or ""), str(step.get("kind") or "")),
        }
        for step in (replay.get("continuation") or [])[:300]
        if isinstance(step, dict)
    ]
    return {
        "verdict": verdict,
        "replays": replays,
        "replay": replay,
        "first": first,
        "original": original,
        "continuation": continuation,
        "corrected": corrected,
        "original_outcome": verdict.trace.get_outcome_display(),
    }


def campaigns_for_project(project_id: int, limit: int = 20) -> list:
    from ..models import InjectionCampaign

    return list(
        InjectionCampaign.objects.filter(project_id=project_id).order_by("-created_at", "-id")[:limit]
    )


def campaign_detail_context(campaign, status: str = "") -> dict:
    from ..models import InjectionStatus

    injections = campaign.injections.select_related("origin", "result_trace").order_by("pk")
    counts = dict(
        campaign.injections.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    status = status if status in InjectionStatus.values else ""  # anything else shows them all
    if status:
        injections = injections.filter(status=status)
    return {
        "campaign": campaign,
        "injections": list(injections[:500]),
        "status_filter": status,
        "status_counts": [(value, label, counts.get(value, 0)) for value, label in InjectionStatus.choices],
    }


def injection_inspector_context(injection) -> dict:
    """The origin run beside the faulty replay, both from the injected step, as the replay inspector shows them."""
    from ..models import ReplayRecord

    record = ReplayRecord.objects.filter(
        campaign_id=injection.campaign_id, trace_id=injection.origin_id, key=injection.key
    ).first()
    first = injection.step_index if injection.step_index is not None else 0
    original = list(
        Step.objects.filter(trace_id=injection.origin_id, index__gte=first)
        .select_related("agent")
        .order_by("index")[:300]
    )
    continuation = [dict(step) for step in (record.continuation if record else [])[:300]]
    recorded = {s.index: s.content for s in original}
    for step in continuation:  # where the replay parts from the recorded run
        step["changed"] = recorded.get(step.get("index")) != step.get("content")
    return {
        "injection": injection,
        "record": record,
        "first": first,
        "original": original,
        "continuation": continuation,
        "flipped": bool(record and record.outcome == "failure"),
    }


def auto_attribute_status(*, project) -> dict:
    """Automatic attribution on the runs page: the mode, the method, why the last sweep could not start a run, and
    how many traces wait for the next one."""
    from ..models import AutoAttribute, AutoAttributePending, ProjectAttribution

    settings = ProjectAttribution.objects.filter(project=project).first()
    mode = settings.auto_attribute if settings else AutoAttribute.OFF
    return {
        "mode": mode,
        "label": AutoAttribute(mode).label,
        "method": settings.default_method if settings else "heuristic",
        "error": settings.auto_error if settings else "",
        "waiting": AutoAttributePending.objects.filter(project=project).count()
        if mode != AutoAttribute.OFF
        else 0,
    }


def llm_settings_for(*, project) -> ProjectLlmSettings:
    """The project's model settings, or unsaved defaults when it has none yet: reading the page writes nothing, the
    row is created when the owner first saves the form."""
    return ProjectLlmSettings.objects.filter(project=project).first() or ProjectLlmSettings(project=project)


def campaign_kept_trace_ids(*, campaign) -> list[int]:
    """The labelled failures a campaign kept (one trace per kept injection), to attribute them as one run."""
    return list(
        campaign.injections.filter(result_trace__isnull=False)
        .values_list("result_trace_id", flat=True)
        .distinct()
    )


# The evaluation page's reads (``evaluation_page``), re-exported; imported last because they use the ones above.
from .evaluation_page import BASELINE_NAMES as BASELINE_NAMES
from .evaluation_page import MIN_RANKED_TRACES as MIN_RANKED_TRACES
from .evaluation_page import SCORE_CACHE_SECONDS as SCORE_CACHE_SECONDS
from .evaluation_page import baseline_rows as baseline_rows
from .evaluation_page import evaluation_chart as evaluation_chart
from .evaluation_page import evaluation_comparison as evaluation_comparison
from .evaluation_page import evaluation_page as evaluation_page
from .evaluation_page import evaluation_runs as evaluation_runs
from .evaluation_page import labelled_count as labelled_count
from .evaluation_page import latest_evaluation_run as latest_evaluation_run
from .evaluation_page import run_score as run_score
from .evaluation_page import run_scored as run_scored
