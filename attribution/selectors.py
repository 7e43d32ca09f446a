"""Reads for the attribution app."""

from __future__ import annotations

from django.db.models import Count, Prefetch, QuerySet

from tracing.models import Agent, GoldLabel, Step, Trace

from .methods.base import StepView, TraceView
from .models import AttributionRun, Verdict


def trace_view(trace: Trace) -> TraceView:
    """A read-only snapshot of a trace for the methods: one query for the steps, one for the agents."""
    rows = (Step.objects.filter(trace=trace).order_by("index")
            .values_list("index", "agent__name", "kind", "content", "speaker", "recipient", "tool_name", "parent_index"))
    steps = tuple(StepView(index=i, agent=a or "", kind=k, content=c, speaker=s, recipient=r, tool_name=t, parent=p)
                  for i, a, k, c, s, r, t, p in rows)
    acting = tuple(dict.fromkeys(s.agent for s in steps if s.agent))
    prompts = dict(Agent.objects.filter(trace=trace).exclude(system_prompt="").values_list("name", "system_prompt"))
    return TraceView(trace_id=trace.pk, name=trace.name, question=trace.question, ground_truth=trace.ground_truth,
                     outcome=trace.outcome, steps=steps, agents=acting, system_prompts=prompts,
                     source_format=trace.source_format)


def light_trace_views(trace_ids: list[int]) -> dict[int, TraceView]:
    """Snapshots without step content (the shape of each run: kinds, agents, recipients), for the calibration of
    the heuristic's position priors. One query for the steps of all the traces."""
    steps: dict[int, list[StepView]] = {t: [] for t in trace_ids}
    rows = (Step.objects.filter(trace_id__in=trace_ids).order_by("trace_id", "index")
            .values_list("trace_id", "index", "agent__name", "kind", "recipient"))
    for trace_id, index, agent, kind, recipient in rows.iterator(chunk_size=5000):
        steps[trace_id].append(StepView(index=index, agent=agent or "", kind=kind, content="", recipient=recipient))
    return {t: TraceView(trace_id=t, name="", question="", ground_truth="", outcome="", steps=tuple(s),
                         agents=tuple(dict.fromkeys(v.agent for v in s if v.agent)))
            for t, s in steps.items() if s}


def gold_for(trace: Trace) -> GoldLabel | None:
    """The label a verdict is scored against: adjudicated beats annotator beats the rest, newest first."""
    order = {"adjudicated": 0, "annotator": 1}
    labels = sorted(trace.gold_labels.all(), key=lambda g: (order.get(g.source, 2), -g.pk))
    return labels[0] if labels else None


def verdicts_for_trace(trace: Trace) -> QuerySet[Verdict]:
    return Verdict.objects.filter(trace=trace).select_related("run").order_by("-created_at")


def runs_for_project(project_id: int, limit: int = 20) -> list[AttributionRun]:
    return list(AttributionRun.objects.filter(project_id=project_id).order_by("-id")[:limit])


def labelled_traces(*, project, split: str = "all") -> list[Trace]:  # type: ignore[no-untyped-def]
    """The project's traces that have a gold label, optionally only one side of the dev / held-out split."""
    from .splits import split_of

    traces = list(Trace.objects.filter(project=project, gold_labels__isnull=False).distinct().order_by("pk"))
    if split == "all":
        return traces
    return [t for t in traces
            if split_of(source_format=t.source_format, external_id=t.external_id, name=t.name) == split]


def evaluation_records(*, run: AttributionRun, split: str = "all") -> list:  # type: ignore[type-arg]
    """One evaluation record per verdict of ``run`` whose trace has a gold label; failed verdicts count as wrong."""
    from .evaluation import Record
    from .splits import split_of

    records = []
    acting = Prefetch("trace__agents", queryset=Agent.objects.filter(step_count__gt=0).order_by("position"),
                      to_attr="acting_agents")
    verdicts = list(Verdict.objects.filter(run=run).select_related("trace")
                    .prefetch_related("trace__gold_labels", acting))  # three queries for the whole run
    ends = first_and_last_actions([v.trace_id for v in verdicts])
    for verdict in verdicts:
        t = verdict.trace
        if split != "all" and split_of(source_format=t.source_format, external_id=t.external_id, name=t.name) != split:
            continue
        gold = gold_for(verdict.trace)
        if gold is None:
            continue
        agents = tuple(a.name for a in t.acting_agents)
        (first_step, first_agent), (last_step, last_agent) = ends.get(t.pk, ((0, ""), (-1, "")))
        records.append(Record(
            pred_agent=verdict.agent_name if verdict.status == "ok" else "",
            pred_step=verdict.step_index if verdict.status == "ok" and verdict.step_index is not None else -1,
            gold_agent=gold.agent_name, gold_step=gold.step_index, n_steps=verdict.trace.step_count,
            agents=agents, calls=verdict.calls, tokens=verdict.input_tokens + verdict.output_tokens,
            cost=float(verdict.cost), first_agent=first_agent, first_step=first_step, last_agent=last_agent,
            last_step=last_step, group=str(t.pk),
        ))
    return records


_NOT_ACTIONS = ("tool_result", "human", "system")


def first_and_last_actions(trace_ids: list[int]) -> dict[int, tuple[tuple[int, str], tuple[int, str]]]:
    """Per trace, (index, agent) of its first and of its last agent action (the first- and last-step baselines).
    Two queries over the steps of the given traces."""
    from django.db.models import Max, Min, Q

    ends = list(Step.objects.filter(trace_id__in=trace_ids, agent__isnull=False).exclude(kind__in=_NOT_ACTIONS)
                .values("trace_id").annotate(first=Min("index"), last=Max("index"))
                .values_list("trace_id", "first", "last"))
    if not ends:
        return {}
    wanted = Q()
    for trace_id, first, last in ends:
        wanted |= Q(trace_id=trace_id, index__in=(first, last))
    agents = {(t, i): name for t, i, name in Step.objects.filter(wanted).values_list("trace_id", "index",
                                                                                      "agent__name")}
    return {t: ((first, agents.get((t, first), "")), (last, agents.get((t, last), ""))) for t, first, last in ends}


# A run stands for its method (and is ranked) only from this many labelled traces on: at n=10 the Wilson 95% interval
# of a 50% accuracy is still 24–76%, and below it one trace moves the figure by more than ten points. So a one-trace
# "Attribute" click never replaces, nor outranks, a real evaluation.
MIN_RANKED_TRACES = 10


def latest_evaluation_run(*, project, method: str) -> AttributionRun | None:  # type: ignore[no-untyped-def]
    """The finished run that stands for ``method`` in the project (see ``evaluation_runs``)."""
    chosen = evaluation_runs(project=project, methods=[method]).get(method)
    return chosen[0] if chosen else None


def evaluation_runs(*, project, methods: list[str] | None = None) -> dict[str, tuple[AttributionRun, int]]:  # type: ignore[no-untyped-def]
    """Per method, the finished run that stands for it and the labelled traces it covered: the newest run over at
    least MIN_RANKED_TRACES labelled traces, else the run over the most (the newest of a tie). Two queries whatever
    the number of runs: labelled verdicts counted per run on ids only (never the runs' wide ``trace_ids`` JSON),
    then the chosen runs."""
    from django.db.models import Exists, OuterRef

    from .models import RunStatus

    verdicts = Verdict.objects.filter(Exists(GoldLabel.objects.filter(trace_id=OuterRef("trace_id"))),
                                      run__project=project, run__status=RunStatus.SUCCEEDED)
    if methods is not None:
        verdicts = verdicts.filter(run__method__in=methods)
    candidates: dict[str, list[tuple[int, int]]] = {}
    per_run = (verdicts.order_by().values("run_id", "run__method").annotate(labelled=Count("id"))
               .values_list("run__method", "run_id", "labelled"))
    for method, run_id, labelled in per_run:
        candidates.setdefault(method, []).append((labelled, run_id))
    chosen = {method: _standing_run(runs) for method, runs in candidates.items()}
    runs = AttributionRun.objects.defer("trace_ids").in_bulk([run_id for _, run_id in chosen.values()])
    return {method: (runs[run_id], labelled) for method, (labelled, run_id) in chosen.items()}


def _standing_run(runs: list[tuple[int, int]]) -> tuple[int, int]:
    """(labelled, run id) of the run that stands for a method: ids grow with time, so the largest is the newest."""
    big = [r for r in runs if r[0] >= MIN_RANKED_TRACES]
    return max(big, key=lambda r: r[1]) if big else max(runs)


def project_spend(*, project) -> float:  # type: ignore[no-untyped-def]
    from django.db.models import Sum

    from .models import LlmCall

    return float(LlmCall.objects.filter(project=project).aggregate(total=Sum("cost"))["total"] or 0)


# Buckets of the suspicion strip: a 10,000-step trace is drawn as 400 cells, each the most suspicious of its steps.
STRIP_CELLS = 400


def suspicion_strip(scores: list[float]) -> list[dict]:
    if not scores:
        return []
    size = max(1, -(-len(scores) // STRIP_CELLS))
    cells = []
    for start in range(0, len(scores), size):
        chunk = scores[start:start + size]
        top = max(range(len(chunk)), key=lambda i: chunk[i])
        cells.append({"step": start + top, "first": start, "last": start + len(chunk) - 1,
                      "score": chunk[top], "level": min(9, int(chunk[top] * 10))})
    return cells


def trace_panel_context(trace: Trace, membership) -> dict:  # type: ignore[no-untyped-def]
    from .forms import StartRunForm

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
    return {"trace": trace, "membership": membership, "verdicts": list(latest.values()), "gold": gold,
            "strip": suspicion_strip(newest_ok.scores) if newest_ok else [], "strip_verdict": newest_ok,
            "pending": pending, "form": StartRunForm(initial={"with_ground_truth": True}),
            "agent_graph": agent_graph_drawing(view, highlight={gold.agent_name if gold else "",
                                                                newest_ok.agent_name if newest_ok else ""}),
            "evidence": _evidence(view, newest_ok)}


def _evidence(view: TraceView, verdict: Verdict | None) -> list[str]:
    """What the blamed step used from earlier steps, from the dependency graph ("step 12 uses '17' from step 7")."""
    if verdict is None or verdict.step_index is None or len(view.steps) > 5000:
        return []
    from .graph import build_graph, explain_use

    return explain_use(build_graph(view), verdict.step_index)[:5]


def agent_graph_drawing(view: TraceView, *, highlight: set[str]) -> dict:
    """Agents on a circle with their hand-overs as arrows, laid out here so the template only draws."""
    import math

    from .graph import agent_graph

    graph = agent_graph(view)
    nodes = graph["nodes"][:12]  # past a dozen agents a circle stops being readable
    if len(nodes) < 2:
        return {}
    cx, cy, radius = 170, 120, 95
    position = {}
    for i, node in enumerate(nodes):
        angle = -math.pi / 2 + 2 * math.pi * i / len(nodes)
        position[node["agent"]] = (round(cx + radius * math.cos(angle)), round(cy + radius * math.sin(angle)))
    top = max((e["count"] for e in graph["edges"]), default=1) or 1
    edges = []
    for edge in graph["edges"]:
        if edge["source"] in position and edge["target"] in position:
            (x1, y1), (x2, y2) = position[edge["source"]], position[edge["target"]]
            # Stop short of the target's circle so the arrow head stays visible.
            length = math.hypot(x2 - x1, y2 - y1) or 1
            # Shift sideways, so a -> b and b -> a are two visible arrows instead of one line drawn twice.
            ox, oy = -(y2 - y1) / length * 5, (x2 - x1) / length * 5
            x1, y1 = round(x1 + ox), round(y1 + oy)
            x2, y2 = round(x2 - (x2 - x1) * 22 / length + ox), round(y2 - (y2 - y1) * 22 / length + oy)
            edges.append({**edge, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                          "width": round(1 + 4 * edge["count"] / top, 1)})
    return {"nodes": [{**n, "x": position[n["agent"]][0], "y": position[n["agent"]][1],
                       "hot": n["agent"] in highlight} for n in nodes], "edges": edges}


def run_detail_context(run: AttributionRun) -> dict:
    verdicts = list(Verdict.objects.filter(run=run).select_related("trace").prefetch_related("trace__gold_labels")
                    .order_by("trace_id")[:500])
    rows = []
    for v in verdicts:
        gold = gold_for(v.trace)
        rows.append({"verdict": v, "gold": gold,
                     "agent_ok": bool(gold and v.status == "ok" and v.agent_name == gold.agent_name),
                     "step_ok": bool(gold and v.status == "ok" and v.step_index == gold.step_index)})
    return {"run": run, "rows": rows}


def reusable_run(*, project, method: str, trace_ids: list[int], with_ground_truth: bool) -> AttributionRun | None:  # type: ignore[no-untyped-def]
    wanted = sorted(trace_ids)
    for run in AttributionRun.objects.filter(project=project, method=method, status="succeeded").order_by("-id")[:50]:
        if sorted(run.trace_ids) == wanted and run.params.get("with_ground_truth") == with_ground_truth:
            return run
    return None


def replay_inspector_context(verdict: Verdict, selected: int | None) -> dict:
    """The replays a counterfactual verdict made, and one of them beside the original run from its first correction.

    By default the replay shown is the last one that turned the run into a success (the confirming single-step
    flip), else the last one.
    """
    replays = list((verdict.details or {}).get("replays") or [])
    for number, replay in enumerate(replays):
        replay["number"] = number
        replay["flipped"] = replay.get("outcome") == "success"
    if not replays:
        return {"verdict": verdict, "replays": [], "replay": None}
    if selected is None or not 0 <= selected < len(replays):
        flips = [r for r in replays if r["flipped"]]
        selected = (flips or replays)[-1]["number"]
    replay = replays[selected]
    first = min(replay.get("corrections") or [0])
    original = list(Step.objects.filter(trace=verdict.trace, index__gte=first).select_related("agent")
                    .order_by("index")[:300])
    corrected = {int(k): v for k, v in (replay.get("corrected_content") or {}).items()}
    return {"verdict": verdict, "replays": replays, "replay": replay, "first": first, "original": original,
            "continuation": (replay.get("continuation") or [])[:300], "corrected": corrected,
            "original_outcome": verdict.trace.get_outcome_display()}


def campaigns_for_project(project_id: int, limit: int = 20) -> list:  # type: ignore[type-arg]
    from .models import InjectionCampaign

    return list(InjectionCampaign.objects.filter(project_id=project_id).order_by("-created_at", "-id")[:limit])


def campaign_detail_context(campaign, status: str = "") -> dict:  # type: ignore[no-untyped-def]
    from .models import InjectionStatus

    injections = campaign.injections.select_related("origin", "result_trace").order_by("pk")
    counts = dict(campaign.injections.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    if status in InjectionStatus.values:
        injections = injections.filter(status=status)
    return {"campaign": campaign, "injections": list(injections[:500]), "status_filter": status,
            "status_counts": [(value, label, counts.get(value, 0)) for value, label in InjectionStatus.choices]}


def injection_inspector_context(injection) -> dict:  # type: ignore[no-untyped-def]
    """The origin run beside the faulty replay, both from the injected step, as the replay inspector shows them."""
    from .models import ReplayRecord

    record = ReplayRecord.objects.filter(campaign_id=injection.campaign_id, trace_id=injection.origin_id,
                                         key=injection.key).first()
    first = injection.step_index if injection.step_index is not None else 0
    original = list(Step.objects.filter(trace_id=injection.origin_id, index__gte=first).select_related("agent")
                    .order_by("index")[:300])
    continuation = [dict(step) for step in (record.continuation if record else [])[:300]]
    recorded = {s.index: s.content for s in original}
    for step in continuation:  # where the replay parts from the recorded run
        step["changed"] = recorded.get(step.get("index")) != step.get("content")
    return {"injection": injection, "record": record, "first": first, "original": original,
            "continuation": continuation,
            "flipped": bool(record and record.outcome == "failure")}


def evaluation_comparison(*, project, split: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every evaluated method on this split, side by side, each scored over the traces of the run that stands for it
    (``evaluation_runs``). Rows over at least MIN_RANKED_TRACES traces come first, best exact step then agent
    accuracy; smaller ones follow, largest first, marked ``ranked: False``: their figures are too noisy to order."""
    from .evaluation import score

    rows = []
    for method, (run, labelled) in evaluation_runs(project=project).items():
        records = evaluation_records(run=run, split=split)
        if records:
            result = score(records)
            rows.append({"method": method, "run": run, "labelled": labelled, "result": result,
                         "small": labelled < MIN_RANKED_TRACES, "ranked": result["n"] >= MIN_RANKED_TRACES})
    ranked = sorted((r for r in rows if r["ranked"]), key=lambda r: (
        -r["result"]["step_accuracy"], -r["result"]["agent_accuracy"], r["method"]))
    unranked = sorted((r for r in rows if not r["ranked"]), key=lambda r: (
        -r["result"]["n"], -r["result"]["step_accuracy"], -r["result"]["agent_accuracy"], r["method"]))
    return ranked + unranked


# The trivial baselines of attribution.evaluation.baselines, in plain words, in the order the page lists them.
BASELINE_NAMES = {"majority": "most blamed agent / commonest step (fitted on other traces)",
                  "first": "first agent action", "last": "last agent action", "random": "random acting agent",
                  "random_blamed": "random among ever-blamed agents"}
# The same, shorter and per figure, for the chart's dashed lines.
_CHART_BASELINE_NAMES = {
    "agent": {"majority": "most blamed agent", "random": "random acting agent",
              "random_blamed": "random ever-blamed agent"},
    "step": {"majority": "commonest step", "random": "random step", "random_blamed": "random step"},
}


def baseline_rows(result: dict) -> list[dict]:  # type: ignore[type-arg]
    """A scored result's baselines as table rows, with the strongest per figure marked."""
    from .evaluation import best_baseline

    best = {figure: best_baseline(result, figure)[0] for figure in ("agent", "step")}
    found = result["baselines"]
    names = [n for n in BASELINE_NAMES if n in found] + [n for n in found if n not in BASELINE_NAMES]
    return [{"name": name, "label": BASELINE_NAMES.get(name, name), **found[name],
             "best_agent": name == best["agent"], "best_step": name == best["step"]} for name in names]


def evaluation_chart(comparison: list[dict], reference: dict | None) -> dict:  # type: ignore[type-arg]
    """The comparison as an accuracy chart, with the best baselines of ``reference``'s traces as dashed lines."""
    from .charts import accuracy_chart
    from .evaluation import best_baseline

    rows = [{"label": r["method"], "agent": res["agent_accuracy"], "agent_ci": res["intervals"]["agent"],
             "step": res["step_accuracy"], "step_ci": res["intervals"]["step"], "n": res["n"], "muted": not r["ranked"]}
            for r in comparison for res in (r["result"],)]
    lines = []
    if reference is not None:
        for figure in ("agent", "step"):
            name, value = best_baseline(reference["result"], figure)
            label = _CHART_BASELINE_NAMES[figure].get(name) or BASELINE_NAMES.get(name, name)
            lines.append({"label": label, "agent": value if figure == "agent" else None,
                          "step": value if figure == "step" else None})
    return accuracy_chart(rows, lines, chart_id="evaluation-chart",
                          title="Agent and step accuracy of each evaluated method, with 95% intervals")


def evaluation_page(*, project, method: str, split: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """Everything the evaluation page shows, each run chosen and scored once: the comparison of every evaluated
    method, the selected method's row, the baselines and the chart."""
    comparison = evaluation_comparison(project=project, split=split)
    selected = next((r for r in comparison if r["method"] == method), None)
    # Baselines are drawn from the run over the most traces: its figures are the steadiest.
    reference = max(comparison, key=lambda r: r["result"]["n"], default=None)
    return {"comparison": comparison, "selected": selected, "run": selected["run"] if selected else None,
            "result": selected["result"] if selected else None,
            "baselines": baseline_rows(selected["result"]) if selected else [], "reference": reference,
            "reference_baselines": baseline_rows(reference["result"]) if reference else [],
            "chart": evaluation_chart(comparison, reference), "min_ranked": MIN_RANKED_TRACES,
            "unranked": any(not r["ranked"] for r in comparison),
            "labelled": labelled_count(project=project, split=split)}


def labelled_count(*, project, split: str = "all") -> int:  # type: ignore[no-untyped-def]
    """How many of the project's traces have a gold label (in the split): ``labelled_traces`` without loading the
    traces' wide columns, and with EXISTS instead of a SELECT DISTINCT over every one of them."""
    from django.db.models import Exists, OuterRef

    from .splits import split_of

    traces = Trace.objects.filter(Exists(GoldLabel.objects.filter(trace_id=OuterRef("pk"))), project=project)
    if split == "all":
        return traces.count()
    return sum(1 for fmt, external, name in traces.values_list("source_format", "external_id", "name")
               if split_of(source_format=fmt, external_id=external, name=name) == split)
