"""Sandbox v2: the sandbox's multi-agent system with stochastic agents, whose counterfactuals have to be earned.

In v1 the replayer rebuilt the injected fault from the trace's name and "corrected" a step by switching that fault
off, so a correction was right by construction. Here every agent is a stochastic policy: what it does at an action
*slot* (which lookup it is working on, and which of its actions for it) is drawn from a sample seeded by
``(run seed, slot, sample number)``. The recorded run is sample 0 everywhere; an agent slips -- makes one of the
mistakes its role allows (``SLIPS``) -- when its draw falls under ``SLIP_RATE``. A correction re-executes one
action with sample 1: a fresh draw, usually sound and sometimes wrong again, and everything after it is recomputed.

What the replayer knows is what a real system records: the task (environment) seed and the run's sampler seed, both
in the trace's name ``sandbox2/task-<task seed>/run-<run seed>``. It has no fault map and no gold label, and no
method of it says which action slipped; the generator of labelled failures (``sandbox_v2_faults``) finds those by
replaying, and this module never imports it.

Slots, not per-agent turn counts, key the draws, and the structural choices (does the team have a verifier, does
the researcher answer a lookup from memory) are drawn per run rather than per sample: resampling a sound action
then cannot shift or re-key the draws of later actions, so it changes nothing but its own wording (or, rarely, adds
a slip of its own).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..methods.base import StepView, TraceView
from .base import Budget, ReplayError, ReplayResult
from .sandbox import TRACE_OUTCOME, Task, generate_task

AGENTS = ("planner", "researcher", "calculator", "verifier")

# An agent slips at 4% of its actions (sample 0 and resamples alike): about 15 actions a run, so roughly a third of
# the runs go wrong on their own, and a correction is itself wrong at one action in 25.
SLIP_RATE = 0.04
RECALL_RATE = (
    0.2  # share of lookups the researcher answers from memory, without the tool (right unless it slips)
)
VERIFIER_RATE = 0.6  # share of runs whose team has a verifier; in the others nothing checks the calculator

# What each kind of action can get wrong. A slip that cannot change the action (a rubber stamp on a right result)
# is not recorded.
SLIPS: dict[str, tuple[str, ...]] = {
    "delegate_lookup": ("wrong_subtask", "premature_final_answer", "wrong_handoff"),
    "delegate_calc": ("premature_final_answer", "wrong_handoff"),
    "lookup_call": ("swapped_arguments",),
    "recall": ("recalled_wrong_number",),
    "report_number": ("wrong_number", "misread_tool_result", "omitted_value", "handoff_corruption"),
    "report_city": ("misread_tool_result", "omitted_value", "handoff_corruption"),
    "calc_call": ("swapped_arguments",),
    "calc_report": ("wrong_result",),
    "verify": ("wrong_correction", "rubber_stamp"),
    "final": ("wrong_number",),
    "refuse": (),
}

SYSTEM_PROMPTS = {
    "planner": "You are the planner. Break the question into lookups and one calculation, hand each to the right "
    "agent, and state the final answer as 'FINAL ANSWER: <number>'.",
    "researcher": "You are the researcher. Find facts about cities, with the lookup tool when you are unsure, and "
    "report them to the planner.",
    "calculator": "You are the calculator. Use the calc tool to evaluate the arithmetic you are given.",
    "verifier": "You are the verifier. Recheck the calculator's arithmetic and state the verified result.",
}

# The planner's stand-in for a value it did not get (it says nothing about it: the error propagates quietly).
DEFAULTS = {"population": 100_000, "founded": 1500}
_ATTRIBUTES = {"population": "population", "founded": "founding year", "twin": "twin city"}
NAME = re.compile(r"^sandbox2/task-(\d+)/run-(\d+)$")

Slot = tuple[Any, ...]


# --- draws -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draw:
    slip: float  # slips when below SLIP_RATE
    kind: float  # which of the role's slips
    style: float  # which wording
    alt: float  # how a wrong value is wrong


@lru_cache(maxsize=1 << 16)  # replays of one run ask for the same draws again and again
def draw(run_seed: int, slot: Slot, sample: int) -> Draw:
    rng = random.Random("sandbox2/" + "/".join(str(part) for part in (run_seed, *slot, sample)))
    return Draw(rng.random(), rng.random(), rng.random(), rng.random())


def has_verifier(run_seed: int) -> bool:
    return random.Random(f"sandbox2/{run_seed}/team").random() < VERIFIER_RATE


def recalls(run_seed: int, lookup: int) -> bool:
    """Whether the researcher answers this lookup from memory (a disposition of the run, not of a sample)."""
    return random.Random(f"sandbox2/{run_seed}/recall/{lookup}").random() < RECALL_RATE


def _pick(options: list[str] | tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def plausible(value: Any, u: float, kb: dict[str, dict[str, Any]]) -> Any:
    """A wrong value that looks right: a number off in one of its leading digits, or another city of the world."""
    if isinstance(value, int):
        scale = 10 ** max(0, len(str(abs(value))) - 3)
        delta = (1 + int(u * 9)) * scale
        return value - delta if int(u * 1000) % 2 else value + delta
    names = [n for n in sorted(kb) if n != value]
    return _pick(names, u) if names else value


def misread(value: Any, kb: dict[str, dict[str, Any]]) -> Any:
    """Two digits transposed, or the next city in alphabetical order (v1's misreading)."""
    if isinstance(value, int):
        digits = str(value)
        swapped = int(digits[:-2] + digits[-1] + digits[-2])
        return swapped if swapped != value else value + 9
    names = sorted(kb)
    return names[(names.index(value) + 1) % len(names)] if value in kb else value


# --- runs --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V2Step:
    agent: str  # "" for tool output
    kind: str  # message, tool_call, tool_result
    content: str
    speaker: str
    recipient: str = ""
    tool_name: str = ""
    arguments: dict[str, Any] | None = None
    parent: int | None = None
    slot: Slot = ()  # the action's slot; () for tool output
    role: str = ""
    slip: str = ""  # the slip that shaped this action, "" when it was sound


@dataclass
class V2Run:
    task: Task
    run_seed: int
    resamples: dict[Slot, int]
    verifier: bool
    steps: list[V2Step] = field(default_factory=list)
    final_answer: str = ""
    outcome: str = "unknown"


class _Engine:
    def __init__(self, task: Task, run_seed: int, resamples: dict[Slot, int]) -> None:
        self.task = task
        self.kb = task.kb
        self.run_seed = run_seed
        self.resamples = resamples
        self.verifier = has_verifier(run_seed)
        self.steps: list[V2Step] = []

    def act(self, slot: Slot, role: str) -> tuple[Draw, str]:
        """The draw for an action and the slip it makes in this role ("" when it acts soundly)."""
        d = draw(self.run_seed, slot, self.resamples.get(slot, 0))
        kinds = SLIPS[role]
        return d, (_pick(kinds, d.kind) if kinds and d.slip < SLIP_RATE else "")

    def emit(
        self,
        agent: str,
        kind: str,
        content: str,
        *,
        slot: Slot = (),
        role: str = "",
        slip: str = "",
        speaker: str = "",
        **extra: Any,
    ) -> int:
        self.steps.append(
            V2Step(
                agent=agent,
                kind=kind,
                content=content,
                speaker=speaker or agent,
                slot=slot,
                role=role,
                slip=slip,
                **extra,
            )
        )
        return len(self.steps) - 1

    # -- the planner --

    def run(self) -> str:
        task = self.task
        values: list[Any] = []
        asked: list[Any] = []  # the city each lookup was about, the planner's stand-in for a missing twin
        for j, lookup in enumerate(task.lookups):
            city = lookup.city if lookup.ref < 0 else _city(values[lookup.ref], asked[lookup.ref])
            attribute = lookup.attribute
            slot = ("planner", "lookup", j)
            d, slip = self.act(slot, "delegate_lookup")
            if slip == "premature_final_answer":
                return self.final_now(values, slot, slip)
            if slip == "wrong_subtask":
                attribute, city = self.misplan(lookup, city)
            target = "calculator" if slip == "wrong_handoff" else "researcher"
            what = f"the {_ATTRIBUTES[attribute]} of {city}"
            wording = [
                f"{target.capitalize()}, please look up {what}.",
                f"{target.capitalize()}: I need {what}.",
                f"Next, {what}. {target.capitalize()}, can you find it?",
            ]
            self.emit(
                "planner",
                "message",
                _pick(wording, d.style),
                recipient=target,
                slot=slot,
                role="delegate_lookup",
                slip=slip,
            )
            asked.append(city)
            if target != "researcher":
                self.emit(
                    target,
                    "message",
                    f"I only evaluate arithmetic; I cannot look up {what}.",
                    recipient="planner",
                    slot=("calculator", "refuse", j),
                    role="refuse",
                )
                values.append(None)
                continue
            values.append(self.research(j, attribute, city))
        a, b = (_number(values[i], task.lookups[i].attribute) for i in task.operands)
        return self.calculate(a, b)

    def misplan(self, lookup: Any, city: Any) -> tuple[str, Any]:
        """The wrong sub-task: the other number of the right city, or the twin of the question's other city."""
        if lookup.attribute != "twin":
            return ("founded" if lookup.attribute == "population" else "population"), city
        named = [other.city for other in self.task.lookups if other.city]
        others = [c for c in named if c != city]
        return "twin", (others[0] if others else city)

    def final_now(self, values: list[Any], slot: Slot, slip: str) -> str:
        """A premature final answer: the last number known so far, or 'unknown'."""
        numbers = [v for v in values if isinstance(v, int)]
        answer = str(numbers[-1]) if numbers else "unknown"
        self.emit("planner", "message", f"FINAL ANSWER: {answer}", slot=slot, role="final", slip=slip)
        return answer

    # -- the researcher --

    def research(self, j: int, attribute: str, city: Any) -> Any:
        """The value the researcher hands the planner (None when it gives none)."""
        truth = self.kb.get(city, {}).get(attribute)
        name = _ATTRIBUTES[attribute]
        if recalls(self.run_seed, j):
            slot = ("researcher", j, "recall")
            d, slip = self.act(slot, "recall")
            value = plausible(truth, d.alt, self.kb) if slip and truth is not None else truth
            wording = [
                f"From memory: the {name} of {city} is {value}.",
                f"The {name} of {city} is {value}.",
                f"I know this one: {city}'s {name} is {value}.",
            ]
            content = _pick(wording, d.style) if value is not None else f"I do not know the {name} of {city}."
            self.emit(
                "researcher",
                "message",
                content,
                recipient="planner",
                slot=slot,
                role="recall",
                slip=slip if truth is not None else "",
            )
            return value
        seen = self.lookup(j, "call", attribute, city)
        if seen is None:  # a failed lookup is retried once, as a fresh action
            seen = self.lookup(j, "retry", attribute, city)
        role = "report_city" if attribute == "twin" else "report_number"
        slot = ("researcher", j, "report")
        d, slip = self.act(slot, role)
        if seen is None:
            slip = ""
        said = handed = seen
        if slip in ("wrong_number", "misread_tool_result"):
            said = handed = (
                plausible(seen, d.alt, self.kb) if slip == "wrong_number" else misread(seen, self.kb)
            )
        elif slip == "omitted_value":
            said = handed = None
        elif slip == "handoff_corruption":  # the prose is right; what the planner receives is not
            handed = plausible(seen, d.alt, self.kb)
        if seen is None:
            content = f"I could not find the {name} of {city}."
        elif said is None:
            content = _pick(
                [
                    f"I found {city} in the records and checked its {name}.",
                    f"Done: looked up the {name} of {city}.",
                ],
                d.style,
            )
        else:
            content = _pick(
                [
                    f"The {name} of {city} is {said}.",
                    f"Found it: {city}'s {name} is {said}.",
                    f"According to the lookup, the {name} of {city} is {said}.",
                ],
                d.style,
            )
        self.emit("researcher", "message", content, recipient="planner", slot=slot, role=role, slip=slip)
        return handed

    def lookup(self, j: int, attempt: str, attribute: str, city: Any) -> Any:
        slot = ("researcher", j, attempt)
        _, slip = self.act(slot, "lookup_call")
        args = {"city": str(city), "attribute": attribute}
        if slip == "swapped_arguments":
            args = {"city": attribute, "attribute": str(city)}
        call = self.emit(
            "researcher",
            "tool_call",
            f"lookup(city={args['city']!r}, attribute={args['attribute']!r})",
            tool_name="lookup",
            arguments=args,
            slot=slot,
            role="lookup_call",
            slip=slip,
        )
        record = self.kb.get(args["city"])
        result = record.get(args["attribute"]) if record else None
        if result is not None:
            text = str(result)
        elif record is None:
            text = f"error: no city named {args['city']!r}"
        else:
            text = f"error: no attribute {args['attribute']!r}"
        self.emit("", "tool_result", text, speaker="lookup", tool_name="lookup", parent=call)
        return result

    # -- the calculator, the verifier and the answer --

    def calculate(self, a: int, b: int) -> str:
        op = self.task.op
        slot = ("planner", "calc")
        d, slip = self.act(slot, "delegate_calc")
        if slip == "premature_final_answer":
            return self.final_now([a, b], slot, slip)
        target = "researcher" if slip == "wrong_handoff" else "calculator"
        then = " and pass the result to the verifier" if self.verifier and target == "calculator" else ""
        wording = [
            f"{target.capitalize()}, please compute {a} {op} {b}{then}.",
            f"{target.capitalize()}: work out {a} {op} {b}{then}.",
        ]
        self.emit(
            "planner",
            "message",
            _pick(wording, d.style),
            recipient=target,
            slot=slot,
            role="delegate_calc",
            slip=slip,
        )
        if target != "calculator":
            self.emit(
                "researcher",
                "message",
                f"I only look up facts; I cannot compute {a} {op} {b}.",
                recipient="planner",
                slot=("researcher", "refuse"),
                role="refuse",
            )
            return self.final(None)
        slot = ("calculator", "call")
        d, slip = self.act(slot, "calc_call")
        x, y = (b, a) if slip == "swapped_arguments" else (a, b)
        call = self.emit(
            "calculator",
            "tool_call",
            f"calc(expression='{x} {op} {y}')",
            tool_name="calc",
            arguments={"expression": f"{x} {op} {y}"},
            slot=slot,
            role="calc_call",
            slip=slip,
        )
        result = x + y if op == "+" else x - y
        self.emit("", "tool_result", str(result), speaker="calc", tool_name="calc", parent=call)
        slot = ("calculator", "report")
        d, slip = self.act(slot, "calc_report")
        reported = plausible(result, d.alt, self.kb) if slip == "wrong_result" else result
        to = "verifier" if self.verifier else "planner"
        self.emit(
            "calculator",
            "message",
            _pick([f"The result is {reported}.", f"That comes to {reported}."], d.style),
            recipient=to,
            slot=slot,
            role="calc_report",
            slip=slip,
        )
        return self.final(self.verify(x, y, result, reported) if self.verifier else reported)

    def verify(self, x: int, y: int, result: int, reported: int) -> int:
        slot = ("verifier", "verify")
        d, slip = self.act(slot, "verify")
        op = self.task.op
        checked = result
        if slip == "wrong_correction":
            checked = plausible(result, d.alt, self.kb)
        elif slip == "rubber_stamp":
            checked = reported
            slip = slip if reported != result else ""  # approving a right result unchecked changes nothing
        content = (
            f"Verified: {x} {op} {y} = {checked}."
            if checked == reported
            else f"Correction: {x} {op} {y} = {checked}, not {reported}."
        )
        self.emit("verifier", "message", content, recipient="planner", slot=slot, role="verify", slip=slip)
        return checked

    def final(self, value: int | None) -> str:
        slot = ("planner", "final")
        d, slip = self.act(slot, "final")
        if value is not None and slip == "wrong_number":
            value = plausible(value, d.alt, self.kb)
        elif value is None:
            slip = ""
        answer = str(value) if value is not None else "unknown"
        self.emit("planner", "message", f"FINAL ANSWER: {answer}", slot=slot, role="final", slip=slip)
        return answer


def _number(value: Any, attribute: str) -> int:
    return value if isinstance(value, int) else DEFAULTS.get(attribute, 0)


def _city(value: Any, asked: Any) -> Any:
    """A twin the planner did not get: it carries on with the city it asked about."""
    return value if isinstance(value, str) else asked


def run(task: Task, run_seed: int, resamples: dict[Slot, int] | None = None) -> V2Run:
    """Run the system on ``task`` with the sampler seeded by ``run_seed``; ``resamples`` ({slot: sample number})
    re-executes those actions with another sample. Pure and deterministic."""
    resamples = dict(resamples or {})
    engine = _Engine(task, run_seed, resamples)
    answer = engine.run()
    return V2Run(
        task=task,
        run_seed=run_seed,
        resamples=resamples,
        verifier=engine.verifier,
        steps=engine.steps,
        final_answer=answer,
        outcome="success" if answer == task.answer else "failure",
    )


def trace_name(task_seed: int, run_seed: int) -> str:
    return f"sandbox2/task-{task_seed}/run-{run_seed}"


def parse_name(name: str) -> tuple[int, int] | None:
    """(task seed, run seed) for a v2 sandbox trace name, None for any other name."""
    match = NAME.match(name or "")
    return (int(match[1]), int(match[2])) if match else None


# --- conversions -------------------------------------------------------------------------------------------------------


def to_view(result: V2Run, name: str | None = None, trace_id: int = 0) -> TraceView:
    steps = tuple(
        StepView(
            index=i,
            agent=s.agent,
            kind=s.kind,
            content=s.content,
            speaker=s.speaker,
            recipient=s.recipient,
            tool_name=s.tool_name,
            parent=s.parent,
        )
        for i, s in enumerate(result.steps)
    )
    agents = tuple(dict.fromkeys(s.agent for s in steps if s.agent))
    return TraceView(
        trace_id=trace_id,
        name=name or trace_name(result.task.seed, result.run_seed),
        question=result.task.question,
        ground_truth=result.task.answer,
        outcome=TRACE_OUTCOME[result.outcome],
        steps=steps,
        agents=agents,
        system_prompts={a: SYSTEM_PROMPTS[a] for a in AGENTS if a != "verifier" or result.verifier},
        source_format="sandbox",
    )


def _step_dict(index: int, step: V2Step) -> dict[str, Any]:
    """A step as a replay reports it: what the trace would show, never the slip behind it."""
    return {
        "index": index,
        "agent": step.agent,
        "kind": step.kind,
        "content": step.content,
        "speaker": step.speaker,
        "recipient": step.recipient,
        "tool_name": step.tool_name,
        "parent": step.parent,
    }


# --- replayer ----------------------------------------------------------------------------------------------------------


class SandboxV2Replayer:
    """Replays v2 sandbox runs from what the run recorded: the task seed and the sampler seed. Nothing else.

    A correction of step i re-executes the action behind it with sample 1 of its slot -- a fresh draw that is usually
    sound and sometimes wrong again -- and recomputes everything after it. The content a caller passes is recorded,
    not interpreted (``propose`` supplies the resampled action's own content).
    """

    name = "sandbox2"
    CORRECTION_SAMPLE = 1

    def __init__(self, task_seed: int, run_seed: int, *, cost_per_replay: float = 0.0) -> None:
        self.task = generate_task(task_seed)
        self.run_seed = run_seed
        self.cost_per_replay = cost_per_replay
        self._recorded = run(self.task, run_seed)
        self._proposals: dict[int, str] = {}

    @classmethod
    def for_trace(cls, trace: TraceView) -> SandboxV2Replayer:
        seeds = parse_name(trace.name) if trace.source_format in ("sandbox", "") else None
        if seeds is None:
            raise ReplayError(
                f"trace {trace.name!r} is not a v2 sandbox run (expected a name like sandbox2/task-7/run-3)"
            )
        replayer = cls(*seeds)
        replayer.check(trace)
        return replayer

    def check(self, trace: TraceView) -> None:
        """The uncorrected run must reproduce the trace step for step, else its replays would mean nothing."""
        ours = [(s.agent, s.kind, s.content) for s in self._recorded.steps]
        if ours != [(s.agent, s.kind, s.content) for s in trace.steps]:
            raise ReplayError(
                f"trace {trace.name!r} does not reproduce in sandbox v2 (edited or not a v2 run)"
            )

    def slots(self, indices: Iterable[int]) -> dict[Slot, int]:
        out = {}
        for i in indices:
            if not 0 <= i < len(self._recorded.steps) or not self._recorded.steps[i].agent:
                raise ReplayError(f"step {i} is not an agent's action and cannot be corrected")
            out[self._recorded.steps[i].slot] = self.CORRECTION_SAMPLE
        return out

    def propose(self, trace: TraceView, index: int) -> str:
        if index not in self._proposals:
            corrected = run(self.task, self.run_seed, self.slots([index]))
            self._proposals[index] = corrected.steps[index].content if index < len(corrected.steps) else ""
        return self._proposals[index]

    def replay(
        self, trace: TraceView, corrections: dict[int, str], *, budget: Budget | None = None
    ) -> ReplayResult:
        resamples = self.slots(corrections)
        for index, content in corrections.items():
            # The sandbox can only resample an action; content written elsewhere (an injection campaign's fault)
            # would be silently replaced, so it is refused. "" asks for the resample, whatever it says.
            if content and content != self.propose(trace, index):
                raise ReplayError(
                    "sandbox v2 corrects an action by resampling it and cannot replay written content"
                )
        if budget is not None:
            budget.charge(self.cost_per_replay)
        result = run(self.task, self.run_seed, resamples)
        first = min(corrections) if corrections else len(result.steps)
        return ReplayResult(
            continuation=[_step_dict(i, s) for i, s in enumerate(result.steps) if i >= first],
            outcome=result.outcome,
            final_answer=result.final_answer,
            cost=self.cost_per_replay,
        )
