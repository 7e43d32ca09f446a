"""Grouped K-fold cross-validation of anything that learns from labels: the learned model, the calibrated heuristic,
and the constant baselines, all fitted on the training folds only and scored on the held-out fold.

Folds are made by group (a trace and the cases derived from it share one), deterministically from the groups' names,
so the same data gives the same folds on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from ..evaluation import Record, score
from ..methods.base import MethodError, MethodResult, TraceView
from .model import Example

Predictor = Callable[[TraceView], MethodResult]
Fitter = Callable[[list[Example]], Predictor]


def folds(examples: Sequence[Example], k: int) -> list[int]:
    """The fold (0..k-1) of each example: groups are shuffled by a hash of their name, then dealt round-robin, so
    folds differ in size by at most one group."""
    groups = sorted(
        {e.group or str(e.view.trace_id) for e in examples},
        key=lambda g: hashlib.sha256(g.encode()).hexdigest(),
    )
    fold_of = {g: i % k for i, g in enumerate(groups)}
    return [fold_of[e.group or str(e.view.trace_id)] for e in examples]


def record(example: Example, result: MethodResult | None) -> Record:
    view = example.view
    actions = [s for s in view.steps if s.agent and s.kind not in ("tool_result", "human", "system")]
    return Record(
        pred_agent=result.agent if result else "",
        pred_step=result.step if result else -1,
        gold_agent=example.agent,
        gold_step=example.step,
        n_steps=len(view.steps),
        agents=view.agents,
        first_agent=actions[0].agent if actions else "",
        first_step=actions[0].index if actions else 0,
        last_agent=actions[-1].agent if actions else "",
        last_step=actions[-1].index if actions else -1,
        group=example.group,
    )


def predict(predictor: Predictor, example: Example) -> MethodResult | None:
    try:
        return predictor(example.view)
    except MethodError:
        return None


def cross_validate(
    examples: Sequence[Example],
    fitters: dict[str, Fitter],
    k: int = 5,
    on_prediction: Callable[[Example, MethodResult | None], None] | None = None,
) -> dict[str, Any]:
    """Score every fitter on every held-out fold; baselines are fitted on the training folds of each split.
    Returns ``{"folds": k, "n": …, "methods": {name: score(...)}}``. ``on_prediction`` sees every held-out
    prediction of the first fitter (for a confusion table)."""
    examples = list(examples)
    k = max(2, min(k, len({e.group or e.view.trace_id for e in examples})))
    fold_of = folds(examples, k)
    records: dict[str, list[Record]] = {name: [] for name in fitters}
    baseline_parts: list[dict[str, Any]] = []
    for fold in range(k):
        train = [e for e, f in zip(examples, fold_of) if f != fold]
        test = [e for e, f in zip(examples, fold_of) if f == fold]
        if not train or not test:
            continue
        for position, (name, fitter) in enumerate(fitters.items()):
            predictor = fitter(train)
            for e in test:
                result = predict(predictor, e)
                records[name].append(record(e, result))
                if on_prediction is not None and position == 0:
                    on_prediction(e, result)
        baseline_parts.append(
            {"train": [record(e, None) for e in train], "test": [record(e, None) for e in test]}
        )
    methods = {}
    for name, recs in records.items():
        methods[name] = score(recs)
        methods[name]["baselines"] = fold_baselines(baseline_parts)
    return {"folds": k, "n": len(examples), "methods": methods}


def fold_baselines(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Baselines summed over folds, each fold's fitted on its own training part (hits are re-derived from the
    per-fold accuracies so the intervals cover the whole set)."""
    from ..evaluation import baselines, wilson

    total = sum(len(p["test"]) for p in parts)
    out: dict[str, Any] = {}
    for p in parts:
        n = len(p["test"])
        for name, figure in baselines(p["test"], p["train"]).items():
            acc = out.setdefault(name, {"agent": 0.0, "step": 0.0})
            acc["agent"] += figure["agent"] * n
            acc["step"] += figure["step"] * n
    return {
        name: {
            "agent": round(v["agent"] / total, 4) if total else 0.0,
            "step": round(v["step"] / total, 4) if total else 0.0,
            "agent_ci": wilson(v["agent"], total),
            "step_ci": wilson(v["step"], total),
        }
        for name, v in out.items()
    }
