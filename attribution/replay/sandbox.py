"""A small deterministic multi-agent system, runnable offline, with exact counterfactual semantics.

Four agents solve generated multi-hop questions over a knowledge base of fictional cities (population, founding year,
twin city) built from the task's seed: the **planner** hands each lookup to the **researcher** (a ``lookup`` tool over
the knowledge base), then the arithmetic to the **calculator** (a ``calc`` tool); the **verifier** rechecks the
calculator's report (and corrects a miscomputed result), and the planner states the final answer. Without faults
every run succeeds.

**Faults** are deterministic perturbations attached to ``(agent, turn)`` -- the agent's n-th action (tool call or
message; tool output is not an action and has no turn). They are *sticky*: whenever that agent takes that turn the
fault fires again, in every replay, unless that very step is corrected; a correction makes the agent act fault-free at
that turn and the system recomputes everything after it. Correcting a step that had no fault changes nothing.

A sandbox trace is identified by its name, ``sandbox/task-<task seed>/fault-<fault seed>``: the task comes from the
task seed and the injected fault from ``inject(task_seed, fault_seed)``, so a replayer can be rebuilt from the name
alone while the name says nothing readable about the fault (methods that read traces learn nothing from it). The
seeds and faults are also written to ``ParsedTrace.metadata["sandbox"]`` for people.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..methods.base import StepView, TraceView
from .base import Budget, ReplayError, ReplayResult

AGENTS = ("planner", "researcher", "calculator", "verifier")

# Fault kind -> taxonomy code (attribution.taxonomy) of the error it simulates.
FAULT_KINDS: dict[str, str] = {
    "wrong_number": "memory.hallucination",
    "dropped_tool_result": "memory.retrieval_failure",
    "misread_tool_result": "reflection.outcome_misinterpretation",
    "swapped_arguments": "action.parameter_error",
    "premature_final_answer": "mast.3.1",
    "wrong_handoff": "trail.task_orchestration",
}

# What each kind of action can get wrong (a step's ``role`` is what the action is for).
FAULTS_BY_ROLE: dict[str, tuple[str, ...]] = {
    "delegate_lookup": ("premature_final_answer", "wrong_handoff"),
    "delegate_calc": ("premature_final_answer", "wrong_handoff", "wrong_number"),
    "final": ("wrong_number",),
    "lookup_call": ("swapped_arguments",),
    "report_number": ("dropped_tool_result", "misread_tool_result", "wrong_number"),
    "report_city": ("dropped_tool_result", "misread_tool_result"),
    "calc_call": ("swapped_arguments",),
    "calc_report": ("wrong_number",),
    "verify": ("wrong_number",),
    "refuse": (),
}

SYSTEM_PROMPTS = {
    "planner": "You are the planner. Break the question into lookups and one calculation, hand each to the right "
    "agent, and state the final answer as 'FINAL ANSWER: <number>'.",
    "researcher": "You are the researcher. Use the lookup tool to find facts about cities and report them exactly.",
    "calculator": "You are the calculator. Use the calc tool to evaluate the arithmetic you are given.",
    "verifier": "You are the verifier. Recheck the calculator's arithmetic and state the verified result.",
}

WRONG_DELTA = 100  # a wrong number is off by this much
_ATTRIBUTES = {"population": "population", "founded": "founding year", "twin": "twin city"}
_SYLLABLES = [
    "ar",
    "bel",
    "cor",
    "dun",
    "el",
    "fen",
    "gar",
    "hol",
    "ith",
    "jor",
    "kel",
    "lun",
    "mar",
    "nor",
    "os",
    "pel",
    "quin",
    "ros",
    "sil",
    "tor",
    "ul",
    "ven",
    "wyn",
    "yar",
    "zel",
]
_CITIES = 12
NAME = re.compile(r"^sandbox/task-(\d+)(?:/fault-(\d+))?$")


# --- tasks -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    attribute: str  # population, founded, twin
    city: str = ""  # a city named in the question ...
    ref: int = -1  # ... or the result of an earlier lookup


@dataclass(frozen=True)
class Task:
    seed: int
    question: str
    answer: str
    kb: dict[str, dict[str, Any]]
    lookups: tuple[Lookup, ...]
    op: str  # + or -
    operands: tuple[int, int]  # the lookups whose values the calculation combines


def _knowledge_base(rng: random.Random) -> dict[str, dict[str, Any]]:
    names: list[str] = []
    while len(names) < _CITIES:
        name = "".join(rng.sample(_SYLLABLES, 2)).capitalize()
        if name not in names:
            names.append(name)
    order = names[:]
    rng.shuffle(order)  # twin cities form one cycle, so the twin of a twin is never the city itself
    kb = {
        name: {"population": rng.randrange(10_000, 1_000_000), "founded": rng.randrange(1000, 2000)}
        for name in names
    }
    for i, name in enumerate(order):
        kb[name]["twin"] = order[(i + 1) % len(order)]
    return kb


def generate_task(seed: int) -> Task:
    rng = random.Random(seed)
    kb = _knowledge_base(rng)
    x, y = rng.sample(sorted(kb), 2)
    template = rng.randrange(4)
    if template == 0:
        question = f"What is the population of the twin city of {x} plus the founding year of {y}?"
        lookups = (Lookup("twin", x), Lookup("population", ref=0), Lookup("founded", y))
        op, operands = "+", (1, 2)
    elif template == 1:
        question = f"What is the population of {x} minus the population of the twin city of {y}?"
        lookups = (Lookup("population", x), Lookup("twin", y), Lookup("population", ref=1))
        op, operands = "-", (0, 2)
    elif template == 2:
        question = (
            f"What is the founding year of the twin city of the twin city of {x} plus the population of {y}?"
        )
        lookups = (
            Lookup("twin", x),
            Lookup("twin", ref=0),
            Lookup("founded", ref=1),
            Lookup("population", y),
        )
        op, operands = "+", (2, 3)
    else:
        question = (
            f"What is the population of the twin city of {x} minus the founding year of the twin city of {y}?"
        )
        lookups = (
            Lookup("twin", x),
            Lookup("population", ref=0),
            Lookup("twin", y),
            Lookup("founded", ref=2),
        )
        op, operands = "-", (1, 3)
    values: list[Any] = []
    for lookup in lookups:
        values.append(kb[lookup.city if lookup.ref < 0 else values[lookup.ref]][lookup.attribute])
    answer = str(_apply(values[operands[0]], op, values[operands[1]]))
    return Task(seed=seed, question=question, answer=answer, kb=kb, lookups=lookups, op=op, operands=operands)


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


# --- runs ------------------------------------------------------------------------------------------------------------

Key = tuple[str, int]  # (agent, turn)


@dataclass(frozen=True)
class SandboxStep:
    agent: str  # "" for tool output
    kind: str  # message, tool_call, tool_result
    content: str
    speaker: str
    recipient: str = ""
    tool_name: str = ""
    arguments: dict[str, Any] | None = None
    parent: int | None = None
    turn: int = -1  # the agent's turn (its n-th action); -1 for tool output
    role: str = ""  # what the action is for (FAULTS_BY_ROLE)
    fault: str = ""  # the fault that shaped this step, "" when the agent acted correctly


@dataclass
class SandboxRun:
    task: Task
    faults: dict[Key, str]
    corrections: frozenset[Key]
    steps: list[SandboxStep] = field(default_factory=list)
    final_answer: str = ""
    outcome: str = "unknown"

    def fired(self) -> list[tuple[int, SandboxStep]]:
        """The steps a fault shaped, in order."""
        return [(i, s) for i, s in enumerate(self.steps) if s.fault]


class _Engine:
    def __init__(self, task: Task, faults: dict[Key, str], corrections: frozenset[Key]) -> None:
        self.task = task
        self.faults = faults
        self.corrections = corrections
        self.turns: Counter[str] = Counter()
        self.steps: list[SandboxStep] = []

    def fault(self, agent: str, applicable: Iterable[str]) -> str:
        """The fault on this agent's next turn, unless that turn is corrected or the fault cannot apply to it."""
        key = (agent, self.turns[agent])
        kind = self.faults.get(key, "")
        return kind if kind in applicable and key not in self.corrections else ""

    def emit(
        self,
        agent: str,
        kind: str,
        content: str,
        *,
        role: str = "",
        fault: str = "",
        speaker: str = "",
        **extra: Any,
    ) -> int:
        turn = -1
        if agent:
            turn = self.turns[agent]
            self.turns[agent] += 1
        self.steps.append(
            SandboxStep(
                agent=agent,
                kind=kind,
                content=content,
                speaker=speaker or agent,
                turn=turn,
                role=role,
                fault=fault,
                **extra,
            )
        )
        return len(self.steps) - 1

    # -- the conversation --

    def run(self) -> str:
        task = self.task
        values: list[Any] = []
        for lookup in task.lookups:
            city = lookup.city if lookup.ref < 0 else values[lookup.ref]
            fault = self.fault("planner", FAULTS_BY_ROLE["delegate_lookup"])
            if fault == "premature_final_answer":
                return self.final_now(values, fault)
            target = "calculator" if fault == "wrong_handoff" else "researcher"
            what = (
                f"the {_ATTRIBUTES[lookup.attribute]} of {city if city is not None else 'the unknown city'}"
            )
            self.emit(
                "planner",
                "message",
                f"{target.capitalize()}, please look up {what}.",
                recipient=target,
                role="delegate_lookup",
                fault=fault,
            )
            if target != "researcher":
                self.emit(
                    target,
                    "message",
                    f"I can only evaluate arithmetic; I cannot look up {what}.",
                    recipient="planner",
                    role="refuse",
                )
                values.append(None)
                continue
            values.append(self.research(lookup.attribute, city))
        a, b = (values[i] for i in task.operands)
        return self.calculate(values, _number(a), _number(b))

    def research(self, attribute: str, city: Any) -> Any:
        fault = self.fault("researcher", FAULTS_BY_ROLE["lookup_call"])
        args = {"city": str(city) if city is not None else "", "attribute": attribute}
        if fault == "swapped_arguments":
            args = {"city": args["attribute"], "attribute": args["city"]}
        call = self.emit(
            "researcher",
            "tool_call",
            f"lookup(city={args['city']!r}, attribute={args['attribute']!r})",
            tool_name="lookup",
            arguments=args,
            role="lookup_call",
            fault=fault,
        )
        record = self.task.kb.get(args["city"])
        result = record.get(args["attribute"]) if record else None
        if result is not None:
            text = str(result)
        elif record is None:
            text = f"error: no city named {args['city']!r}"
        else:
            text = f"error: no attribute {args['attribute']!r}"
        self.emit("", "tool_result", text, speaker="lookup", tool_name="lookup", parent=call)
        role = "report_city" if attribute == "twin" else "report_number"
        fault = self.fault("researcher", FAULTS_BY_ROLE[role])
        seen = result
        if fault == "dropped_tool_result":
            seen = None
        elif fault == "misread_tool_result" and seen is not None:
            seen = _misread(seen, self.task.kb)
        elif fault == "wrong_number" and isinstance(seen, int):
            seen += WRONG_DELTA
        name = _ATTRIBUTES[attribute]
        shown = city if city is not None else "the unknown city"
        content = (
            f"I could not find the {name} of {shown}."
            if seen is None
            else f"The {name} of {shown} is {seen}."
        )
        self.emit("researcher", "message", content, recipient="planner", role=role, fault=fault)
        return seen

    def calculate(self, values: list[Any], a: int, b: int) -> str:
        op = self.task.op
        fault = self.fault("planner", FAULTS_BY_ROLE["delegate_calc"])
        if fault == "premature_final_answer":
            return self.final_now(values, fault)
        if fault == "wrong_number":
            a += WRONG_DELTA
        target = "researcher" if fault == "wrong_handoff" else "calculator"
        expression = f"{a} {op} {b}"
        self.emit(
            "planner",
            "message",
            f"{target.capitalize()}, please compute {expression}.",
            recipient=target,
            role="delegate_calc",
            fault=fault,
        )
        if target != "calculator":
            self.emit(
                target,
                "message",
                f"I can only look up facts; I cannot compute {expression}.",
                recipient="planner",
                role="refuse",
            )
            return self.final(None)
        fault = self.fault("calculator", FAULTS_BY_ROLE["calc_call"])
        x, y = (b, a) if fault == "swapped_arguments" else (a, b)
        call = self.emit(
            "calculator",
            "tool_call",
            f"calc(expression='{x} {op} {y}')",
            tool_name="calc",
            arguments={"expression": f"{x} {op} {y}"},
            role="calc_call",
            fault=fault,
        )
        result = _apply(x, op, y)
        self.emit("", "tool_result", str(result), speaker="calc", tool_name="calc", parent=call)
        fault = self.fault("calculator", FAULTS_BY_ROLE["calc_report"])
        reported = result + WRONG_DELTA if fault == "wrong_number" else result
        self.emit(
            "calculator",
            "message",
            f"{x} {op} {y} = {reported}",
            recipient="verifier",
            role="calc_report",
            fault=fault,
        )
        fault = self.fault("verifier", FAULTS_BY_ROLE["verify"])
        checked = _apply(x, op, y)
        if fault == "wrong_number":
            checked += WRONG_DELTA
        content = (
            f"Verified: {x} {op} {y} = {checked}."
            if checked == reported
            else f"Correction: {x} {op} {y} = {checked}, not {reported}."
        )
        self.emit("verifier", "message", content, recipient="planner", role="verify", fault=fault)
        return self.final(checked)

    def final(self, result: int | None) -> str:
        fault = self.fault("planner", FAULTS_BY_ROLE["final"])
        if result is not None and fault == "wrong_number":
            result += WRONG_DELTA
        answer = str(result) if result is not None else "unknown"
        self.emit("planner", "message", f"FINAL ANSWER: {answer}", role="final", fault=fault)
        return answer

    def final_now(self, values: list[Any], fault: str) -> str:
        """A premature final answer: the last number known so far, or 'unknown'."""
        numbers = [v for v in values if isinstance(v, int)]
        answer = str(numbers[-1]) if numbers else "unknown"
        self.emit("planner", "message", f"FINAL ANSWER: {answer}", role="final", fault=fault)
        return answer


def _number(value: Any) -> int:
    """The planner takes a value it could not get as 0 (and says nothing about it: the error propagates)."""
    return value if isinstance(value, int) else 0


def _misread(value: Any, kb: dict[str, dict[str, Any]]) -> Any:
    if isinstance(value, int):
        digits = str(value)
        swapped = int(digits[:-2] + digits[-1] + digits[-2])
        return swapped if swapped != value else value + 9
    names = sorted(kb)
    return names[(names.index(value) + 1) % len(names)] if value in kb else value


def run(task: Task, faults: dict[Key, str] | None = None, corrections: Iterable[Key] = ()) -> SandboxRun:
    """Run the system on ``task`` with ``faults`` ({(agent, turn): kind}) and ``corrections`` ((agent, turn) keys
    whose action is made fault-free). Pure and deterministic."""
    faults = dict(faults or {})
    unknown = set(faults.values()) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    engine = _Engine(task, faults, frozenset(corrections))
    answer = engine.run()
    outcome = "success" if answer == task.answer else "failure"
    return SandboxRun(
        task=task,
        faults=faults,
        corrections=engine.corrections,
        steps=engine.steps,
        final_answer=answer,
        outcome=outcome,
    )


def inject(task_seed: int, fault_seed: int) -> dict[Key, str]:
    """One fault for the task's run, chosen by ``fault_seed`` among every (action, applicable kind) of its clean run."""
    clean = run(generate_task(task_seed))
    options = [((s.agent, s.turn), kind) for s in clean.steps if s.agent for kind in FAULTS_BY_ROLE[s.role]]
    key, kind = random.Random(task_seed * 1_000_003 + fault_seed).choice(options)
    return {key: kind}


def trace_name(task_seed: int, fault_seed: int | None = None) -> str:
    return f"sandbox/task-{task_seed}" + (f"/fault-{fault_seed}" if fault_seed is not None else "")


def parse_name(name: str) -> tuple[int, dict[Key, str]] | None:
    """(task seed, faults) for a sandbox trace name, None for any other name."""
    match = NAME.match(name or "")
    if not match:
        return None
    seed = int(match[1])
    return seed, (inject(seed, int(match[2])) if match[2] is not None else {})


def turn_keys(steps: Iterable[StepView | SandboxStep]) -> dict[int, Key]:
    """Step index -> (agent, turn) for every agent step, counting turns the way the engine does."""
    turns: Counter[str] = Counter()
    out: dict[int, Key] = {}
    for i, step in enumerate(steps):
        if step.agent:
            out[i] = (step.agent, turns[step.agent])
            turns[step.agent] += 1
    return out


# --- conversions -----------------------------------------------------------------------------------------------------


def to_parsed(result: SandboxRun, name: str | None = None, fault_seed: int | None = None):  # -> ParsedTrace
    from tracing.formats.base import ParsedAgent, ParsedGold, ParsedStep, ParsedTrace

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
    gold = []
    fired = result.fired()
    if result.outcome == "failure" and fired:
        # The earliest fault that fired is labelled: with one injected fault that flips the run it is, by
        # construction, the decisive error (correcting it alone restores success).
        index, step = fired[0]
        gold.append(
            ParsedGold(
                agent=step.agent,
                step=index,
                category=FAULT_KINDS[step.fault],
                reason=f"injected fault: {step.fault} ({step.agent}, turn {step.turn})",
                confidence=1.0,
            )
        )
    return ParsedTrace(
        name=name or trace_name(result.task.seed, fault_seed),
        source_format="sandbox",
        steps=steps,
        agents=[ParsedAgent(a, SYSTEM_PROMPTS[a]) for a in AGENTS],
        gold=gold,
        external_id=name or trace_name(result.task.seed, fault_seed),
        question=result.task.question,
        ground_truth=result.task.answer,
        outcome=TRACE_OUTCOME[result.outcome],
        metadata={
            "sandbox": {
                "task_seed": result.task.seed,
                "fault_seed": fault_seed,
                "faults": [[a, t, k] for (a, t), k in sorted(result.faults.items())],
                "corrections": sorted([a, t] for a, t in result.corrections),
                "final_answer": result.final_answer,
            }
        },
    )


def to_view(
    result: SandboxRun, name: str | None = None, fault_seed: int | None = None, trace_id: int = 0
) -> TraceView:
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
    return TraceView(
        trace_id=trace_id,
        name=name or trace_name(result.task.seed, fault_seed),
        question=result.task.question,
        ground_truth=result.task.answer,
        outcome=TRACE_OUTCOME[result.outcome],
        steps=steps,
        agents=tuple(dict.fromkeys(s.agent for s in steps if s.agent)),
        system_prompts=dict(SYSTEM_PROMPTS),
        source_format="sandbox",
    )


# Runs and replays speak success / failure / unknown; stored traces use tracing.models.Outcome's values.
TRACE_OUTCOME = {"success": "succeeded", "failure": "failed", "unknown": "unknown"}


def _step_dict(index: int, step: SandboxStep) -> dict[str, Any]:
    out = {k: v for k, v in asdict(step).items() if k not in ("role", "fault", "turn", "arguments")}
    return {"index": index, **out}


# --- replayer --------------------------------------------------------------------------------------------------------


class SandboxReplayer:
    """Replays sandbox runs exactly: the same task and faults, with corrected steps made fault-free.

    Corrections name steps of the *recorded* trace by index; each is mapped to the (agent, turn) that took it, which
    is how the engine knows "that very step" again in a replay whose later indices have shifted. The corrected
    content is the agent's own fault-free action (``propose``); the sandbox is its own oracle, so the content a
    caller passes is recorded, not interpreted.
    """

    name = "sandbox"

    def __init__(
        self, task_seed: int, faults: dict[Key, str] | None = None, *, cost_per_replay: float = 0.0
    ) -> None:
        self.task = generate_task(task_seed)
        self.faults = dict(faults or {})
        self.cost_per_replay = cost_per_replay

    @classmethod
    def for_trace(cls, trace: TraceView) -> SandboxReplayer:
        parsed = parse_name(trace.name) if trace.source_format in ("sandbox", "") else None
        if parsed is None:
            raise ReplayError(
                f"trace {trace.name!r} is not a sandbox run (expected a name like sandbox/task-7/fault-1)"
            )
        replayer = cls(*parsed)
        replayer.check(trace)
        return replayer

    def check(self, trace: TraceView) -> None:
        """The uncorrected run must reproduce the trace step for step, else its replays would mean nothing."""
        again = run(self.task, self.faults)
        if [(s.agent, s.kind, s.content) for s in again.steps] != [
            (s.agent, s.kind, s.content) for s in trace.steps
        ]:
            raise ReplayError(
                f"trace {trace.name!r} does not reproduce in the sandbox (edited or not a sandbox run)"
            )

    def keys(self, trace: TraceView, indices: Iterable[int]) -> frozenset[Key]:
        known = turn_keys(trace.steps)
        out = set()
        for i in indices:
            if i not in known:
                raise ReplayError(f"step {i} is not an agent's action and cannot be corrected")
            out.add(known[i])
        return frozenset(out)

    def propose(self, trace: TraceView, index: int) -> str:
        corrected = run(self.task, self.faults, self.keys(trace, [index]))
        return corrected.steps[index].content if index < len(corrected.steps) else ""

    def replay(
        self, trace: TraceView, corrections: dict[int, str], *, budget: Budget | None = None
    ) -> ReplayResult:
        if budget is not None:
            budget.charge(self.cost_per_replay)
        result = run(self.task, self.faults, self.keys(trace, corrections))
        first = min(corrections) if corrections else len(result.steps)
        return ReplayResult(
            continuation=[_step_dict(i, s) for i, s in enumerate(result.steps) if i >= first],
            outcome=result.outcome,
            final_answer=result.final_answer,
            cost=self.cost_per_replay,
        )
