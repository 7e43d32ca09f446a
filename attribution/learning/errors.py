"""Every labelled error, not only the decisive one: a step-level detector the agent model may consult.

Some label sources list *every* error of a run, the decisive one among them: AgentRx names each failure and which
one is the root cause, TRAIL each error with its impact (``tracing.models.ErrorLabel``). A run then teaches far more
than one step: the 24 labelled AgentRx runs have failures at 218 steps, TRAIL's 69 runs errors at 255. The
conditional logit (``model``) learns only from the decisive step -- which of *this* run's steps -- so those other
labels are evidence it never sees.

``ErrorDetector`` is a plain logistic regression over the same per-step features (the dense columns and the
heuristic's log odds, standardised): is this step one of the run's labelled errors? Its log odds over a trace's
candidates say where the run's errors are, and the agent model (``agents``) reads them as one more fact per agent:
whether the agent holds the likeliest error step. Whether that fact names the blamed agent better than the
heuristic's pick is decided as every agent rule is, on the inner split's held-out traces by a sign test, so a
project whose labels list only the decisive step (Who&When) keeps what it had unless the detector proves better.

Stored as plain arrays in the model's JSON (mean, scale, coefficients, intercept), checked when read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import DENSE, TraceFeatures

if TYPE_CHECKING:
    from .model import _Prepared

# The inverse L2 strength of the logistic regression: chosen among 0.01, 0.1 and 1 on the dev split only
# (``attribution.splits``; ``bench/attribution_matrix.py --dev-only``, the learned model over the six collections):
# 0.1 and 1 named 122 agents right of 169, 0.01 named 118 (TRAIL GAIA 31 against 27); every step figure was the same.
# Of the two that tie, the stronger penalty.
C = 0.1
N_COLUMNS = len(DENSE) + 1  # the dense columns and the heuristic's log odds
MIN_TRACES = 9  # below this many labelled traces there is no detector (as the inner split's minimum)
MAX_VALUE = 1e6


def _columns(features: TraceFeatures, rows: list[int]) -> np.ndarray:
    return np.hstack([features.dense[rows], features.offset[rows][:, None]])


def error_steps(r: _Prepared) -> np.ndarray:
    """0/1 per candidate of a prepared trace: whether it is one of the trace's labelled errors (``prepare`` counts
    the decisive step among them)."""
    return np.array([int(c in r.errors) for c in r.candidates])


@dataclass
class ErrorDetector:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, rows: list[_Prepared]) -> ErrorDetector | None:
        """Fitted on every candidate step of ``rows``; None when there are too few traces, or only one class."""
        if len(rows) < MIN_TRACES:
            return None
        x = np.vstack([_columns(r.features, r.candidates) for r in rows])
        y = np.concatenate([error_steps(r) for r in rows])
        if y.min() == y.max():
            return None
        from sklearn.linear_model import LogisticRegression

        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = LogisticRegression(C=C, max_iter=2000).fit((x - mean) / scale, y)
        return cls(mean=mean, scale=scale, coef=model.coef_[0].copy(), intercept=float(model.intercept_[0]))

    def log_odds(self, features: TraceFeatures, rows: list[int]) -> np.ndarray:
        """The log odds that each of ``rows`` is one of the run's labelled errors."""
        with np.errstate(over="ignore", invalid="ignore"):
            return ((_columns(features, rows) - self.mean) / self.scale) @ self.coef + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": [round(float(v), 6) for v in self.coef],
            "intercept": round(self.intercept, 6),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ErrorDetector | None:
        """``to_dict``'s plain data back, or None for a model stored without a detector; ValueError for anything
        that is not four finite arrays of the expected shape."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ValueError("the error detector is not an object")
        try:
            arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef")]
            intercept = float(data["intercept"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"unreadable error detector: {exc}") from None
        if any(a.shape != (N_COLUMNS,) for a in arrays):
            raise ValueError("an error detector of the wrong shape")
        values = np.concatenate([*arrays, [intercept]])
        if (
            not (np.isfinite(values).all() and (np.abs(values) <= MAX_VALUE).all())
            or (arrays[1] < 1e-12).any()
        ):
            raise ValueError("an error detector with values out of range")
        return cls(mean=arrays[0], scale=arrays[1], coef=arrays[2], intercept=intercept)


def held_out(rows: list[_Prepared], k: int = 3) -> list[np.ndarray | None]:
    """Each row's detector log odds from a detector fitted without it (the inner split's folds: row i is held out
    in fold i % k), for choosing the agent rule on facts a new trace would get; None where no detector could be
    fitted."""
    out: list[np.ndarray | None] = [None] * len(rows)
    for fold in range(k):
        detector = ErrorDetector.fit([r for i, r in enumerate(rows) if i % k != fold])
        if detector is None:
            continue
        for i in range(fold, len(rows), k):
            out[i] = detector.log_odds(rows[i].features, rows[i].candidates)
    return out
