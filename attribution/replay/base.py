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
    """Limits shared by every replay of one attribution. A replayer whose cost is known up front (the sandbox) calls
    ``charge``; one that learns its cost while running (an LLM simulator, a hook) calls ``begin`` before the replay,
    checks ``exhausted_by`` between its requests, and ``spend``s what it used afterwards."""

    max_replays: int | None = None
    max_cost: float | None = None
    max_tokens: int | None = None
    replays: int = 0
    cost: float = 0.0
    tokens: int = 0

    def charge(self, cost: float = 0.0, tokens: int = 0) -> None:
        """Account for one replay; refuse it when the replay, cost or token limit is already reached."""
        if self.max_replays is not None and self.replays >= self.max_replays:
            raise BudgetExhausted(f"replay budget of {self.max_replays} replays exhausted")
        if self.max_cost is not None and self.cost + cost > self.max_cost:
            raise BudgetExhausted(f"cost budget of {self.max_cost} exhausted")
        if self.max_tokens is not None and self.tokens + tokens > self.max_tokens:
            raise BudgetExhausted(f"token budget of {self.max_tokens} tokens exhausted")
        self.replays += 1
        self.cost += cost
        self.tokens += tokens

    def begin(self) -> None:
        """Count one replay whose cost is not known yet; refuse it when any limit is already used up."""
        problem = self.exhausted_by(0.0, 0)
        if problem:
            raise BudgetExhausted(problem)
        if self.max_replays is not None and self.replays >= self.max_replays:
            raise BudgetExhausted(f"replay budget of {self.max_replays} replays exhausted")
        self.replays += 1

    def exhausted_by(self, cost: float, tokens: int) -> str:
        """Why spending ``cost`` and ``tokens`` more (within the running replay) reaches a limit, "" when it does not.
        A positive limit is reached when it is met; a zero limit only when it is passed (free local models)."""
        if self.max_cost is not None and _reached(self.cost + cost, self.max_cost):
            return f"cost budget of {self.max_cost} exhausted"
        if self.max_tokens is not None and _reached(self.tokens + tokens, self.max_tokens):
            return f"token budget of {self.max_tokens} tokens exhausted"
        return ""

    def spend(self, cost: float = 0.0, tokens: int = 0) -> None:
        """Add what a replay begun with ``begin`` used (never refuses: the replay already happened)."""
        self.cost += cost
        self.tokens += tokens


def _reached(spent: float, limit: float) -> bool:
    return spent > limit or (limit > 0 and spent >= limit)


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

    def replay(
        self, trace: TraceView, corrections: dict[int, str], *, budget: Budget | None = None
    ) -> ReplayResult: ...
