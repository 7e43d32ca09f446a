"""Labelled failures of sandbox v2. This module knows where the agents slipped; the replayer never does.

Injected failures are *selected*, not edited in: for each case the generator picks a scenario (a slip kind, or two
slips of which only one is decisive), then walks run seeds until sample 0 of that run makes exactly the scenario's
slips and fails. Nothing is written into the run that the replayer would have to be told about: the run is what its
seeds make it. Natural failures are runs taken as they come, kept when they fail.

Either way the gold step is counterfactual by definition: the earliest agent action whose lone correction (a
resample, replayed through ``SandboxV2Replayer`` exactly as a method would) turns the run into a success, found by
replaying every action in order. A failure no single correction saves has no gold step and is not kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..methods.base import TraceView
from .sandbox import generate_task
from .sandbox_v2 import AGENTS, SYSTEM_PROMPTS, SandboxV2Replayer, V2Run, run, to_view, trace_name

# Slip kind -> taxonomy code (attribution.taxonomy) of the error it simulates.
CATEGORIES: dict[str, str] = {
    "wrong_subtask": "trail.incorrect_problem_identification",
    "premature_final_answer": "mast.3.1",
    "wrong_handoff": "trail.task_orchestration",
    "swapped_arguments": "action.parameter_error",
    "recalled_wrong_number": "memory.hallucination",
    "wrong_number": "memory.hallucination",
    "misread_tool_result": "reflection.outcome_misinterpretation",
    "omitted_value": "mast.2.4",
    "handoff_corruption": "mast.2.6",
    "wrong_result": "trail.tool_output_misinterpretation",
    "wrong_correction": "mast.3.3",
    "rubber_stamp": "mast.3.2",
}

# What injected runs are selected for, in turn. The first five are the faults text alone cannot reveal: a wrong
# plan step with a consistent run after it, a value left out and defaulted, a hand-off whose symptom shows at the
# planner, a plausible number from memory with no lookup behind it, and a miscalculation nobody checks (the team has
# no verifier); then two slips of which one decides; then v1's kinds.
SCENARIOS = (
    "wrong_subtask",
    "omitted_value",
    "handoff_corruption",
    "recalled_wrong_number",
    "unchecked_wrong_result",
    "two_faults",
    "wrong_number",
    "misread_tool_result",
    "swapped_arguments",
    "premature_final_answer",
    "wrong_handoff",
    "wrong_correction",
)

# Run seeds tried per injected case. The rarest scenario (a calculator slip in a run with no verifier and no other
# slip) comes once in about 110 seeds; this many failing in a row means the task cannot host the scenario.
MAX_ATTEMPTS = 5_000
_SEEDS_PER_TASK = 100_000  # run seeds of task t are t * 100_000 + attempt: distinct across tasks


@dataclass(frozen=True)
class Labelled:
    run: V2Run
    step: int  # the gold step: the earliest action whose lone resample makes the run succeed
    agent: str
    category: str
    kind: str  # the slip at the gold step
    scenario: str  # what the run was selected for, "natural" for natural failures
    mode: str  # injected or natural

    @property
    def name(self) -> str:
        return trace_name(self.run.task.seed, self.run.run_seed)

    @property
    def view(self) -> TraceView:
        return to_view(self.run)

    def as_tuple(self) -> tuple[TraceView, int, str, str]:
        return self.view, self.step, self.agent, self.category


def slips(result: V2Run) -> list[tuple[int, str]]:
    return [(i, s.slip) for i, s in enumerate(result.steps) if s.slip]


def gold_step(result: V2Run) -> int | None:
    """The earliest action whose lone correction flips the failed run to success, None when none does."""
    replayer = SandboxV2Replayer(result.task.seed, result.run_seed)
    view = to_view(result)
    for i, step in enumerate(result.steps):
        if step.agent and replayer.replay(view, {i: ""}).outcome == "success":
            return i
    return None


def flips(result: V2Run, index: int) -> bool:
    replayer = SandboxV2Replayer(result.task.seed, result.run_seed)
    return replayer.replay(to_view(result), {index: ""}).outcome == "success"


def _fits(result: V2Run, scenario: str) -> bool:
    """Sample 0 makes exactly the scenario's slips and the run fails (cheap: no replay)."""
    made = [kind for _, kind in slips(result)]
    if result.outcome != "failure":
        return False
    if scenario == "two_faults":
        return len(made) == 2
    if scenario == "unchecked_wrong_result":
        return made == ["wrong_result"] and not result.verifier
    return made == [scenario]


def _labelled(result: V2Run, scenario: str, mode: str) -> Labelled | None:
    gold = gold_step(result)
    if gold is None:
        return None
    made = slips(result)
    if mode == "injected":
        if gold not in [i for i, _ in made]:
            return None  # the scenario's slip is not what decided this run (its resample slipped again)
        if scenario == "two_faults" and any(i > gold and flips(result, i) for i, _ in made):
            return None  # both slips decisive alone: not the scenario
    kind = result.steps[gold].slip or "none"
    return Labelled(
        run=result,
        step=gold,
        agent=result.steps[gold].agent,
        category=CATEGORIES.get(kind, ""),
        kind=kind,
        scenario=scenario,
        mode=mode,
    )


def inject_case(task_seed: int, scenario: str) -> Labelled | None:
    """The first run seed of the task whose run makes the scenario's slips, labelled; None when none is found."""
    task = generate_task(task_seed)
    if scenario == "swapped_arguments" and task.op == "+":
        return None  # a swapped sum is still right, and a swapped lookup is retried: no run fails of it alone
    for attempt in range(MAX_ATTEMPTS):
        result = run(task, task_seed * _SEEDS_PER_TASK + attempt)
        if _fits(result, scenario) and (case := _labelled(result, scenario, "injected")) is not None:
            return case
    return None


def generate_labelled(n_runs: int, seed: int, mode: str = "injected") -> list[Labelled]:
    """Injected: ``n_runs`` tasks, each with a run selected for the next scenario (a case whose task cannot host
    its scenario is skipped). Natural: ``n_runs`` runs as they come, the labelled failures among them."""
    if mode not in ("injected", "natural"):
        raise ValueError(f"unknown mode {mode!r}: injected or natural")
    out = []
    for i in range(n_runs):
        task_seed = seed * 1_000_000 + i
        if mode == "injected":
            case = inject_case(task_seed, SCENARIOS[i % len(SCENARIOS)])
        else:
            result = run(generate_task(task_seed), task_seed * _SEEDS_PER_TASK + _SEEDS_PER_TASK - 1)
            case = _labelled(result, "natural", "natural") if result.outcome == "failure" else None
        if case is not None:
            out.append(case)
    return out


def generate_cases(n_runs: int, seed: int, mode: str = "injected") -> list[tuple[TraceView, int, str, str]]:
    """(trace view, gold step, gold agent, category) for each labelled failure; no database."""
    return [case.as_tuple() for case in generate_labelled(n_runs, seed, mode)]


def to_parsed(case: Labelled):  # -> ParsedTrace
    from tracing.formats.base import ParsedAgent, ParsedGold, ParsedStep, ParsedTrace

    result = case.run
    steps = [
        ParsedStep(
            speaker=s.speaker,
            agent=s.agent or None,
            kind=s.kind,
            content=s.content,
            recipient=s.recipient,
            tool_name=s.tool_name,
            tool_arguments=s.arguments,
            parent=s.parent,
        )
        for s in result.steps
    ]
    gold = [
        ParsedGold(
            agent=case.agent,
            step=case.step,
            category=case.category,
            confidence=1.0,
            reason=f"{case.mode} {case.kind}: resampling this action alone makes the run succeed, and "
            "no earlier action's does",
        )
    ]
    agents = [ParsedAgent(a, SYSTEM_PROMPTS[a]) for a in AGENTS if a != "verifier" or result.verifier]
    return ParsedTrace(
        name=case.name,
        source_format="sandbox",
        steps=steps,
        agents=agents,
        gold=gold,
        external_id=case.name,
        question=result.task.question,
        ground_truth=result.task.answer,
        outcome="failed",
        metadata={"sandbox2": _metadata(case)},
    )


def _metadata(case: Labelled) -> dict[str, Any]:
    """For people reading the stored trace; the replayer reads the name only."""
    return {
        "task_seed": case.run.task.seed,
        "run_seed": case.run.run_seed,
        "mode": case.mode,
        "scenario": case.scenario,
        "slips": [[i, kind] for i, kind in slips(case.run)],
        "verifier": case.run.verifier,
        "final_answer": case.run.final_answer,
    }
