"""The learned attributor: a conditional logit over a trace's steps, trained on CPU in seconds, stored as arrays.

Each trace is one choice among its candidate steps: the model gives every step a linear score ``x·w`` and the
probability that step i is the decisive one is the softmax of the scores over the trace's candidates. Training
maximises the likelihood of the labelled step (with an L2 penalty), which is exactly the question asked -- which
step of *this* run -- rather than a step-by-step yes/no that would be swamped by the many sound steps of long runs.
The step is the most probable one; the agent is chosen by a second small logit over the trace's agents
(``agents``: probability mass, the top step's author, the heuristic's pick, how often the project's labels blamed
that name). Label priors (``priors``) add what a project's labels say about agents and positions.

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
from . import agents as agent_model
from .errors import ErrorDetector
from .errors import held_out as errors_held_out
from .features import DENSE, FEATURE_SET, HASH_FEATURES, TraceFeatures, trace_features
from .priors import COLUMNS as PRIOR_COLUMNS
from .priors import Label, LabelPriors, name_key

# L2 penalties. The dense features are used as they are (0/1 flags, fractions, logs of counts): standardising
# them blew rare flags up to dozens of units and let single traces dictate weights. The hashed words are many and
# sparse, so they are held back harder. Chosen among four settings by cross-validation on the *dev* split of the
# shared collections only (``attribution.splits``); the held-out part never took part.
L2_DENSE = 10.0
L2_WORDS = 50.0
L2_EVIDENCE = 1.0
MAX_ITERATIONS = 300
# Multipliers of the dense and word penalties tried by the inner split (``fit``); 1 is the setting chosen on the dev
# split, 1000 all but freezes them (the heuristic and the label priors, re-weighted, are then the whole model). Below
# INNER_MIN_TRACES labelled traces the inner split is too small to choose, and the first multiplier applies.
STRENGTHS = (1.0, 0.25, 4.0, 16.0, 64.0, 1000.0)
# The evidence columns: the heuristic's log odds and the three label priors (``priors``). They are few, each is a
# log-scale quantity with a meaning, and their weights are what a project's labels pay for most reliably (how far to
# trust the heuristic on *this* system, how much its habits count). So they are penalised lightly (``L2_EVIDENCE``,
# not scaled by the strength multiplier) around their face value: the heuristic's log odds at weight 1 -- with no
# data the model *is* the heuristic's ranking -- and the priors at 0.5 each (a log share of labels is evidence of
# the same kind; step index and action rank mostly say the same thing, so each gets half).
EVIDENCE = ("heuristic_log_odds", *PRIOR_COLUMNS)
EVIDENCE_CENTRE = (1.0, 0.5, 0.5, 0.5)
N_DENSE, N_EVIDENCE = len(DENSE), len(EVIDENCE)
INNER_MIN_TRACES = 9
# How the step is named. ``model``: the most probable step. Some systems fail at the same place run after run (the
# step where a fixed pipeline writes its plan); their labels pile up on one index, and the trivial "always answer
# that step" beats any reading of the text. ``blend`` multiplies the model's probability by the smoothed share of
# labels at each index (Bayes' rule with the index as evidence), ``prior`` answers the commonest labelled index among
# the candidates (ties: the model's order). How much the index counts is ``step_prior_weight`` (the power of the
# labels' share): the inner split's held-out step probabilities choose it among STEP_PRIOR_WEIGHTS by the
# log-likelihood of the labelled steps, and the rule is ``blend`` when it is above 0, else ``model``. Until
# 2026-12-02 ``blend`` (at weight 1) or ``prior`` replaced ``model`` only when a sign test on held-out hits said so;
# on the dev split only, grouped 5-fold, the likelihood's choice named 61 steps right of 173 against 59 (Who&When
# Hand-Crafted 9 -> 10, TRAIL GAIA 15 -> 16, the others unchanged). ``prior`` is kept for models trained before.
STEP_RULES = ("model", "blend", "prior")
STEP_PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


# What a stored model's numbers may be. A trained model's weights are a regularised logit's (well under 100) and its
# feature means and scales those of counts and ratios; anything past these is a damaged row, refused on reading,
# not a model whose scores overflow into NaN in a verdict.
MAX_WEIGHT = 1e6
MAX_MOMENT = 1e12
MIN_SCALE = 1e-12


def _bounded(values: np.ndarray, limit: float) -> bool:
    return bool(np.isfinite(values).all() and (np.abs(values) <= limit).all())


class ModelFormatError(ValueError):
    """A stored model that is not one this code can use (wrong feature set, shapes, or values)."""


@dataclass
class Example:
    """One verified label: the trace, the agent and step to blame, and where the label came from."""

    view: TraceView
    agent: str
    step: int
    source: str = ""
    group: str = (
        ""  # traces with the same group stay in the same fold (a trace and the cases derived from it)
    )
    errors: tuple[int, ...] = ()  # every labelled error's step, the decisive one among them (``errors``)


@dataclass
class Attributor:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # len(DENSE) + len(EVIDENCE) + HASH_FEATURES
    priors: LabelPriors = field(default_factory=LabelPriors)
    agent_rule: str = agent_model.RULES[0]
    agent_weights: np.ndarray = field(default_factory=lambda: agent_model.DEFAULT.copy())
    step_rule: str = STEP_RULES[0]
    step_prior_weight: float = 1.0  # the power of the labels' share of a step index under ``blend``
    errors: ErrorDetector | None = (
        None  # trained on every labelled error (``errors``); the agent model reads it
    )
    feature_set: str = FEATURE_SET
    meta: dict[str, Any] = field(default_factory=dict)

    # --- scoring ------------------------------------------------------------------------------------------------

    def step_scores(self, features: TraceFeatures) -> np.ndarray:
        dense = (features.dense - self.mean) / self.scale
        rows = list(range(len(features.offset)))
        evidence = _evidence(features, rows, self.priors) @ self.weights[N_DENSE : N_DENSE + N_EVIDENCE]
        return (
            dense @ self.weights[:N_DENSE] + evidence + features.words @ self.weights[N_DENSE + N_EVIDENCE :]
        )

    def run(
        self, trace: TraceView, *, with_ground_truth: bool = True, features: TraceFeatures | None = None
    ) -> MethodResult:
        if not trace.steps:
            raise MethodError("the trace has no steps")
        f = features or trace_features(trace, with_ground_truth=with_ground_truth)
        with np.errstate(over="ignore", invalid="ignore"):
            raw = self.step_scores(f)
        candidates = f.candidates
        if not np.isfinite(raw[candidates]).all():  # a model read from storage that passed its bounds, still
            raise MethodError("the model scores this trace with numbers out of range: train it again")
        probs = _softmax(raw[candidates])
        prob = dict(zip(candidates, probs.tolist()))
        step = candidates[
            pick_step(candidates, probs, self.priors, self.step_rule, weight=self.step_prior_weight)
        ]
        names, agent_x = agent_model.candidates(
            f,
            candidates,
            probs,
            self.priors,
            errors=self.errors.log_odds(f, candidates) if self.errors is not None else None,
        )
        mass = {a: round(float(math.exp(v)), 4) for a, v in zip(names, agent_x[:, 0])}
        agent = (
            agent_model.choose(names, agent_x, self.agent_rule, self.agent_weights, trace.agents)
            if names
            else (trace.agents[0] if trace.agents else "")
        )
        top = float(raw[candidates].max())
        scores = [
            round(math.exp(min(0.0, float(r) - top)), 4) if i in prob else 0.0 for i, r in enumerate(raw)
        ]
        return MethodResult(
            agent=agent,
            step=step,
            confidence=round(prob[step], 4),
            reason=self.explain(f, step, prob[step], agent, mass.get(agent, 0.0)),
            category=_category(f, step),
            scores=scores,
            details={
                "model": self.meta.get("label", ""),
                "agent_mass": {a: round(m, 4) for a, m in mass.items()},
                "top_steps": [
                    {"step": i, "p": round(prob[i], 4)} for i in sorted(prob, key=lambda i: -prob[i])[:5]
                ],
                "contributions": self.contributions(f, step),
            },
        )

    def contributions(self, features: TraceFeatures, step: int, limit: int = 6) -> list[dict[str, Any]]:
        """The dense and label-prior features that pushed this step's score most above the trace's average
        candidate."""
        rows = features.candidates if step in features.candidates else [*features.candidates, step]
        columns = np.hstack(
            [(features.dense[rows] - self.mean) / self.scale, _evidence(features, rows, self.priors)]
        )
        push = (columns[rows.index(step)] - columns.mean(axis=0)) * self.weights[: N_DENSE + N_EVIDENCE]
        names = (*DENSE, *EVIDENCE)
        return [
            {"feature": names[k], "effect": round(float(push[k]), 3)}
            for k in np.argsort(-push)[:limit]
            if push[k] > 0.05
        ]

    def explain(self, f: TraceFeatures, step: int, p: float, agent: str, mass: float) -> str:
        signals = [s.text for s in f.analysis.signals if s.step == step and s.signal != "ancestor"]
        pushes = ", ".join(c["feature"].replace("_", " ") for c in self.contributions(f, step)[:4])
        parts = [
            f"step {step} is the most likely decisive step ({100 * p:.0f}%) under the learned model; "
            f"{agent} carries {100 * mass:.0f}% of the probability over agents"
        ]
        if pushes:
            parts.append(f"what weighs most: {pushes}")
        parts.extend(signals[:3])
        return "; ".join(parts)

    def strongest_features(self, limit: int = 12) -> list[dict[str, Any]]:
        """The dense and label-prior features with the largest weights, strongest first; a feature whose weight
        rounds to zero is left out (a project with few labels keeps most weights at nothing, and a list of
        "+0.000" strongest features says nothing)."""
        names = (*DENSE, *EVIDENCE)
        w = self.weights[: N_DENSE + N_EVIDENCE]
        order = np.argsort(-np.abs(w))[:limit]
        return [
            {"feature": names[k], "weight": round(float(w[k]), 3)}
            for k in order
            if round(float(w[k]), 3) != 0
        ]

    # --- storage ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "culprit-attributor",
            "feature_set": self.feature_set,
            "dense": list(DENSE),
            "evidence": list(EVIDENCE),
            "hash_features": HASH_FEATURES,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": [round(float(v), 6) for v in self.weights],
            "priors": self.priors.to_dict(),
            "agent_features": list(agent_model.FEATURES),
            "agent_rule": self.agent_rule,
            "agent_weights": [round(float(v), 6) for v in self.agent_weights],
            "step_rule": self.step_rule,
            "step_prior_weight": self.step_prior_weight,
            "error_detector": self.errors.to_dict() if self.errors is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any, meta: dict[str, Any] | None = None) -> Attributor:
        """Rebuild a model from ``to_dict``'s plain data, refusing anything else (this never runs code)."""
        if not isinstance(data, dict) or data.get("format") != "culprit-attributor":
            raise ModelFormatError("not a Culprit attributor")
        if (
            data.get("feature_set") != FEATURE_SET
            or data.get("dense") != list(DENSE)
            or data.get("evidence") != list(EVIDENCE)
            or data.get("hash_features") != HASH_FEATURES
        ):
            raise ModelFormatError(
                f"trained for feature set {data.get('feature_set')!r}; this version reads "
                f"{FEATURE_SET!r}: train the model again"
            )
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            weights = np.asarray(data["weights"], dtype=np.float64)
            priors = LabelPriors.from_dict(data.get("priors"))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ModelFormatError(f"unreadable arrays: {exc}") from None
        if (
            mean.shape != (N_DENSE,)
            or scale.shape != (N_DENSE,)
            or weights.shape != (N_DENSE + N_EVIDENCE + HASH_FEATURES,)
        ):
            raise ModelFormatError("arrays of the wrong shape")
        before_errors = data.get("agent_features") == list(agent_model.FEATURES_BEFORE_ERRORS)
        if data.get("agent_features") != list(agent_model.FEATURES) and not before_errors:
            raise ModelFormatError("trained with other agent features: train the model again")
        try:
            agent_weights = np.asarray(data["agent_weights"], dtype=np.float64)
            errors = ErrorDetector.from_dict(data.get("error_detector"))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ModelFormatError(f"unreadable agent weights or error detector: {exc}") from None
        if before_errors and agent_weights.shape == (len(agent_model.FEATURES_BEFORE_ERRORS),):
            agent_weights = np.append(agent_weights, 0.0)  # a model from before the error detector
        if agent_weights.shape != (len(agent_model.FEATURES),) or not _bounded(agent_weights, MAX_WEIGHT):
            raise ModelFormatError("agent weights of the wrong shape or with non-finite values")
        if data.get("agent_rule") not in agent_model.RULES:
            raise ModelFormatError("an unknown agent rule")
        if data.get("step_rule", STEP_RULES[0]) not in STEP_RULES:
            raise ModelFormatError("an unknown step rule")
        step_prior_weight = data.get("step_prior_weight", 1.0)  # models trained before it was chosen used 1
        if (
            isinstance(step_prior_weight, bool)
            or not isinstance(step_prior_weight, (int, float))
            or not 0.0 <= step_prior_weight <= 100.0  # NaN fails this too
        ):
            raise ModelFormatError("a step prior weight out of range")
        if (
            not (_bounded(mean, MAX_MOMENT) and _bounded(scale, MAX_MOMENT) and _bounded(weights, MAX_WEIGHT))
            or (scale < MIN_SCALE).any()
        ):
            raise ModelFormatError("arrays with values out of range (non-finite, huge, or a scale near zero)")
        return cls(
            mean=mean,
            scale=scale,
            weights=weights,
            priors=priors,
            agent_rule=data["agent_rule"],
            agent_weights=agent_weights,
            step_rule=data.get("step_rule", STEP_RULES[0]),
            step_prior_weight=float(step_prior_weight),
            errors=errors,
            meta=meta or {},
        )


# --- training --------------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    features: TraceFeatures
    candidates: list[int]
    gold: int  # position of the gold step within candidates
    label: Label  # the gold label as the label priors count it
    errors: frozenset[int] = frozenset()  # the steps of every labelled error, as the candidates name them
    design: sparse.csr_matrix | None = (
        None  # dense and word columns of the candidates, built once (``_base``)
    )


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
    return _Prepared(
        features=f,
        candidates=candidates,
        gold=candidates.index(step),
        label=Label(agent=name_key(example.agent), step=step, rank=f.ranks[step]),
        errors=frozenset(f.blamed[i] for i in example.errors if 0 <= i < len(view.steps)) | {step},
    )


def fit(
    examples: list[Example],
    *,
    with_ground_truth: bool = True,
    prepared: list[_Prepared] | None = None,
    label: str = "",
    strengths: tuple[float, ...] = STRENGTHS,
) -> Attributor:
    """Train on verified labels. ``prepared`` (from ``prepare``) lets cross-validation reuse features.

    How far the model may move from the heuristic is chosen from the training labels alone: each penalty
    multiplier in ``strengths`` is scored by the likelihood of the labelled steps in an inner 3-fold split of the
    training traces, and the best one is refit on all of them. A project with few labels thus stays close to the
    heuristic, and one with many learns more. The inner split's held-out step probabilities then train the agent
    model (``agents``), which weighs probability mass, the top step, the heuristic's top step and the label priors."""
    started = time.perf_counter()
    rows = prepared if prepared is not None else [p for e in examples if (p := prepare(e, with_ground_truth))]
    if not rows:
        raise MethodError("no usable labelled trace to train on")
    strength, inner, held_out = strengths[0], {}, {}
    if len(strengths) > 1 and len(rows) >= INNER_MIN_TRACES:
        for m in strengths:
            inner[m], held_out[m] = _inner_split(rows, m)
        strength = max(strengths, key=lambda m: (inner[m]["likelihood"], m))  # ties: the stronger penalty
    priors = LabelPriors.fit([r.label for r in rows])
    weights, iterations = _optimise(rows, strength, priors)
    agent_rule, agent_weights, agent_accuracy = agent_model.RULES[0], agent_model.DEFAULT.copy(), {}
    step_rule, step_weight, step_accuracy = STEP_RULES[0], 1.0, {}
    detector = ErrorDetector.fit(rows)
    if held_out:
        step_rule, step_weight, step_accuracy = select_step_rule(rows, held_out[strength])
        errors_of = errors_held_out(rows)
        agent_rule, agent_weights, agent_accuracy = agent_model.select(
            [
                (
                    *agent_model.candidates(
                        r.features, r.candidates, *held_out[strength][k], errors=errors_of[k]
                    ),
                    r.label.agent,
                )
                for k, r in enumerate(rows)
            ]
        )
    return Attributor(
        mean=np.zeros(N_DENSE),
        scale=np.ones(N_DENSE),
        weights=weights,
        priors=priors,
        agent_rule=agent_rule,
        agent_weights=agent_weights,
        step_rule=step_rule,
        step_prior_weight=step_weight,
        errors=detector,
        meta={
            "label": label,
            "n_traces": len(rows),
            "n_steps": int(sum(len(r.candidates) for r in rows)),
            "n_errors": int(sum(len(r.errors) for r in rows)),
            "iterations": iterations,
            "strength": strength,
            "agent_rule": agent_rule,
            "agent_accuracy": agent_accuracy,
            "step_rule": step_rule,
            "step_prior_weight": step_weight,
            "step_rule_accuracy": step_accuracy,
            "agent_weights": dict(zip(agent_model.FEATURES, np.round(agent_weights, 3).tolist())),
            "inner": {str(k): {n: round(v, 4) for n, v in fig.items()} for k, fig in inner.items()},
            "seconds": round(time.perf_counter() - started, 2),
        },
    )


def pick_step(
    candidates: list[int], probs: np.ndarray, priors: LabelPriors, rule: str, weight: float = 1.0
) -> int:
    """The position (within ``candidates``) of the step ``rule`` names; ties go to the earlier step. ``weight``: the
    power of the labels' share of the index under ``blend``."""
    keys = {
        "model": lambda k: (probs[k],),
        "blend": lambda k: (
            round(float(np.log(max(probs[k], 1e-300)) + weight * priors.step_share(candidates[k])), 9),
        ),
        "prior": lambda k: (priors.steps.get(candidates[k], 0), probs[k]),
    }[rule]
    return max(range(len(candidates)), key=lambda k: (*keys(k), -candidates[k]))


def select_step_rule(
    rows: list[_Prepared], held_out: list[tuple[np.ndarray, LabelPriors]]
) -> tuple[str, float, dict[str, float]]:
    """The step rule and the weight of the labels' share of the index (``STEP_PRIOR_WEIGHTS``: the one under which
    the held-out probabilities, reweighted, give the labelled steps the highest log-likelihood; ties go to the
    smaller), and each rule's held-out accuracy (``blend`` at the chosen weight, or at 1 when that is 0)."""
    shares = [
        np.array([priors.step_share(c) for c in r.candidates]) for r, (_, priors) in zip(rows, held_out)
    ]

    def likelihood(weight: float) -> float:
        total = 0.0
        for r, (probs, _), share in zip(rows, held_out, shares):
            s = np.log(np.maximum(probs, 1e-300)) + weight * share
            top = s.max()
            total += float(s[r.gold] - top - np.log(np.exp(s - top).sum()))
        return round(total, 9)

    weight = max(STEP_PRIOR_WEIGHTS, key=lambda w: (likelihood(w), -w))
    shown = weight or 1.0
    accuracy = {
        rule: round(
            sum(
                pick_step(r.candidates, probs, priors, rule, weight=shown) == r.gold
                for r, (probs, priors) in zip(rows, held_out)
            )
            / len(rows),
            4,
        )
        for rule in STEP_RULES
    }
    return ("blend" if weight else "model"), weight, accuracy


def _inner_split(
    rows: list[_Prepared], strength: float, k: int = 3
) -> tuple[dict[str, float], list[tuple[np.ndarray, LabelPriors]]]:
    """On held-out traces of a k-fold split of the training rows: the mean log-likelihood of the labelled step and
    the share of steps named right, and each row's held-out step probabilities with the priors of the folds that
    predicted it (for the agent model: leave-one-out priors would flip a near-tied majority on every row)."""
    total, hits = 0.0, 0
    probs_of: list[tuple[np.ndarray, LabelPriors]] = [(np.zeros(0), LabelPriors())] * len(rows)
    for fold in range(k):
        train = [r for i, r in enumerate(rows) if i % k != fold]
        priors = LabelPriors.fit([r.label for r in train])
        weights, _ = _optimise(train, strength, priors)
        for i in range(fold, len(rows), k):
            r = rows[i]
            s = _scores(r, priors, weights)
            probs = _softmax(s)
            probs_of[i] = (probs, priors)
            total += float(np.log(max(probs[r.gold], 1e-300)))
            hits += int(np.argmax(probs)) == r.gold
    return {"likelihood": total / len(rows), "step": hits / len(rows)}, probs_of


def _base(r: _Prepared) -> sparse.csr_matrix:
    """The candidates' dense and word columns, built once per trace (the evidence columns change with every fit's
    priors and are kept apart, so a fit never rebuilds the wide sparse matrix)."""
    if r.design is None:
        r.design = sparse.hstack(
            [sparse.csr_matrix(r.features.dense[r.candidates]), r.features.words[r.candidates]]
        ).tocsr()
    return r.design


def _evidence(
    features: TraceFeatures, rows: list[int], priors: LabelPriors, without: Label | None = None
) -> np.ndarray:
    """The heuristic's log odds and the label-prior columns of the given steps."""
    return np.hstack([features.offset[rows][:, None], priors.columns(features, rows, without=without)])


def _split(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights as (dense and word columns, evidence columns), the stored order being dense, evidence, words."""
    return np.concatenate([w[:N_DENSE], w[N_DENSE + N_EVIDENCE :]]), w[N_DENSE : N_DENSE + N_EVIDENCE]


def _scores(r: _Prepared, priors: LabelPriors, w: np.ndarray) -> np.ndarray:
    """A held-out trace's candidate scores (its label is not among the priors' counts)."""
    base_w, evidence_w = _split(w)
    return _base(r) @ base_w + _evidence(r.features, r.candidates, priors) @ evidence_w


def _optimise(rows: list[_Prepared], strength: float, priors: LabelPriors) -> tuple[np.ndarray, int]:
    """Minimise the conditional logit's negative log-likelihood plus ``strength`` × the L2 penalties. Training rows
    see the priors without their own label."""
    base = sparse.vstack([_base(r) for r in rows]).tocsr()
    evidence = np.vstack([_evidence(r.features, r.candidates, priors, without=r.label) for r in rows])
    sizes = np.array([len(r.candidates) for r in rows])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gold = starts + np.array([r.gold for r in rows])
    segment = np.repeat(np.arange(len(rows)), sizes)
    penalty = np.concatenate(
        [
            np.full(N_DENSE, strength * L2_DENSE),
            np.full(N_EVIDENCE, L2_EVIDENCE),
            np.full(HASH_FEATURES, strength * L2_WORDS),
        ]
    )
    centre = np.zeros(N_DENSE + N_EVIDENCE + HASH_FEATURES)
    centre[N_DENSE : N_DENSE + N_EVIDENCE] = EVIDENCE_CENTRE

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        base_w, evidence_w = _split(w)
        s = base @ base_w + evidence @ evidence_w
        top = np.maximum.reduceat(s, starts)
        e = np.exp(s - top[segment])
        z = np.add.reduceat(e, starts)
        lse = np.log(z) + top
        p = e / z[segment]
        p[gold] -= 1.0
        value = float(lse.sum() - s[gold].sum() + 0.5 * (penalty * (w - centre) ** 2).sum())
        g_base = np.asarray(base.T @ p).ravel()
        grad = np.concatenate([g_base[:N_DENSE], evidence.T @ p, g_base[N_DENSE:]])
        return value, grad + penalty * (w - centre)

    result = minimize(loss, centre.copy(), jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITERATIONS})
    return result.x, int(result.nit)


def _softmax(values: np.ndarray) -> np.ndarray:
    e = np.exp(values - values.max())
    return e / e.sum()


def _category(f: TraceFeatures, step: int) -> str:
    from ..methods.heuristic import CATEGORIES

    own = sorted(
        (s for s in f.analysis.signals if s.step == step and s.signal in CATEGORIES),
        key=lambda s: list(CATEGORIES).index(s.signal),
    )
    return CATEGORIES[own[0].signal] if own else ""
