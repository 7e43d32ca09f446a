"""The offline heuristic method: a valid, explained verdict for every run, and better than guessing on dev data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attribution import taxonomy
from attribution.evaluation import Record, score
from attribution.methods import get_method
from attribution.methods.base import StepView, TraceView
from attribution.methods.heuristic import METHOD
from attribution.methods.heuristic_reason import _score
from attribution.selectors import gold_for, trace_view
from attribution.splits import split_of
from tests.conftest import ROOT, SHARED, import_now, incoming_path, whowhen_files
from tracing.models import JobStatus, Trace

FILES = whowhen_files()
TRAIL_DIR = SHARED / "traces" / "trail" if SHARED.exists() else ROOT / "tests" / "fixtures" / "trail"


def _rel(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _import(project, path: Path) -> Trace:
    (job,) = import_now(project, incoming_path(path, _rel(path)))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return Trace.objects.get(pk=job.trace_ids[0])


def _is_dev(path: Path) -> bool:
    """The split the trace gets once imported: Who&When's external id is its question_ID."""
    document = json.loads(path.read_text())
    return (
        split_of(
            source_format="whowhen",
            external_id=str(document.get("question_ID") or ""),
            name=f"{path.parent.name}/{path.stem}",
        )
        == "dev"
    )


def test_it_is_registered_as_an_offline_method():
    method = get_method("heuristic")
    assert method is METHOD
    assert method.needs_llm is False and method.label


@pytest.mark.django_db
@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_it_returns_a_valid_explained_verdict_for_every_shared_who_and_when_run(project, path):
    trace = _import(project, path)
    view = trace_view(trace)
    result = METHOD.run(view, llm=None)
    n = len(view.steps)
    assert result.agent in view.agents
    assert 0 <= result.step < n
    assert view.steps[result.step].kind not in (
        "tool_result",
        "human",
    )  # blame sits on an action, not its output
    assert len(result.scores) == n and all(0.0 <= s <= 1.0 for s in result.scores)
    assert max(result.scores) == 1.0
    assert 0.0 <= result.confidence <= 1.0
    assert result.reason.strip()
    assert result.category == "" or taxonomy.is_known(result.category)
    assert result.calls == 0 and result.cost == 0.0
    signals = result.details["signals"]
    assert all(0 <= s["step"] < n and s["text"] and s["signal"] for s in signals)
    assert all(
        s["text"] in result.reason for s in signals if s["signal"] != "ancestor"
    )  # every signal is told
    assert all(0 <= i < n for i in result.details["ancestors"])


@pytest.mark.django_db
@pytest.mark.parametrize("path", sorted(TRAIL_DIR.rglob("*.trace.json")), ids=lambda p: p.name.split(".")[0])
def test_it_returns_a_valid_verdict_for_a_trail_span_tree(project, path):
    (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    view = trace_view(Trace.objects.get(pk=job.trace_ids[0]))
    result = METHOD.run(view, llm=None)
    assert result.agent in view.agents and 0 <= result.step < len(view.steps)
    assert view.steps[result.step].kind != "tool_result"
    assert len(result.scores) == len(view.steps) and result.reason


def _dev_score(project, subset: str) -> dict:
    records = []
    for path in (p for p in FILES if p.parent.name == subset and _is_dev(p)):
        trace = _import(project, path)
        assert (
            split_of(source_format=trace.source_format, external_id=trace.external_id, name=trace.name)
            == "dev"
        )
        view = trace_view(trace)
        gold = gold_for(trace)
        result = METHOD.run(view, llm=None)
        records.append(
            Record(
                pred_agent=result.agent,
                pred_step=result.step,
                gold_agent=gold.agent.name if gold.agent else gold.agent_name,
                gold_step=gold.step_index,
                n_steps=len(view.steps),
                agents=view.agents,
            )
        )
    return score(records)


# Measured on the dev split (27 Hand-Crafted, 53 Algorithm-Generated runs): agent 0.667 / 0.679 against a majority
# baseline of 0.593 / 0.113 and a random one of 0.279 / 0.291; step 0.370 / 0.509. The assertions keep a margin
# below those figures, so a change that costs a run or two still passes and one that loses the edge does not.
@pytest.mark.skipif(not SHARED.exists(), reason="needs the shared Who&When collection")
@pytest.mark.django_db
def test_on_hand_crafted_dev_runs_it_names_the_agent_better_than_random_and_majority(project):
    result = _dev_score(project, "Hand-Crafted")
    assert result["n"] == 27
    baselines = result["baselines"]
    assert result["agent_accuracy"] >= baselines["majority"]["agent"] + 0.03
    assert result["agent_accuracy"] >= baselines["random"]["agent"] + 0.3
    assert result["step_accuracy"] >= baselines["majority"]["step"] + 0.1


@pytest.mark.skipif(not SHARED.exists(), reason="needs the shared Who&When collection")
@pytest.mark.django_db
def test_on_algorithm_generated_dev_runs_it_names_the_agent_better_than_random_and_majority(project):
    result = _dev_score(project, "Algorithm-Generated")
    assert result["n"] == 53
    baselines = result["baselines"]
    assert result["agent_accuracy"] >= baselines["majority"]["agent"] + 0.4
    assert result["agent_accuracy"] >= baselines["random"]["agent"] + 0.3
    assert result["step_accuracy"] >= baselines["majority"]["step"] + 0.15


@pytest.mark.django_db
def test_the_same_trace_gets_the_same_verdict_every_time(project):
    view = trace_view(_import(project, max(FILES, key=lambda p: p.stat().st_size)))
    first, second = METHOD.run(view, llm=None), METHOD.run(view, llm=None)
    assert (
        first.agent,
        first.step,
        first.confidence,
        first.reason,
        first.category,
        first.scores,
        first.details,
    ) == (
        second.agent,
        second.step,
        second.confidence,
        second.reason,
        second.category,
        second.scores,
        second.details,
    )


# --- hand-made runs: each signal, and where the blame lands ---------------------------------------------------------


def _trace(*steps: tuple[str, str, str], ground_truth: str = "", question: str = "Task?") -> TraceView:
    views = tuple(
        StepView(index=i, agent=agent, kind=kind, content=content)
        for i, (agent, kind, content) in enumerate(steps)
    )
    agents = tuple(dict.fromkeys(s.agent for s in views if s.agent))
    return TraceView(
        trace_id=1,
        name="hand-made",
        question=question,
        ground_truth=ground_truth,
        outcome="failed",
        steps=views,
        agents=agents,
    )


def _signals(result) -> set[tuple[int, str]]:
    return {(s["step"], s["signal"]) for s in result.details["signals"]}


def test_a_terminal_error_is_charged_to_the_agent_whose_code_produced_it():
    trace = _trace(
        ("Planner", "message", "Plan: compute the mean of the column."),
        ("Coder", "message", "```python\nimport pandas as pd\nprint(pd.read_csv('x.csv').mean())\n```"),
        (
            "Terminal",
            "tool_result",
            "exitcode: 1 (execution failed)\nCode output: Traceback (most recent "
            "call last):\nFileNotFoundError: x.csv",
        ),
        ("Planner", "message", "TERMINATE"),
    )
    result = METHOD.run(trace, llm=None)
    assert (result.agent, result.step) == ("Coder", 1)
    assert (1, "tool_error") in _signals(result) and (1, "first_code") in _signals(result)
    assert "step 1: tool error 'exitcode: 1' in its output (step 2)" in result.reason
    assert result.category == "system.tool_execution_error"
    assert (3, "premature_termination") in _signals(result)  # it ends the run over an unresolved error


def test_with_the_ground_truth_it_blames_the_step_that_first_introduced_the_wrong_answer():
    trace = _trace(
        ("Researcher", "message", "Let me look this up."),
        ("Researcher", "message", "According to the listing the price was $5,200,000."),
        ("Checker", "message", "I confirm 5,200,000 is the highest price."),
        ("Checker", "message", "The answer is 5200000. TERMINATE"),
        ground_truth="3080000",
    )
    result = METHOD.run(trace, llm=None)
    assert (result.agent, result.step) == ("Researcher", 1)
    assert (1, "wrong_value") in _signals(result) and (1, "handover") in _signals(result)
    assert (
        "first appearance of '5200000'" in result.reason and "the ground truth is '3080000'" in result.reason
    )
    assert "Checker took it up at step 2" in result.reason
    blind = METHOD.run(trace, llm=None, with_ground_truth=False)
    assert (1, "answer_origin") in _signals(blind) and not any(s == "wrong_value" for _, s in _signals(blind))
    assert "3080000" not in blind.reason


def test_the_earliest_of_equally_suspicious_steps_is_the_verdict():
    # Two coders each write code whose run fails; the first failure is the decisive one.
    code = "```python\nprint(undefined_name)\n```"
    error = "exitcode: 1 (execution failed)\nCode output: NameError: name 'undefined_name' is not defined"
    trace = _trace(
        ("Lead", "message", "Plan."),
        ("CoderA", "message", code),
        ("Terminal", "tool_result", error),
        ("CoderB", "message", code),
        ("Terminal", "tool_result", error),
    )
    result = METHOD.run(trace, llm=None)
    assert (result.agent, result.step) == ("CoderA", 1)
    assert result.scores[1] >= result.scores[3]


def test_a_trace_without_steps_gets_an_empty_verdict_rather_than_an_error():
    result = METHOD.run(_trace(), llm=None)
    assert result.step == 0 and result.reason


def test_the_why_names_the_blamed_step_first_then_the_runners_up_with_their_scores():
    # The bug this guards: "WebSurfer at step 1" with a Why that opened on another step's error.
    trace = _trace(
        ("Orchestrator", "message", "WebSurfer, please find the opening year of the museum."),
        ("WebSurfer", "message", "Let's assume the museum opened in 1901 (placeholder)."),
        ("Orchestrator", "message", "Thanks. Coder, compute the age."),
        ("Coder", "message", "The tool crashed: Traceback (most recent call last): KeyError: 'year'"),
        ("Orchestrator", "message", "FINAL ANSWER: 1901"),
        ground_truth="1897",
    )
    result = METHOD.run(trace, llm=None)
    why = result.reason
    assert why.startswith(f"Blamed step {result.step} ({result.agent}), score 1.00. Why: ")
    own = [s for s in result.details["signals"] if s["step"] == result.step and s["signal"] != "ancestor"]
    assert own, "the blamed step carries the signals that put it first"
    head = why.split("Runners-up:")[0]
    assert all(s["text"] in head for s in own)  # the blamed step's own signals come before any runner-up
    assert "position prior: " in head
    runners = why.split("Runners-up: ")[1].split("Other signals:")[0]
    assert f"step {result.step} (" not in runners
    other = max(
        (i for i in range(len(trace.steps)) if i != result.step and trace.steps[i].kind == "message"),
        key=lambda i: result.scores[i],
    )
    assert f"step {other} ({trace.steps[other].agent}) score {_score(result.scores[other])}" in runners
    # A signal on another step is still told, but after the verdict's own account, never as its reason.
    error = next(s for s in result.details["signals"] if s["signal"] == "runtime_error")
    assert error["step"] != result.step and why.index(error["text"]) > why.index("Runners-up:")


def test_a_step_with_no_signal_is_explained_by_its_position_prior():
    trace = _trace(("Alice", "message", "Hello there."), ("Bob", "message", "Hi."))
    result = METHOD.run(trace, llm=None)
    assert "no signal fired on it; chosen by the position prior alone" in result.reason
    assert result.reason.startswith(f"Blamed step {result.step} ({result.agent})")
