"""The one interface every attribution method implements.

A method receives a ``TraceView`` (a read-only snapshot of one trace, no ORM objects, so methods are pure and easy to
test) and an ``LlmClient`` (or None for offline methods) and returns a ``MethodResult``: the agent and step it blames,
how sure it is, why, a taxonomy category, a suspicion score for every step, and what it spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..llm import LlmClient


class MethodError(Exception):
    """The method could not produce a verdict (budget exhausted, provider down, no usable answer); shown as is."""


# Kinds of steps in which an agent acts; ``human``, ``system`` and ``tool_result`` steps only report.
ACTING_KINDS = frozenset({"message", "thought", "llm_call", "tool_call"})


@dataclass(frozen=True)
class StepView:
    index: int
    agent: str  # normalised agent name ("" when the source names none)
    kind: str  # message, thought, llm_call, tool_call, tool_result, human, system
    content: str
    speaker: str = ""
    recipient: str = ""
    tool_name: str = ""
    parent: int | None = None


@dataclass(frozen=True)
class TraceView:
    trace_id: int
    name: str
    question: str
    ground_truth: str
    outcome: str
    steps: tuple[StepView, ...]
    agents: tuple[str, ...]  # agents that act in at least one step, in order of first appearance
    system_prompts: dict[str, str] = field(default_factory=dict)
    source_format: str = ""

    def agent_steps(self, agent: str) -> list[StepView]:
        return [s for s in self.steps if s.agent == agent]

    def candidates(self) -> tuple[str, ...]:
        """The agents a judge may blame: those that act (speak, think, call a model or a tool) in some step. The
        user who gave the task (``human`` steps) and a tool's output (``tool_result``, e.g. Who&When's
        Computer_terminal) are evidence, not actors. Every agent when none acts that way."""
        acting = tuple(
            dict.fromkeys(s.agent for s in self.steps if s.agent in self.agents and s.kind in ACTING_KINDS)
        )
        return acting or self.agents

    def acting_steps(self) -> list[StepView]:
        """The steps a step-by-step judge may call decisive: those of candidate agents, never the task itself."""
        blameable = set(self.candidates())
        return [s for s in self.steps if s.agent in blameable and s.kind in ACTING_KINDS] or [
            s for s in self.steps if s.agent in blameable
        ]


@dataclass
class MethodResult:
    agent: str
    step: int
    confidence: float  # in [0, 1]
    reason: str
    category: str = ""  # a taxonomy code from attribution.taxonomy, "" when the method does not classify
    scores: list[float] = field(
        default_factory=list
    )  # suspicion per step, len == len(trace.steps), each in [0, 1]
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    details: dict[str, Any] = field(
        default_factory=dict
    )  # method-specific evidence (signals, windows, transcript)


class Method(Protocol):
    name: str
    label: str
    needs_llm: bool

    def run(
        self, trace: TraceView, *, llm: LlmClient | None, with_ground_truth: bool = True
    ) -> MethodResult: ...
