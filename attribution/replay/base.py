"""The replay interface.

A ``Replayer`` takes a trace and corrections ``{step index: corrected content}``, reruns the system from the first
corrected step (every step before it is kept as recorded) and reports the continuation -- the steps from the first
corrected one on, as plain dicts shaped like ``StepView`` -- the outcome, the final answer and what the replay cost.
``propose`` supplies the corrected action for one step (an LLM analyzer for real traces; the agent's own fault-free
action in the sandbox). A ``Budget`` is shared by every replay of one attribution and stops it cleanly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..methods.base import TraceView

OUTCOMES = ("success", "failure", "unknown")


class ReplayError(Exception):
    """The trace cannot be replayed by this replayer (not one of its runs, or it does not reproduce)."""


class BudgetExhausted(ReplayError):
    """A replay was asked for after the budget ran out."""


@dataclass
class Budget:
    max_replays: int | None = None
    max_cost: float | None = None
    replays: int = 0
    cost: float = 0.0

    def charge(self, cost: float = 0.0) -> None:
        """Account for one replay; refuse it when the replay or cost limit is already reached."""
        if self.max_replays is not None and self.replays >= self.max_replays:
            raise BudgetExhausted(f"replay budget of {self.max_replays} replays exhausted")
        if self.max_cost is not None and self.cost + cost > self.max_cost:
            raise BudgetExhausted(f"cost budget of {self.max_cost} exhausted")
        self.replays += 1
        self.cost += cost


@dataclass
class ReplayResult:
    continuation: list[dict[str, Any]]  # StepView-like dicts, from the first corrected step to the end
    outcome: str  # success, failure or unknown
    final_answer: str
    cost: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class Replayer(Protocol):
    name: str

    def propose(self, trace: TraceView, index: int) -> str:
        """The corrected action for step ``index`` (content only)."""
        ...

    def replay(self, trace: TraceView, corrections: dict[int, str], *, budget: Budget | None = None) -> ReplayResult:
        ...
