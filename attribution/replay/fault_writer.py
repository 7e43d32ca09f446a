"""LLM-written faults in real runs that succeeded: labelled failures where the sandbox's generated tasks are too easy.

The sandbox knows its gold labels by construction, but its agents and errors are toys. A real run that succeeded
can be turned into a labelled failure the same way: a model rewrites one agent action so it holds a plausible error
of a chosen taxonomy category (``FaultWriter``), and the run is replayed from that step (``inject_real``, with any
``Replayer``: the LLM simulator, or the team's own system through its hook). Only an injection whose replay turns
the success into a failure is kept -- many plausible errors are harmless (a later agent catches them), and a kept
case is labelled at the injected step, which is the decisive error by construction as far as the replayer can tell:
fixing it gives back the recorded, successful run.

Nothing here writes to the database: ``inject_real`` returns a ``ParsedTrace`` that the caller stores with a link to
the origin trace.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..methods.base import MethodError, StepView, TraceView
from ..taxonomy import CATEGORIES
from . import sim_prompts
from .base import Budget, ReplayError, ReplayResult
from .llm_sim import NOT_ACTIONS

if TYPE_CHECKING:
    from tracing.formats.base import ParsedTrace

    from ..llm import LlmClient
    from .base import Replayer

# What each AgentErrorTaxonomy category means, for the writer (the taxonomy itself only carries labels). The
# ``system.*`` categories are the environment's errors, not an agent's, and are never written.
DESCRIPTIONS: dict[str, str] = {
    "memory.over_simplification": "it drops a detail or condition from earlier in the conversation that matters",
    "memory.retrieval_failure": "it recalls a fact or an earlier result from the conversation wrongly",
    "memory.hallucination": "it states as known a fact, number or source that nothing in the conversation supports",
    "reflection.progress_misjudgement": "it judges the task done, or a sub-goal met, when it is not",
    "reflection.outcome_misinterpretation": "it misreads the result of the latest tool call or of another agent",
    "reflection.causal_misattribution": "it blames the wrong cause for a problem and acts on that",
    "reflection.hallucination": "it claims to have checked or observed something it did not",
    "planning.constraint_ignorance": "it plans or acts ignoring a constraint stated in the task",
    "planning.impossible_action": "it plans an action that cannot work with the tools and information available",
    "planning.inefficient_plan": "it takes a roundabout plan that skips the step the task needs",
    "action.misalignment": "its action does not do what its own reasoning or plan said it would",
    "action.invalid_action": "it calls a tool or an agent that cannot do what is asked",
    "action.format_error": "its call or answer is malformed in a way that changes what it does",
    "action.parameter_error": "it calls the right tool with a wrong argument (a wrong value, unit or name)",
}

TOOL_CALL_CATEGORIES = (
    "action.parameter_error",
    "action.invalid_action",
    "action.format_error",
    "action.misalignment",
)
AFTER_RESULT_CATEGORIES = (
    "reflection.outcome_misinterpretation",
    "memory.retrieval_failure",
    "memory.hallucination",
)
MESSAGE_CATEGORIES = (
    "memory.hallucination",
    "memory.over_simplification",
    "memory.retrieval_failure",
    "reflection.progress_misjudgement",
    "reflection.causal_misattribution",
    "planning.constraint_ignorance",
    "action.misalignment",
)


class FaultWriter:
    """A model rewrites one agent action so it holds a plausible error of a given category."""

    name = "llm"

    def __init__(self, llm: LlmClient) -> None:
        self.llm = llm
        self.last_explanation = ""

    def write(self, trace: TraceView, index: int, category: str) -> str:
        step = _action(trace, index)
        if category not in CATEGORIES:
            raise ReplayError(f"unknown error category {category!r}")
        label = CATEGORIES[category].label
        description = DESCRIPTIONS.get(category, label)
        original = step.content.strip()

        def validate(answer: dict[str, Any]) -> str | None:
            content = answer.get("content")
            if not isinstance(content, str) or not content.strip():
                return '"content" must be the rewritten step as a non-empty string'
            if content.strip() == original:
                return '"content" must differ from the recorded step: write the mistake into it'
            return None

        def frame(rendered: str) -> str:
            return sim_prompts.fault(
                trace, rendered, step, code=category, label=label, description=description
            )

        try:
            empty = sim_prompts.conversation(trace.name, [])
            reserve = (
                self.llm.count_tokens(sim_prompts.FAULT_SYSTEM + frame(empty)) + self.llm.answer_tokens() + 64
            )
            rendered, cut = self.llm.fit_steps(list(trace.steps[: index + 1]), self.llm.budget(reserve))
            answer = self.llm.complete_json(
                system=sim_prompts.FAULT_SYSTEM,
                purpose=f"write fault at step {index}",
                user=frame(sim_prompts.conversation(trace.name, rendered, cut=cut)),
                validate=validate,
            )
        except MethodError as exc:
            raise ReplayError(
                f"the fault writer could not rewrite step {index} of {trace.name!r}: {exc}"
            ) from None
        self.last_explanation = str(answer.get("explanation", "")).strip()
        return answer["content"]


def applicable(trace: TraceView, index: int) -> tuple[str, ...]:
    """The categories a fault in this action can plausibly have, by what the action is."""
    step = trace.steps[index]
    if step.kind == "tool_call":
        return TOOL_CALL_CATEGORIES
    if index > 0 and trace.steps[index - 1].kind == "tool_result":
        return AFTER_RESULT_CATEGORIES
    return MESSAGE_CATEGORIES


def targets(trace: TraceView) -> list[int]:
    """The actions a fault can go into: agents' steps, not tool output, people or the system, and not a bare
    ``TERMINATE`` (there is nothing to get wrong in it)."""
    return [
        s.index
        for s in trace.steps
        if s.agent and s.kind not in NOT_ACTIONS and s.content.strip().upper() != "TERMINATE"
    ]


def choose_targets(trace: TraceView, n: int, seed: int) -> list[tuple[int, str]]:
    """``n`` distinct actions (fewer when the trace has fewer), each with one applicable category, in step order.
    The same trace, ``n`` and ``seed`` always give the same choice (the generator is seeded from all three)."""
    rng = random.Random(f"culprit-faults:{seed}:{trace.name}:{len(trace.steps)}")
    chosen = rng.sample(targets(trace), min(max(n, 0), len(targets(trace))))
    return sorted((i, rng.choice(applicable(trace, i))) for i in chosen)


@dataclass
class InjectionOutcome:
    kept: bool  # the faulty step's replay turned the succeeded run into a failure
    fault: dict[str, Any]  # index, agent, category, original, faulty
    replay: ReplayResult
    parsed: ParsedTrace | None = None  # the labelled failure, only when kept
    control: ReplayResult | None = None  # the replay with the step as recorded, when asked for


def inject_real(
    trace: TraceView,
    *,
    writer: FaultWriter,
    replayer: Replayer,
    index: int,
    category: str,
    budget: Budget | None = None,
    control: bool = False,
) -> InjectionOutcome:
    """Write a fault of ``category`` into step ``index`` of a run that succeeded and replay from it. With
    ``control=True`` the step is first replayed as recorded: when that replay does not succeed either, the replayer
    cannot reproduce this run and the injection is not kept whatever its own outcome (it costs one replay more)."""
    if trace.outcome not in ("succeeded", "success"):
        raise ReplayError(
            f"faults are injected into runs that succeeded; trace {trace.name!r} is {trace.outcome!r}"
        )
    step = _action(trace, index)
    if category not in CATEGORIES:
        raise ReplayError(f"unknown error category {category!r}")
    checked = replayer.replay(trace, {index: step.content}, budget=budget) if control else None
    faulty = writer.write(trace, index, category)
    result = replayer.replay(trace, {index: faulty}, budget=budget)
    fault = {
        "index": index,
        "agent": step.agent,
        "category": category,
        "original": step.content,
        "faulty": faulty,
        "explanation": writer.last_explanation,
    }
    kept = result.outcome == "failure" and (checked is None or checked.outcome == "success")
    parsed = parsed_case(trace, fault, result, getattr(replayer, "name", "")) if kept else None
    return InjectionOutcome(kept=kept, fault=fault, replay=result, parsed=parsed, control=checked)


def _action(trace: TraceView, index: int) -> StepView:
    if not 0 <= index < len(trace.steps):
        raise ReplayError(f"step {index} is not in trace {trace.name!r} ({len(trace.steps)} steps)")
    step = trace.steps[index]
    if not step.agent or step.kind in NOT_ACTIONS:
        raise ReplayError(f"step {index} of {trace.name!r} is not an agent's action")
    return step


def parsed_case(
    trace: TraceView, fault: dict[str, Any], result: ReplayResult, replayer_name: str = ""
) -> ParsedTrace:
    """The labelled failure: the recorded steps before the fault, then the replay from the faulty step on, labelled
    at the fault. (Injection campaigns build their kept cases with it too, from the stored replay.)"""
    from tracing.formats.base import ParsedAgent, ParsedGold, ParsedStep, ParsedTrace

    index, category = fault["index"], fault["category"]
    steps = [
        ParsedStep(
            speaker=s.speaker or s.agent,
            agent=s.agent or None,
            kind=s.kind,
            content=s.content,
            recipient=s.recipient,
            tool_name=s.tool_name,
            parent=s.parent,
        )
        for s in trace.steps[:index]
    ]
    for item in result.continuation:
        steps.append(
            ParsedStep(
                speaker=item.get("speaker") or item.get("agent") or "",
                agent=item.get("agent") or None,
                kind=item.get("kind") or "message",
                content=item.get("content") or "",
                recipient=item.get("recipient") or "",
                tool_name=item.get("tool_name") or "",
            )
        )
    if not result.continuation:  # the contract has it start at the corrected step; an empty one still gets it
        steps.insert(
            index,
            ParsedStep(
                speaker=fault["agent"],
                agent=fault["agent"],
                kind=trace.steps[index].kind,
                content=fault["faulty"],
                tool_name=trace.steps[index].tool_name,
            ),
        )
    names = list(dict.fromkeys(s.agent for s in steps if s.agent))
    reason = f"injected fault: {CATEGORIES[category].label} written into step {index} ({fault['agent']})" + (
        f"; {fault['explanation']}" if fault.get("explanation") else ""
    )
    name = f"{trace.name}/fault-{index}-{category}"
    return ParsedTrace(
        name=name,
        source_format=trace.source_format or "injected",
        steps=steps,
        agents=[ParsedAgent(a, trace.system_prompts.get(a, "")) for a in names],
        gold=[ParsedGold(agent=fault["agent"], step=index, category=category, reason=reason, confidence=1.0)],
        external_id=name[:200],
        question=trace.question,
        ground_truth=trace.ground_truth,
        outcome="failed",
        metadata={
            "injection": {
                "origin_trace_id": trace.trace_id,
                "origin_trace": trace.name,
                "index": index,
                "agent": fault["agent"],
                "category": category,
                "original": fault["original"],
                "faulty": fault["faulty"],
                "explanation": fault.get("explanation", ""),
                "replayer": replayer_name,
                "outcome": result.outcome,
                "final_answer": result.final_answer,
                "cost": result.cost,
                "replay": result.details,
            }
        },
    )
