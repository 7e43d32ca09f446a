"""Scoring attribution verdicts against gold labels: pure functions over plain records, no database.

Exact-match step accuracy is the headline. The Who&When released scorer counts a step as right when the gold step's
string is a *substring* of the predicted step's string ("1" matches "12"); ``scorer_compatible`` reproduces that rule
so figures can be set beside published ones, and is never to be read as exact accuracy. Every accuracy carries a
Wilson 95% interval, and baselines always travel with the result: whatever a baseline learns (the most blamed agent,
the commonest decisive step) comes from training records, never from the records it is scored on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

WITHIN = (1, 3, 5)


@dataclass(frozen=True)
class Record:
    """One verdict next to its gold label. ``agents`` are the agents acting in the trace (the random baseline picks
    among them); ``first_*`` / ``last_*`` are the trace's first and last agent actions (the first-step and
    last-step baselines); ``calls``, ``tokens`` and ``cost`` are what the method spent on this trace. A method that
    gave no verdict is recorded with ``pred_step`` -1 (and ``pred_agent`` ""): it counts as wrong everywhere.
    ``group`` names the trace for grouped cross-validation."""

    pred_agent: str
    pred_step: int
    gold_agent: str
    gold_step: int
    n_steps: int
    agents: tuple[str, ...] = ()
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    first_agent: str = ""
    first_step: int = 0
    last_agent: str = ""
    last_step: int = -1  # -1: n_steps - 1
    group: str = ""


def _fraction(hits: int | float, n: int) -> float:
    return round(hits / n, 4) if n else 0.0


def _rate(records: Sequence[Record], hit: Callable[[Record], bool]) -> float:
    return _fraction(sum(1 for r in records if hit(r)), len(records))


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def scorer_agent_match(pred: str, gold: str) -> bool:
    return pred.strip().lower() == gold.strip().lower()


def scorer_step_match(pred: int, gold: int) -> bool:
    """The released Who&When scorer's rule, kept deliberately: the gold step's digits anywhere in the prediction."""
    return pred >= 0 and str(gold) in str(pred)


def _step_hit(record: Record, k: int = 0) -> bool:
    return record.pred_step >= 0 and abs(record.pred_step - record.gold_step) <= k


def wilson(hits: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval (95% by default) of a proportion: honest at small n and near 0 or 1, unlike the
    normal approximation. ``hits`` may be fractional (an expected accuracy)."""
    if not n:
        return [0.0, 1.0]
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


@dataclass(frozen=True)
class Constants:
    """What the constant baselines learnt from training records: the most blamed agent, the most frequent decisive
    step, and every agent ever blamed."""

    agent: str
    step: int
    blamed: frozenset[str]

    @classmethod
    def fit(cls, train: Sequence[Record]) -> Constants:
        agents = Counter(r.gold_agent for r in train)
        steps = Counter(r.gold_step for r in train)
        return cls(
            agent=min(agents, key=lambda a: (-agents[a], a), default=""),
            step=min(steps, key=lambda s: (-steps[s], s), default=0),
            blamed=frozenset(agents),
        )


def _leave_one_out(records: Sequence[Record]) -> list[Constants]:
    """Per record, the constants fitted on every *other* record: a baseline that never sees the record it scores.
    Ties go to the smallest step and the alphabetically first agent, so the answer does not depend on order. They
    depend only on the record's gold agent and step, so records that share both share one ``Constants`` (one per
    record, each with its own set of every blamed agent, took 32 MB at 20,000 traces; issue 19)."""
    agents = Counter(r.gold_agent for r in records)
    steps = Counter(r.gold_step for r in records)
    fitted: dict[tuple[str, int], Constants] = {}
    out = []
    for r in records:
        key = (r.gold_agent, r.gold_step)
        if key not in fitted:
            agents[r.gold_agent] -= 1
            steps[r.gold_step] -= 1
            agent = min((a for a in agents if agents[a] > 0), key=lambda a: (-agents[a], a), default="")
            step = min((s for s in steps if steps[s] > 0), key=lambda s: (-steps[s], s), default=0)
            blamed = frozenset(a for a in agents if agents[a] > 0)
            fitted[key] = Constants(agent=agent, step=step, blamed=blamed)
            agents[r.gold_agent] += 1
            steps[r.gold_step] += 1
        out.append(fitted[key])
    return out


def baselines(records: Sequence[Record], train: Sequence[Record] | None = None) -> dict[str, dict[str, Any]]:
    """Trivial answers scored on ``records``; whatever they learn comes from ``train`` (the training folds or the
    training projects), never from the scored set. Without ``train`` each record is scored by constants fitted on
    all the other records (leave-one-out), which is still never the scored record itself.

    - ``majority``: the most blamed agent and the most frequent decisive step of the training records;
    - ``first`` / ``last``: the trace's first / last agent action;
    - ``random``: the expected accuracy of a uniform pick among the trace's acting agents (and its steps);
    - ``random_blamed``: a uniform pick among the trace's acting agents that were ever blamed in training (all
      acting agents when none was).

    Each figure is ``{"agent", "step", "agent_ci", "step_ci"}`` with Wilson 95% intervals."""
    records = list(records)
    n = len(records)
    fitted = [Constants.fit(train)] * n if train is not None else _leave_one_out(records)
    hits: dict[str, list[float]] = {
        name: [0.0, 0.0] for name in ("majority", "first", "last", "random", "random_blamed")
    }
    for r, c in zip(records, fitted):
        last = r.last_step if r.last_step >= 0 else r.n_steps - 1
        for name, agent, step in (
            ("majority", c.agent, c.step),
            ("first", r.first_agent, r.first_step),
            ("last", r.last_agent, last),
        ):
            hits[name][0] += agent == r.gold_agent and bool(agent)
            hits[name][1] += step == r.gold_step
        hits["random"][0] += 1 / len(r.agents) if r.gold_agent in r.agents else 0.0
        hits["random"][1] += _uniform_step(r)
        pool = [a for a in r.agents if a in c.blamed] or list(r.agents)
        hits["random_blamed"][0] += 1 / len(pool) if r.gold_agent in pool else 0.0
        hits["random_blamed"][1] += _uniform_step(r)
    return {
        name: {
            "agent": _fraction(a, n),
            "step": _fraction(s, n),
            "agent_ci": wilson(a, n),
            "step_ci": wilson(s, n),
        }
        for name, (a, s) in hits.items()
    }


def _uniform_step(r: Record) -> float:
    return 1 / r.n_steps if r.n_steps and 0 <= r.gold_step < r.n_steps else 0.0


def best_baseline(result: dict[str, Any], figure: str) -> tuple[str, float]:
    """The strongest trivial baseline of a scored result for ``figure`` ("agent" or "step")."""
    name = max(result["baselines"], key=lambda k: result["baselines"][k][figure])
    return name, result["baselines"][name][figure]


def score(records: Sequence[Record], train: Sequence[Record] | None = None) -> dict:
    """Accuracies with Wilson 95% intervals (``intervals``), beside the baselines (fitted on ``train`` when given,
    else leave-one-out; see ``baselines``)."""
    records = list(records)
    n = len(records)
    agent_hits = sum(1 for r in records if r.pred_agent == r.gold_agent)
    step_hits = sum(1 for r in records if _step_hit(r))
    joint_hits = sum(1 for r in records if r.pred_agent == r.gold_agent and _step_hit(r))
    return {
        "n": n,
        "agent_accuracy": _fraction(agent_hits, n),
        "step_accuracy": _fraction(step_hits, n),
        "joint_accuracy": _fraction(joint_hits, n),
        "intervals": {
            "agent": wilson(agent_hits, n),
            "step": wilson(step_hits, n),
            "joint": wilson(joint_hits, n),
        },
        "step_accuracy_within": {str(k): _rate(records, lambda r, k=k: _step_hit(r, k)) for k in WITHIN},
        "scorer_compatible": {
            "agent": _rate(
                records, lambda r: bool(r.pred_agent) and scorer_agent_match(r.pred_agent, r.gold_agent)
            ),
            "step": _rate(records, lambda r: scorer_step_match(r.pred_step, r.gold_step)),
        },
        "baselines": baselines(records, train),
        "calls": _mean([float(r.calls) for r in records]),
        "tokens": _mean([float(r.tokens) for r in records]),
        "cost": _mean([r.cost for r in records]),
    }
