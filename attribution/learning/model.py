"""The learned attributor: a conditional logit over a trace's steps, trained on CPU in seconds, stored as arrays.

Each trace is one choice among its candidate steps: the model gives every step a linear score ``x·w`` and the
probability that step i is the decisive one is the softmax of the scores over the trace's candidates. Training
maximises the likelihood of the labelled step (with an L2 penalty), which is exactly the question asked -- which
step of *this* run -- rather than a step-by-step yes/no that would be swamped by the many sound steps of long runs.
The agent is the one with the most probability mass over its steps (a tool output counts for the action behind
it); the step is the most probable one.

Why scikit-learn, SciPy and NumPy: they are the well-kept standard, already wheels for every platform we run on,
CPU-only, deterministic, and small next to a deep-learning stack. scikit-learn provides the stateless feature
hashing (no vocabulary to store or to trust) and the grouped folds; SciPy's L-BFGS fits the conditional logit,
whose loss scikit-learn does not offer. A trained model is nothing but the numbers below (``to_dict``): plain JSON
lists, checked for shape and finiteness when loaded, so loading one never executes anything -- no pickle.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from ..methods.base import MethodError, MethodResult, TraceView
from .features import DENSE, FEATURE_SET, HASH_FEATURES, TraceFeatures, trace_features

# L2 penalties. The dense features are used as they are (0/1 flags, fractions, logs of counts): standardising
# them blew rare flags up to dozens of units and let single traces dictate weights. The hashed words are many and
# sparse, so they are held back harder. Chosen among four settings by cross-validation on the *dev* split of the
# shared collections only (``attribution.splits``); the held-out part never took part.
L2_DENSE = 10.0
L2_WORDS = 50.0
MAX_ITERATIONS = 300
# The heuristic's log odds enter every score with this fixed weight: with no data the model *is* the heuristic's
# ranking, and every learned weight is a correction a project's labels paid for (the dense features also carry the
# heuristic's score, so a project whose runs fool it can learn to discount it).
OFFSET = 1.0
# Multipliers of the penalties tried by the inner split (``fit``); 1 is the setting chosen on the dev split. Below
# INNER_MIN_TRACES labelled traces the inner split is too small to choose, and the first multiplier applies.
STRENGTHS = (1.0, 0.25, 4.0, 16.0, 64.0)
INNER_MIN_TRACES = 12


class ModelFormatError(ValueError):
    """A stored model that is not one this code can use (wrong feature set, shapes, or values)."""


@dataclass
class Example:
    """One verified label: the trace, the agent and step to blame, and where the label came from."""

    view: TraceView
    agent: str
    step: int
    source: str = ""
    group: str = ""  # traces with the same group stay in the same fold (a trace and the cases derived from it)


@dataclass
class Attributor:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # len(DENSE) + HASH_FEATURES
    feature_set: str = FEATURE_SET
    meta: dict[str, Any] = field(default_factory=dict)

    # --- scoring ------------------------------------------------------------------------------------------------

    def step_scores(self, features: TraceFeatures) -> np.ndarray:
        dense = (features.dense - self.mean) / self.scale
        n_dense = len(DENSE)
        return OFFSET * features.offset + dense @ self.weights[:n_dense] + features.words @ self.weights[n_dense:]

    def run(self, trace: TraceView, *, with_ground_truth: bool = True, features: TraceFeatures | None = None
            ) -> MethodResult:
        if not trace.steps:
            raise MethodError("the trace has no steps")
        f = features or trace_features(trace, with_ground_truth=with_ground_truth)
        raw = self.step_scores(f)
        candidates = f.candidates
        probs = _softmax(raw[candidates])
        prob = dict(zip(candidates, probs.tolist()))
        step = max(candidates, key=lambda i: (prob[i], -i))
        mass: dict[str, float] = {}
        for i, p in prob.items():
            agent = trace.steps[f.blamed[i]].agent
            if agent:
                mass[agent] = mass.get(agent, 0.0) + p
        agent = max(mass, key=lambda a: (mass[a], -trace.agents.index(a) if a in trace.agents else 0)) if mass else (
            trace.steps[f.blamed[step]].agent or (trace.agents[0] if trace.agents else ""))
        top = float(raw[candidates].max())
        scores = [round(math.exp(min(0.0, float(r) - top)), 4) if i in prob else 0.0 for i, r in enumerate(raw)]
        return MethodResult(
            agent=agent, step=step, confidence=round(prob[step], 4),
            reason=self.explain(f, step, prob[step], agent, mass.get(agent, 0.0)),
            category=_category(f, step), scores=scores,
            details={"model": self.meta.get("label", ""), "agent_mass": {a: round(m, 4) for a, m in mass.items()},
                     "top_steps": [{"step": i, "p": round(prob[i], 4)}
                                   for i in sorted(prob, key=lambda i: -prob[i])[:5]],
                     "contributions": self.contributions(f, step)},
        )

    def contributions(self, features: TraceFeatures, step: int, limit: int = 6) -> list[dict[str, Any]]:
        """The dense features that pushed this step's score most above the trace's average candidate."""
        dense = (features.dense - self.mean) / self.scale
        w = self.weights[: len(DENSE)]
        base = dense[features.candidates].mean(axis=0) if features.candidates else np.zeros(len(DENSE))
        push = (dense[step] - base) * w
        order = np.argsort(-push)[:limit]
        return [{"feature": DENSE[k], "effect": round(float(push[k]), 3)} for k in order if push[k] > 0.05]

    def explain(self, f: TraceFeatures, step: int, p: float, agent: str, mass: float) -> str:
        signals = [s.text for s in f.analysis.signals if s.step == step and s.signal != "ancestor"]
        pushes = ", ".join(c["feature"].replace("_", " ") for c in self.contributions(f, step)[:4])
        parts = [f"step {step} is the most likely decisive step ({100 * p:.0f}%) under the learned model; "
                 f"{agent} carries {100 * mass:.0f}% of the probability over agents"]
        if pushes:
            parts.append(f"what weighs most: {pushes}")
        parts.extend(signals[:3])
        return "; ".join(parts)

    def strongest_features(self, limit: int = 12) -> list[dict[str, Any]]:
        """The dense features with the largest weights, strongest first."""
        w = self.weights[: len(DENSE)]
        order = np.argsort(-np.abs(w))[:limit]
        return [{"feature": DENSE[k], "weight": round(float(w[k]), 3)} for k in order]

    # --- storage ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": "culprit-attributor", "feature_set": self.feature_set, "dense": list(DENSE),
                "hash_features": HASH_FEATURES, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": [round(float(v), 6) for v in self.weights]}

    @classmethod
    def from_dict(cls, data: Any, meta: dict[str, Any] | None = None) -> Attributor:
        """Rebuild a model from ``to_dict``'s plain data, refusing anything else (this never runs code)."""
        if not isinstance(data, dict) or data.get("format") != "culprit-attributor":
            raise ModelFormatError("not a Culprit attributor")
        if data.get("feature_set") != FEATURE_SET or data.get("dense") != list(DENSE) \
                or data.get("hash_features") != HASH_FEATURES:
            raise ModelFormatError(f"trained for feature set {data.get('feature_set')!r}; this version reads "
                                   f"{FEATURE_SET!r}: train the model again")
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            weights = np.asarray(data["weights"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"unreadable arrays: {exc}") from None
        if mean.shape != (len(DENSE),) or scale.shape != (len(DENSE),) or weights.shape != (
                len(DENSE) + HASH_FEATURES,):
            raise ModelFormatError("arrays of the wrong shape")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and np.isfinite(weights).all()) \
                or (scale <= 0).any():
            raise ModelFormatError("arrays with non-finite or non-positive scale values")
        return cls(mean=mean, scale=scale, weights=weights, meta=meta or {})


# --- training --------------------------------------------------------------------------------------------------------

@dataclass
class _Prepared:
    features: TraceFeatures
    candidates: list[int]
    gold: int  # position of the gold step within candidates


def prepare(example: Example, with_ground_truth: bool = True) -> _Prepared | None:
    """The example's features and where its label sits among the candidates; None when the label points outside
    the trace. A label on a tool output is moved to the action that produced it; one on a step the method would not
    blame (a human or system turn) joins the candidates, so the model still learns from it."""
    view = example.view
    if not view.steps or not 0 <= example.step < len(view.steps):
        return None
    f = trace_features(view, with_ground_truth=with_ground_truth)
    step = f.blamed[example.step]
    candidates = list(f.candidates)
    if step not in candidates:
        candidates = sorted({*candidates, step})
    return _Prepared(features=f, candidates=candidates, gold=candidates.index(step))


def fit(examples: list[Example], *, with_ground_truth: bool = True, prepared: list[_Prepared] | None = None,
        label: str = "", strengths: tuple[float, ...] = STRENGTHS) -> Attributor:
    """Train on verified labels. ``prepared`` (from ``prepare``) lets cross-validation reuse features.

    How far the model may move from the heuristic is chosen from the training labels alone: each penalty
    multiplier in ``strengths`` is scored by the likelihood of the labelled steps in an inner 3-fold split of the
    training traces, and the best one is refit on all of them. A project with few labels thus stays close to the
    heuristic, and one with many learns more."""
    started = time.perf_counter()
    rows = prepared if prepared is not None else [p for e in examples if (p := prepare(e, with_ground_truth))]
    if not rows:
        raise MethodError("no usable labelled trace to train on")
    strength, inner = strengths[0], {}
    if len(strengths) > 1 and len(rows) >= INNER_MIN_TRACES:
        inner = {m: _inner_likelihood(rows, m) for m in strengths}
        strength = max(strengths, key=lambda m: (inner[m], m))  # ties: the stronger penalty
    weights, iterations = _optimise(rows, strength)
    return Attributor(mean=np.zeros(len(DENSE)), scale=np.ones(len(DENSE)), weights=weights,
                      meta={"label": label, "n_traces": len(rows),
                            "n_steps": int(sum(len(r.candidates) for r in rows)), "iterations": iterations,
                            "strength": strength, "inner_likelihood": {str(k): round(v, 4) for k, v in inner.items()},
                            "seconds": round(time.perf_counter() - started, 2)})


def _inner_likelihood(rows: list[_Prepared], strength: float, k: int = 3) -> float:
    """Mean log-likelihood of the labelled step on held-out traces of a k-fold split of the training rows."""
    total = 0.0
    for fold in range(k):
        train = [r for i, r in enumerate(rows) if i % k != fold]
        test = [r for i, r in enumerate(rows) if i % k == fold]
        weights, _ = _optimise(train, strength)
        for r in test:
            s = r.features.offset[r.candidates] * OFFSET + _design(r) @ weights
            s = s - s.max()
            total += float(s[r.gold] - np.log(np.exp(s).sum()))
    return total / len(rows)


def _design(r: _Prepared) -> sparse.csr_matrix:
    return sparse.hstack([sparse.csr_matrix(r.features.dense[r.candidates]),
                          r.features.words[r.candidates]]).tocsr()


def _optimise(rows: list[_Prepared], strength: float) -> tuple[np.ndarray, int]:
    """Minimise the conditional logit's negative log-likelihood plus ``strength`` × the L2 penalties."""
    x = sparse.vstack([_design(r) for r in rows]).tocsr()
    sizes = np.array([len(r.candidates) for r in rows])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gold = starts + np.array([r.gold for r in rows])
    segment = np.repeat(np.arange(len(rows)), sizes)
    penalty = strength * np.concatenate([np.full(len(DENSE), L2_DENSE), np.full(HASH_FEATURES, L2_WORDS)])
    offset = OFFSET * np.concatenate([r.features.offset[r.candidates] for r in rows])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = offset + x @ w
        top = np.maximum.reduceat(s, starts)
        e = np.exp(s - top[segment])
        z = np.add.reduceat(e, starts)
        lse = np.log(z) + top
        p = e / z[segment]
        p[gold] -= 1.0
        value = float(lse.sum() - s[gold].sum() + 0.5 * (penalty * w * w).sum())
        return value, np.asarray(x.T @ p).ravel() + penalty * w

    result = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITERATIONS})
    return result.x, int(result.nit)


def _softmax(values: np.ndarray) -> np.ndarray:
    e = np.exp(values - values.max())
    return e / e.sum()


def _category(f: TraceFeatures, step: int) -> str:
    from ..methods.heuristic import CATEGORIES

    own = sorted((s for s in f.analysis.signals if s.step == step and s.signal in CATEGORIES),
                 key=lambda s: list(CATEGORIES).index(s.signal))
    return CATEGORIES[own[0].signal] if own else ""
