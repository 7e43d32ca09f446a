"""The sandbox multi-agent system: determinism, sticky faults, conversions, and import as an ordinary trace."""

from __future__ import annotations

import pytest

from attribution.replay.base import Budget, BudgetExhausted, ReplayError
from attribution.replay.sandbox import (
    FAULT_KINDS,
    FAULTS_BY_ROLE,
    SandboxReplayer,
    generate_task,
    inject,
    parse_name,
    run,
    to_parsed,
    to_view,
    trace_name,
    turn_keys,
)
from attribution.taxonomy import CATEGORIES


def _index(result, agent: str, turn: int) -> int:
    return next(i for i, s in enumerate(result.steps) if s.agent == agent and s.turn == turn)


def test_same_seed_gives_identical_tasks_and_runs():
    for seed in range(20):
        assert generate_task(seed) == generate_task(seed)
        first, second = run(generate_task(seed)), run(generate_task(seed))
        assert first.steps == second.steps and first.final_answer == second.final_answer
        assert inject(seed, 3) == inject(seed, 3)
        faults = inject(seed, 3)
        assert run(generate_task(seed), faults).steps == run(generate_task(seed), faults).steps
    assert generate_task(1).question != generate_task(2).question


def test_clean_runs_succeed_and_use_every_agent():
    for seed in range(50):
        task = generate_task(seed)
        result = run(task)
        assert result.outcome == "success" and result.final_answer == task.answer
        assert {s.agent for s in result.steps if s.agent} == {
            "planner",
            "researcher",
            "calculator",
            "verifier",
        }
        assert result.steps[-1].content == f"FINAL ANSWER: {task.answer}"
        assert all(s.fault == "" for s in result.steps)


def test_fault_kinds_map_to_taxonomy_codes_and_every_kind_occurs():
    assert set(FAULT_KINDS.values()) <= set(CATEGORIES)
    assert {k for kinds in FAULTS_BY_ROLE.values() for k in kinds} == set(FAULT_KINDS)
    seen = {next(iter(inject(seed, 0).values())) for seed in range(200)}
    assert seen == set(FAULT_KINDS)


def test_each_fault_kind_perturbs_its_step():
    task = generate_task(3)  # template: population of the twin of X plus the founding year of Y
    clean = run(task)
    cases = {
        ("researcher", 3): "wrong_number",
        ("researcher", 1): "misread_tool_result",
        ("researcher", 5): "dropped_tool_result",
        ("researcher", 2): "swapped_arguments",
        ("planner", 1): "premature_final_answer",
        ("planner", 2): "wrong_handoff",
    }
    for key, kind in cases.items():
        faulty = run(task, {key: kind})
        assert faulty.outcome == "failure", kind
        index = _index(faulty, *key)
        assert faulty.steps[index].fault == kind
        assert faulty.steps[:index] == clean.steps[:index]  # nothing changes before the fault
        assert faulty.steps[index].content != clean.steps[index].content


def test_a_miscomputed_result_is_caught_by_the_verifier():
    task = generate_task(3)
    masked = run(task, {("calculator", 1): "wrong_number"})
    assert masked.outcome == "success"
    assert masked.fired() and "Correction" in masked.steps[_index(masked, "verifier", 0)].content


def test_fault_is_sticky_unless_its_own_step_is_corrected():
    task = generate_task(3)
    faults = {("researcher", 3): "wrong_number"}
    faulty = run(task, faults)
    fault_at = _index(faulty, "researcher", 3)
    view = to_view(faulty)
    replayer = SandboxReplayer(task.seed, faults)

    other = replayer.replay(view, {0: replayer.propose(view, 0)})
    assert other.outcome == "failure"
    assert other.continuation[0]["index"] == 0
    assert other.continuation[fault_at]["content"] == faulty.steps[fault_at].content  # the same faulty report
    several = replayer.replay(view, {i: "" for i in turn_keys(view.steps) if i != fault_at})
    assert several.outcome == "failure"

    own = replayer.replay(view, {fault_at: replayer.propose(view, fault_at)})
    assert own.outcome == "success" and own.final_answer == task.answer
    assert own.continuation[0]["index"] == fault_at
    assert own.continuation[0]["content"] == run(task).steps[fault_at].content
    # correcting a sound step changes nothing at all
    assert run(task, faults, {("planner", 0)}).steps == faulty.steps


def test_correction_follows_the_agent_turn_when_indices_shift():
    task = generate_task(3)
    # A wrong hand-off adds a refusal, shifting every later index; a second fault sits after it.
    faults = {("planner", 0): "wrong_handoff", ("verifier", 0): "wrong_number"}
    faulty = run(task, faults)
    view = to_view(faulty)
    replayer = SandboxReplayer(task.seed, faults)
    handoff, verify = _index(faulty, "planner", 0), _index(faulty, "verifier", 0)
    assert replayer.replay(view, {handoff: ""}).outcome == "failure"  # the verifier's fault persists
    assert replayer.replay(view, {verify: ""}).outcome == "failure"  # the hand-off's fault persists
    both = replayer.replay(view, {handoff: "", verify: ""})
    assert both.outcome == "success" and both.final_answer == task.answer
    with pytest.raises(ReplayError):
        tool_output = next(i for i, s in enumerate(faulty.steps) if s.kind == "tool_result")
        replayer.replay(view, {tool_output: ""})  # tool output is not an action


def test_budget_stops_replays():
    task = generate_task(3)
    faults = {("researcher", 3): "wrong_number"}
    view = to_view(run(task, faults))
    replayer = SandboxReplayer(task.seed, faults)
    budget = Budget(max_replays=1)
    replayer.replay(view, {0: ""}, budget=budget)
    with pytest.raises(BudgetExhausted):
        replayer.replay(view, {0: ""}, budget=budget)
    assert budget.replays == 1


def test_name_rebuilds_the_replayer_and_checks_the_trace():
    faults = inject(11, 4)
    faulty = run(generate_task(11), faults)
    view = to_view(faulty, fault_seed=4)
    assert view.name == trace_name(11, 4) == "sandbox/task-11/fault-4"
    assert parse_name(view.name) == (11, faults)
    assert parse_name("Hand-Crafted/1.json") is None
    replayer = SandboxReplayer.for_trace(view)
    assert replayer.faults == faults
    with pytest.raises(ReplayError):
        SandboxReplayer.for_trace(to_view(faulty, name=trace_name(12, 4)))  # does not reproduce


def test_parsed_trace_carries_outcome_question_metadata_and_gold():
    faults = {("researcher", 3): "wrong_number"}
    faulty = run(generate_task(3), faults)
    parsed = to_parsed(faulty)
    assert parsed.source_format == "sandbox" and parsed.outcome == "failed"
    assert parsed.question == faulty.task.question and parsed.ground_truth == faulty.task.answer
    assert parsed.metadata["sandbox"]["task_seed"] == 3
    assert parsed.metadata["sandbox"]["faults"] == [["researcher", 3, "wrong_number"]]
    (gold,) = parsed.gold
    assert (gold.step, gold.agent, gold.category) == (
        _index(faulty, "researcher", 3),
        "researcher",
        "memory.hallucination",
    )
    assert to_parsed(run(generate_task(3))).gold == []
    tool_result = next(s for s in parsed.steps if s.kind == "tool_result")
    assert tool_result.agent is None and tool_result.parent is not None


@pytest.mark.django_db
def test_imported_sandbox_run_shows_the_gold_label_on_the_faulty_step(project):
    from attribution.methods.counterfactual import METHOD
    from attribution.selectors import trace_view
    from tracing.models import GoldLabel, Step
    from tracing.services import trace_create_from_parsed

    seed, fault_seed = 7, 2
    faults = inject(seed, fault_seed)
    faulty = run(generate_task(seed), faults)
    assert faulty.outcome == "failure"
    trace = trace_create_from_parsed(
        project=project, upload=None, ordinal=0, parsed=to_parsed(faulty, fault_seed=fault_seed)
    )
    index, step = faulty.fired()[0]
    label = GoldLabel.objects.get(trace=trace)
    assert (label.step_index, label.agent_name, label.category) == (
        index,
        step.agent,
        FAULT_KINDS[step.fault],
    )
    assert Step.objects.get(trace=trace, index=index).agent.name == step.agent
    assert (
        trace.source_format == "sandbox"
        and trace.outcome == "failed"
        and trace.step_count == len(faulty.steps)
    )
    assert trace.metadata["sandbox"]["fault_seed"] == fault_seed
    # the stored trace replays: the method finds the labelled step from the database's view of it
    result = METHOD.run(trace_view(trace))
    assert (result.step, result.agent) == (label.step_index, label.agent_name)
