"""Label priors: what a project's verified labels say before any step is read.

A team's system has habits that no text signal shows: one agent is to blame in half of its failures, or its runs
go wrong at the third step because that is where the plan is written. The trivial baselines live on exactly this
(always name the most blamed agent, always answer the commonest step), so a learned method that cannot see it
loses to them on a project whose habits differ from the heuristic's built-in priors.

``LabelPriors`` counts, over the training labels, how often each agent *name* was to blame, and how often each
absolute step index and each rank among agent actions was the decisive one. They become three score columns per
step: the smoothed log share of labels its agent, its index and its rank received. The names come from the data,
never from code, so a project whose agents are called differently simply gets flat columns (a constant over a
trace's steps changes nothing in a softmax).

Each training trace sees the counts *without its own label* (leave-one-out), as a new trace would: otherwise the
model would learn that a count of one is a certainty. Stored as plain counts in the model's JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .features import TraceFeatures

COLUMNS = ("prior_agent", "prior_step", "prior_action_rank")
MAX_POSITION = 200  # indexes and ranks past this share no prior (they are too rare to count)
MAX_AGENTS = 500  # names kept in a stored model; a project with more keeps its commonest
_SMOOTHING = 0.5


def name_key(name: str) -> str:
    """Agent names compare as the scorer compares them: case and surrounding spaces do not count."""
    return name.strip().lower()


@dataclass
class Label:
    """One training label as the priors see it: the blamed agent's name, the step index and its action rank."""

    agent: str  # as ``name_key`` gives it
    step: int
    rank: int


@dataclass
class LabelPriors:
    n: int = 0
    agents: Counter[str] = field(default_factory=Counter)
    steps: Counter[int] = field(default_factory=Counter)
    ranks: Counter[int] = field(default_factory=Counter)

    @classmethod
    def fit(cls, labels: list[Label]) -> LabelPriors:
        priors = cls(n=len(labels))
        for label in labels:
            priors.agents[label.agent] += 1
            if 0 <= label.step < MAX_POSITION:
                priors.steps[label.step] += 1
            if 0 <= label.rank < MAX_POSITION:
                priors.ranks[label.rank] += 1
        return priors

    def columns(self, features: TraceFeatures, rows: list[int], without: Label | None = None) -> np.ndarray:
        """The three prior columns for the given steps; ``without`` leaves one label out of the counts."""
        n = self.n - (1 if without is not None else 0)
        if n <= 0:
            return np.zeros((len(rows), len(COLUMNS)))
        norm = math.log(n + 1.0)

        def share(counter: Counter, key: Any, own: Any) -> float:
            count = counter.get(key, 0) - (1 if without is not None and key == own else 0)
            return math.log(max(0, count) + _SMOOTHING) - norm

        out = np.empty((len(rows), len(COLUMNS)))
        for k, i in enumerate(rows):
            rank = features.ranks[i]
            out[k, 0] = share(self.agents, name_key(features.agents[i]), without.agent if without else None)
            out[k, 1] = (
                share(self.steps, i, without.step if without else None)
                if i < MAX_POSITION
                else math.log(_SMOOTHING) - norm
            )
            out[k, 2] = (
                share(self.ranks, rank, without.rank if without else None)
                if 0 <= rank < MAX_POSITION
                else math.log(_SMOOTHING) - norm
            )
        return out

    def step_share(self, index: int) -> float:
        """The smoothed log share of labels at this step index."""
        if self.n <= 0:
            return 0.0
        count = self.steps.get(index, 0) if 0 <= index < MAX_POSITION else 0
        return math.log(count + _SMOOTHING) - math.log(self.n + 1.0)

    def agent_shares(self, names: list[str], without: Label | None = None) -> list[float]:
        """The smoothed log share of labels that blamed each name (``without`` leaves one label out)."""
        n = self.n - (1 if without is not None else 0)
        if n <= 0:
            return [0.0] * len(names)
        own = without.agent if without is not None else None
        keys = [name_key(a) for a in names]
        return [
            math.log(max(0, self.agents.get(a, 0) - (a == own)) + _SMOOTHING) - math.log(n + 1.0)
            for a in keys
        ]

    # --- storage ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "agents": dict(self.agents.most_common(MAX_AGENTS)),
            "steps": {str(k): v for k, v in sorted(self.steps.items())},
            "ranks": {str(k): v for k, v in sorted(self.ranks.items())},
        }

    @classmethod
    def from_dict(cls, data: Any) -> LabelPriors:
        """Counts from ``to_dict``; anything else raises ValueError (names, positions and counts are checked)."""
        if not isinstance(data, dict) or not isinstance(data.get("n"), int) or data["n"] < 0:
            raise ValueError("label priors without a label count")
        agents, steps, ranks = data.get("agents", {}), data.get("steps", {}), data.get("ranks", {})
        if not all(isinstance(d, dict) for d in (agents, steps, ranks)) or len(agents) > MAX_AGENTS:
            raise ValueError("label priors of the wrong shape")

        def counts(d: dict[str, Any], positional: bool) -> Counter:
            out: Counter = Counter()
            for key, value in d.items():
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= data["n"]:
                    raise ValueError("a label prior count out of range")
                if positional:
                    if not (
                        isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < MAX_POSITION
                    ):
                        raise ValueError("a label prior position out of range")
                    out[int(key)] = value
                else:
                    if not isinstance(key, str) or len(key) > 200:
                        raise ValueError("a label prior agent name out of range")
                    out[key] = value
            return out

        return cls(
            n=data["n"], agents=counts(agents, False), steps=counts(steps, True), ranks=counts(ranks, True)
        )
