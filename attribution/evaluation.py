"""Scoring attribution verdicts against gold labels: pure functions over plain records, no database.

Exact-match step accuracy is the headline. The Who&When released scorer counts a step as right when the gold step's
string is a *substring* of the predicted step's string ("1" matches "12"); ``scorer_compatible`` reproduces that rule
so figures can be set beside published ones, and is never to be read as exact accuracy. Baselines are computed from
the same records and always travel with the result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WITHIN = (1, 3, 5)


@dataclass(frozen=True)
class Record:
    """One verdict next to its gold label. ``agents`` are the agents acting in the trace (the random baseline picks
    among them); ``calls``, ``tokens`` and ``cost`` are what the method spent on this trace. A method that gave no
    verdict is recorded with ``pred_step`` -1 (and ``pred_agent`` ""): it counts as wrong everywhere."""

    pred_agent: str
    pred_step: int
    gold_agent: str
    gold_step: int
    n_steps: int
    agents: tuple[str, ...] = ()
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0


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


def baselines(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Random: expected accuracy of a uniform pick among the trace's acting agents / steps. Majority: always
    answering the most frequent gold agent / gold step of this very set (an upper bound for any constant answer)."""
    n = len(records)
    if not n:
        return {"random": {"agent": 0.0, "step": 0.0}, "majority": {"agent": 0.0, "step": 0.0}}
    top_agent = Counter(r.gold_agent for r in records).most_common(1)[0][1]
    top_step = Counter(r.gold_step for r in records).most_common(1)[0][1]
    return {
        "random": {"agent": _fraction(sum(1 / len(r.agents) if r.agents else 0.0 for r in records), n),
                   "step": _fraction(sum(1 / r.n_steps if r.n_steps else 0.0 for r in records), n)},
        "majority": {"agent": _fraction(top_agent, n), "step": _fraction(top_step, n)},
    }


def score(records: Sequence[Record]) -> dict:
    records = list(records)
    return {
        "n": len(records),
        "agent_accuracy": _rate(records, lambda r: r.pred_agent == r.gold_agent),
        "step_accuracy": _rate(records, _step_hit),
        "joint_accuracy": _rate(records, lambda r: r.pred_agent == r.gold_agent and _step_hit(r)),
        "step_accuracy_within": {str(k): _rate(records, lambda r, k=k: _step_hit(r, k)) for k in WITHIN},
        "scorer_compatible": {"agent": _rate(records, lambda r: bool(r.pred_agent)
                                             and scorer_agent_match(r.pred_agent, r.gold_agent)),
                              "step": _rate(records, lambda r: scorer_step_match(r.pred_step, r.gold_step))},
        "baselines": baselines(records),
        "calls": _mean([float(r.calls) for r in records]),
        "tokens": _mean([float(r.tokens) for r in records]),
        "cost": _mean([r.cost for r in records]),
    }
