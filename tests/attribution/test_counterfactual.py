"""Counterfactual attribution on sandbox runs: it finds the injected fault in few replays, and the benchmark command
reports it."""

from __future__ import annotations

import json
import math
from io import StringIO

import pytest
from django.core.management import call_command

from attribution.methods.base import MethodError, StepView, TraceView
from attribution.methods.counterfactual import METHOD
from attribution.replay.base import Budget, ReplayResult
from attribution.replay.sandbox import SandboxReplayer, generate_task, inject, run, to_view


def _injected(seeds, fault_seed: int = 1):
    for seed in seeds:
        faulty = run(generate_task(seed), inject(seed, fault_seed))
        if faulty.outcome == "failure":
            yield faulty, to_view(faulty, fault_seed=fault_seed)


def test_finds_the_injected_step_and_agent_on_50_seeds():
    cases = list(_injected(range(60)))[:50]
    assert len(cases) == 50
    replays, steps = [], []
    for faulty, view in cases:
        index, step = faulty.fired()[0]
        result = METHOD.run(view)
        assert (result.step, result.agent) == (index, step.agent), (view.name, step.fault)
        assert (
            result.scores[index] == 1.0
            and sum(result.scores) == 1.0
            and len(result.scores) == len(view.steps)
        )
        assert result.details["replays"][-1]["outcome"] == "success"
        replays.append(len(result.details["replays"]))
        steps.append(len(view.steps))
    mean_steps = sum(steps) / len(steps)
    assert sum(replays) / len(replays) <= math.log2(mean_steps) + 2
    assert max(replays) <= math.ceil(math.log2(max(steps))) + 2


def test_every_replay_is_recorded_with_corrections_and_outcome():
    faulty, view = next(_injected(range(5, 50)))
    result = METHOD.run(view)
    replays = result.details["replays"]
    assert len(replays) == result.details["replay_count"] >= 1
    for replay in replays:
        assert replay["outcome"] in ("success", "failure", "unknown")
        assert replay["corrections"] and replay["corrections"] == sorted(replay["corrections"])
        assert replay["continuation"][0]["index"] == replay["corrections"][0]
    assert len({tuple(r["corrections"]) for r in replays}) == len(replays)  # no replay repeated
    confirm = [r for r in replays if r["corrections"] == [result.step]]
    assert confirm and confirm[0]["outcome"] == "success"
    assert "binary search" in result.details["strategy"]


def test_pruned_search_finds_the_same_steps():
    for faulty, view in list(_injected(range(40)))[:20]:
        assert METHOD.run(view, prune=True).step == faulty.fired()[0][0]


def test_two_faults_need_the_earliest_flip_or_none():
    task = generate_task(3)
    faults = {("researcher", 1): "misread_tool_result", ("verifier", 0): "wrong_number"}
    view = to_view(run(task, faults))
    # No single correction saves this run: both faults are decisive together, so the method says so.
    result = METHOD.run(view, replayer=SandboxReplayer(task.seed, faults))
    assert result.step == -1 and result.details["strategy"].startswith("scan")


class _OnlyAlone:
    """A non-monotone system: correcting step 4 alone succeeds, correcting it with anything else fails."""

    name = "stub"

    def propose(self, trace, index):
        return f"fixed {index}"

    def replay(self, trace, corrections, *, budget=None):
        if budget is not None:
            budget.charge()
        outcome = "success" if set(corrections) == {4} else "failure"
        return ReplayResult(
            continuation=[{"index": min(corrections), "content": "..."}], outcome=outcome, final_answer=""
        )


def _stub_trace() -> TraceView:
    steps = tuple(
        StepView(index=i, agent="a" if i % 2 else "b", kind="message", content=f"m{i}") for i in range(8)
    )
    return TraceView(
        trace_id=0,
        name="stub",
        question="q",
        ground_truth="x",
        outcome="failed",
        steps=steps,
        agents=("b", "a"),
    )


def test_falls_back_to_a_scan_when_the_outcome_is_not_monotone():
    result = METHOD.run(_stub_trace(), replayer=_OnlyAlone())
    assert result.step == 4 and result.agent == "b"
    assert result.details["strategy"] == "scan of single-step corrections"


def test_budget_and_refusals_raise_method_errors():
    with pytest.raises(MethodError, match="budget"):
        METHOD.run(_stub_trace(), replayer=_OnlyAlone(), budget=Budget(max_replays=2))
    with pytest.raises(MethodError, match="not a sandbox run"):
        METHOD.run(_stub_trace())
    clean = to_view(run(generate_task(1)))
    with pytest.raises(MethodError, match="succeeded"):
        METHOD.run(clean)


def test_benchmark_command_reports_its_keys_and_meets_the_targets():
    out = StringIO()
    call_command("sandbox_benchmark", "--runs", "60", "--seed", "2", "--json", stdout=out)
    report = json.loads(out.getvalue())
    for key in (
        "runs",
        "injected",
        "step_accuracy",
        "agent_accuracy",
        "mean_steps",
        "mean_replays",
        "scan_mean_replays",
        "heuristic_step_accuracy",
        "heuristic_agent_accuracy",
    ):
        assert key in report
    assert report["runs"] == 60 and 0 < report["injected"] <= 60
    assert report["step_accuracy"] >= 0.98
    assert report["mean_replays"] <= math.log2(report["mean_steps"]) + 2
    assert report["mean_replays"] < report["scan_mean_replays"]
    again = StringIO()
    call_command("sandbox_benchmark", "--runs", "60", "--seed", "2", "--json", stdout=again)
    assert json.loads(again.getvalue()) == report  # deterministic


@pytest.mark.django_db
def test_sandbox_generate_keeps_broken_runs_labelled_as_injected_and_counterfactual_finds_them(project):
    import io

    from django.core.management import call_command

    from attribution import services as attribution_services
    from attribution.models import Verdict
    from tracing.models import GoldLabel, Trace

    out = io.StringIO()
    args = ("--project", project.name, "--version", "1", "--runs", "6", "--seed", "3")
    call_command("sandbox_generate", *args, stdout=out)
    call_command("sandbox_generate", *args, stdout=out)
    traces = list(Trace.objects.filter(project=project))
    assert traces and len(traces) <= 6  # the second call added nothing
    assert all(t.provenance == "injected" and t.outcome == "failed" for t in traces)
    assert GoldLabel.objects.filter(trace__in=traces, source="injected").count() == len(traces)
    run = attribution_services.run_create(
        project=project, method="counterfactual", trace_ids=[t.pk for t in traces], enqueue=False
    )
    attribution_services.run_execute_inline(run=run)
    for verdict in Verdict.objects.filter(run=run).select_related("trace"):
        gold = verdict.trace.gold_labels.get()
        assert (verdict.agent_name, verdict.step_index) == (gold.agent_name, gold.step_index)
