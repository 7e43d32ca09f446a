"""Sandbox v2: stochastic agents, corrections that are resamples, a replayer that is never told where the fault is,
and a counterfactual search guided by a ranking of the trace."""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from attribution.methods.counterfactual import METHOD as COUNTERFACTUAL
from attribution.methods.heuristic import METHOD as HEURISTIC
from attribution.replay import sandbox_v2
from attribution.replay.base import ReplayError
from attribution.replay.sandbox import generate_task
from attribution.replay.sandbox_v2 import SandboxV2Replayer, parse_name, run, to_view, trace_name
from attribution.replay.sandbox_v2_faults import (
    CATEGORIES,
    SCENARIOS,
    flips,
    generate_cases,
    generate_labelled,
    slips,
    to_parsed,
)
from attribution.taxonomy import CATEGORIES as TAXONOMY

_INJECTED = generate_labelled(
    2 * len(SCENARIOS), 3
)  # every scenario twice (a '+' task skips swapped_arguments)
_NATURAL = generate_labelled(150, 3, "natural")
_TEXT_INVISIBLE = ("wrong_subtask", "handoff_corruption", "recalled_wrong_number")


def _actions(view) -> list[int]:
    return [s.index for s in view.steps if s.agent and s.kind != "tool_result"]


def test_same_seeds_give_identical_runs_and_cases():
    for seed in range(10):
        assert run(generate_task(seed), seed * 7).steps == run(generate_task(seed), seed * 7).steps
    again = generate_labelled(2 * len(SCENARIOS), 3)
    assert [(c.name, c.step, c.agent, c.category) for c in again] == [
        (c.name, c.step, c.agent, c.category) for c in _INJECTED
    ]
    assert [c[1:] for c in generate_cases(40, 3, "natural")] == [
        (c.step, c.agent, c.category) for c in generate_labelled(40, 3, "natural")
    ]


def test_every_scenario_yields_failures_labelled_at_the_earliest_flipping_action():
    assert {c.scenario for c in _INJECTED} == set(SCENARIOS)
    assert set(CATEGORIES.values()) <= set(TAXONOMY)
    for case in _INJECTED + _NATURAL:
        assert case.run.outcome == "failure" and case.step in _actions(case.view)
        assert case.category in TAXONOMY and case.agent == case.view.steps[case.step].agent
        assert flips(case.run, case.step)
        assert not any(flips(case.run, i) for i in _actions(case.view) if i < case.step)
    assert len(_NATURAL) >= 20  # natural failures are common enough at a 4% slip rate


def test_text_invisible_faults_look_like_sound_steps():
    by = {c.scenario: c for c in _INJECTED}
    corrupt = by["handoff_corruption"]
    truth = corrupt.run.steps[corrupt.step]
    # the faulty report says the right value; the planner's next action shows the value it really received
    later = next(s for s in corrupt.run.steps[corrupt.step + 1 :] if s.agent == "planner")
    assert not re.search(r"could not|cannot|error", truth.content)
    assert later.content not in [
        s.content for s in run(corrupt.run.task, corrupt.run.run_seed, {truth.slot: 1}).steps
    ]
    unchecked = by["unchecked_wrong_result"]
    assert "verifier" not in unchecked.view.agents
    omitted = by["omitted_value"]
    assert not re.search(r"\d{4}", omitted.view.steps[omitted.step].content)
    recalled = by["recalled_wrong_number"]
    assert recalled.view.steps[recalled.step + 1].kind != "tool_result"  # no lookup behind the number


def test_two_fault_runs_are_labelled_at_the_decisive_slip():
    twos = [c for c in _INJECTED if c.scenario == "two_faults"]
    assert twos
    for case in twos:
        made = slips(case.run)
        assert len(made) == 2 and case.step in [i for i, _ in made]
        (other,) = [i for i, _ in made if i != case.step]
        assert not flips(case.run, other)  # correcting the other slip alone does not save the run


def test_a_resample_is_usually_but_not_always_sound():
    outcomes = []
    for seed in range(300):
        result = run(generate_task(seed), seed)
        for index, _ in slips(result):
            again = run(result.task, result.run_seed, {result.steps[index].slot: 1})
            outcomes.append(index < len(again.steps) and bool(again.steps[index].slip))
    assert 0 < sum(outcomes) < 0.15 * len(outcomes)


def test_the_replayer_is_built_from_recorded_seeds_only():
    params = list(inspect.signature(SandboxV2Replayer.__init__).parameters)
    assert params == ["self", "task_seed", "run_seed", "cost_per_replay"]
    case = _INJECTED[0]
    view = case.view
    assert parse_name(view.name) == (case.run.task.seed, case.run.run_seed)
    assert view.name == trace_name(case.run.task.seed, case.run.run_seed) and "fault" not in view.name
    from_trace = SandboxV2Replayer.for_trace(view)
    from_seeds = SandboxV2Replayer(*parse_name(view.name))
    for i in _actions(view):
        a, b = from_trace.replay(view, {i: ""}), from_seeds.replay(view, {i: ""})
        assert (a.outcome, a.final_answer, a.continuation) == (b.outcome, b.final_answer, b.continuation)
        assert all(
            set(step) == {"index", "agent", "kind", "content", "speaker", "recipient", "tool_name", "parent"}
            for step in a.continuation
        )  # a replay shows what a trace shows, never a slip
    public = [name for name in dir(from_trace) if not name.startswith("_")]
    assert not [name for name in public if "fault" in name or "slip" in name or "gold" in name]


def test_the_replayer_module_never_imports_the_generator():
    tree = ast.parse(Path(inspect.getfile(sandbox_v2)).read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not [name for name in imported if "faults" in name]
    probe = (
        "import sys, django; django.setup(); import attribution.replay.sandbox_v2; "
        "import attribution.methods.counterfactual; "
        "print('attribution.replay.sandbox_v2_faults' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONPATH": str(Path.cwd()),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert out.stdout.strip() == "False"


def test_it_refuses_written_content_tool_outputs_and_other_traces():
    case = _INJECTED[0]
    view = case.view
    replayer = SandboxV2Replayer.for_trace(view)
    with pytest.raises(ReplayError):
        replayer.replay(view, {case.step: "FINAL ANSWER: 42 (written by a fault writer)"})
    with pytest.raises(ReplayError):
        replayer.replay(view, {next(s.index for s in view.steps if s.kind == "tool_result"): ""})
    with pytest.raises(ReplayError):  # another run's seeds do not reproduce this trace
        SandboxV2Replayer.for_trace(
            to_view(case.run, name=trace_name(case.run.task.seed, case.run.run_seed + 1))
        )


_EXPR = re.compile(r"(-?\d+) ([+-]) (-?\d+)")


def _text_checker(view) -> int:
    """A v1-style reader: blames what the text shows -- a tool error, a refused hand-off, a report that contradicts
    the tool output before it, a calculation that is not the one asked for, a verifier contradicting the tool, an
    answer given before any calculation. Otherwise the final step. (93% of v1's injected failures.)"""
    output, asked, last_action, calculated = None, None, None, False
    for s in view.steps:
        if s.kind == "tool_result":
            if s.content.startswith("error"):
                return s.parent
            output, calculated = s.content, calculated or s.tool_name == "calc"
            continue
        said = s.content.rstrip(".").split()[-1] if s.content.split() else ""
        if re.search(r"\bcannot\b", s.content) and last_action is not None:
            return last_action
        if s.agent == "planner" and (match := _EXPR.search(s.content)):
            asked = match.group(0)
        if s.kind == "tool_call" and s.tool_name == "calc" and asked and asked not in s.content:
            return s.index
        if s.content.startswith("Correction") and output is not None:
            return s.index if f"not {output}" in s.content else last_action
        if s.content.startswith("FINAL ANSWER") and not calculated:
            return s.index
        if (
            s.kind == "message"
            and s.agent != "planner"
            and output is not None
            and "Verified" not in s.content
        ):
            if "could not find" in s.content or said != output:
                return s.index
            output = None
        last_action = s.index
    return len(view.steps) - 1


def test_a_text_checker_that_reads_v1_cannot_read_v2():
    from attribution.replay import sandbox as v1

    v1_cases = [
        f
        for seed in range(120)
        if (f := v1.run(v1.generate_task(seed), v1.inject(seed, 1))).outcome == "failure"
    ]
    v1_hits = sum(_text_checker(v1.to_view(f)) == f.fired()[0][0] for f in v1_cases)
    assert v1_hits >= 0.85 * len(v1_cases)
    cases = _INJECTED + _NATURAL
    hits = sum(_text_checker(c.view) == c.step for c in cases)
    assert hits <= 0.75 * len(cases)
    invisible = [c for c in _INJECTED if c.scenario in _TEXT_INVISIBLE]
    assert sum(_text_checker(c.view) == c.step for c in invisible) <= 0.2 * len(invisible)


def test_counterfactual_with_the_heuristic_ranking_finds_the_gold_step_in_bounded_replays():
    cases = _INJECTED + _NATURAL
    hits = heuristic_hits = 0
    replays, steps = [], []
    for case in cases:
        result = COUNTERFACTUAL.run(case.view)
        hits += (result.step, result.agent) == (case.step, case.agent)
        heuristic_hits += HEURISTIC.run(case.view).step == case.step
        used = len(result.details["replays"])
        assert used <= len(_actions(case.view)) + math.ceil(math.log2(len(_actions(case.view)))) + 1
        replays.append(used)
        steps.append(len(case.view.steps))
    assert hits >= 0.9 * len(cases) and hits > heuristic_hits
    assert sum(replays) / len(replays) <= math.log2(sum(steps) / len(steps)) + 2


def test_the_ranking_decides_where_the_search_corrects():
    cases = _INJECTED[:12]

    def total(ranker_for) -> int:
        return sum(len(COUNTERFACTUAL.run(c.view, ranker=ranker_for(c)).details["replays"]) for c in cases)

    def pointing_at(step_of):
        return lambda case: lambda view: [1.0 if i == step_of(case) else 0.0 for i in range(len(view.steps))]

    right = total(pointing_at(lambda c: c.step))
    wrong = total(pointing_at(lambda c: _actions(c.view)[-1] if c.step != _actions(c.view)[-1] else 0))
    assert right < wrong
    results = [COUNTERFACTUAL.run(c.view, ranker=pointing_at(lambda c: c.step)(c)) for c in cases]
    assert [r.step for r in results] == [c.step for c in cases]
    # a window with a resample that slipped again sends a few searches to the scan; most are settled by the cuts
    assert sum(r.details["strategy"] == "bisection guided by the ranker" for r in results) >= 0.75 * len(
        cases
    )


def test_benchmark_command_reports_v2_keys():
    out = StringIO()
    call_command("sandbox_benchmark", "--version", "2", "--runs", "14", "--seed", "4", "--json", stdout=out)
    report = json.loads(out.getvalue())
    for key in (
        "version",
        "runs",
        "seed",
        "ranker",
        "cases",
        "mean_steps",
        "counterfactual",
        "heuristic",
        "learned",
        "replay_target",
        "scan_mean_replays",
        "step_accuracy_by_kind",
        "by_mode",
        "training",
    ):
        assert key in report
    assert report["version"] == 2 and set(report["by_mode"]) == {"injected", "natural"}
    cf = report["counterfactual"]
    for key in ("step_accuracy", "step_ci", "agent_accuracy", "agent_ci", "mean_replays", "max_replays"):
        assert key in cf
    assert cf["step_ci"][0] <= cf["step_accuracy"] <= cf["step_ci"][1]
    assert cf["step_accuracy"] > report["heuristic"]["step_accuracy"]
    assert report["learned"] is None or "step_accuracy" in report["learned"]
    again = StringIO()
    call_command("sandbox_benchmark", "--version", "2", "--runs", "14", "--seed", "4", "--json", stdout=again)
    assert json.loads(again.getvalue()) == report  # deterministic


def test_parsed_case_carries_the_gold_label_and_no_fault_in_its_name():
    case = next(c for c in _INJECTED if c.scenario == "handoff_corruption")
    parsed = to_parsed(case)
    (gold,) = parsed.gold
    assert (gold.step, gold.agent, gold.category) == (case.step, case.agent, "mast.2.6")
    assert parsed.name == case.name and parsed.outcome == "failed" and parsed.source_format == "sandbox"
    assert parsed.metadata["sandbox2"]["run_seed"] == case.run.run_seed


@pytest.mark.django_db
def test_sandbox_generate_v2_stores_labelled_failures_and_a_run_finds_them(project):
    from attribution import services as attribution_services
    from attribution.models import Verdict
    from tracing.models import GoldLabel, Trace

    out = StringIO()
    for _ in range(2):
        call_command(
            "sandbox_generate",
            "--project",
            project.name,
            "--version",
            "2",
            "--runs",
            "5",
            "--seed",
            "6",
            stdout=out,
        )
    call_command(
        "sandbox_generate",
        "--project",
        project.name,
        "--version",
        "2",
        "--mode",
        "natural",
        "--runs",
        "20",
        "--seed",
        "6",
        stdout=out,
    )
    injected = list(Trace.objects.filter(project=project, provenance="injected"))
    natural = list(Trace.objects.filter(project=project, provenance="generated"))
    assert len(injected) == len(generate_labelled(5, 6)) and natural
    assert GoldLabel.objects.filter(trace__in=injected, source="injected").count() == len(injected)
    assert GoldLabel.objects.filter(trace__in=natural, source="counterfactual").count() == len(natural)
    run = attribution_services.run_create(
        project=project, method="counterfactual", trace_ids=[t.pk for t in injected + natural], enqueue=False
    )
    attribution_services.run_execute_inline(run=run)
    verdicts = list(Verdict.objects.filter(run=run).select_related("trace"))
    assert len(verdicts) == len(injected) + len(natural)
    for verdict in verdicts:
        gold = verdict.trace.gold_labels.get()
        assert (verdict.agent_name, verdict.step_index) == (gold.agent_name, gold.step_index)
