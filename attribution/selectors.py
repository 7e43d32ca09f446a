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
    verdicts = (Verdict.objects.filter(run=run).select_related("trace")
                .prefetch_related("trace__gold_labels", acting))  # three queries for the whole run
    for verdict in verdicts:
        t = verdict.trace
        if split != "all" and split_of(source_format=t.source_format, external_id=t.external_id, name=t.name) != split:
            continue
        gold = gold_for(verdict.trace)
        if gold is None:
            continue
        agents = tuple(a.name for a in t.acting_agents)
        records.append(Record(
            pred_agent=verdict.agent_name if verdict.status == "ok" else "",
            pred_step=verdict.step_index if verdict.status == "ok" and verdict.step_index is not None else -1,
            gold_agent=gold.agent_name, gold_step=gold.step_index, n_steps=verdict.trace.step_count,
            agents=agents, calls=verdict.calls, tokens=verdict.input_tokens + verdict.output_tokens,
            cost=float(verdict.cost),
        ))
    return records


def latest_evaluation_run(*, project, method: str) -> AttributionRun | None:  # type: ignore[no-untyped-def]
    """The newest finished run of ``method`` in the project that covered at least one labelled trace."""
    return (AttributionRun.objects.filter(project=project, method=method, status="succeeded",
                                          verdicts__trace__gold_labels__isnull=False)
            .distinct().order_by("-id").first())


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
    """Every method's newest finished evaluation on this split, side by side (each over its own run's traces)."""
    from .evaluation import score
    from .methods import all_methods

    rows = []
    for method in all_methods():
        run = latest_evaluation_run(project=project, method=method.name)
        records = evaluation_records(run=run, split=split) if run else []
        if records:
            rows.append({"method": method.name, "run": run, "result": score(records)})
    return sorted(rows, key=lambda r: (-r["result"]["step_accuracy"], -r["result"]["agent_accuracy"]))
