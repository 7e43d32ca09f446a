"""Which agent to name: a second, small conditional logit over the agents of a trace.

The step model answers "which step"; the agent is not simply that step's author. The probability over a trace's
steps spreads over agents (an orchestrator's many turns each hold a little), a project's labels may blame one
agent far more often than its share of steps, and on many systems the heuristic's top step names the right agent
even when its step is off by one. This model weighs those few facts per candidate agent (``FEATURES``) and names
the most probable one.

It is fitted on *held-out* step probabilities (the inner split of ``model.fit``): trained on the step model's
in-sample probabilities it would trust them far more than a new trace deserves. With too few labels to fit, the
rule is the heuristic's pick (``RULES``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

from .features import _COLUMN, TraceFeatures
from .priors import Label, LabelPriors, name_key

FEATURES = (
    "log_mass",
    "top_step",
    "heuristic_top_step",
    "prior_agent",
    "action_share",
    "planner",
    "first_actor",
    "last_actor",
    "error_top",
)
DEFAULT = np.array([1.0, 0, 0, 0, 0, 0, 0, 0, 0])
# What models stored before ``error_top`` was a feature list; their weights are read with a zero for it.
FEATURES_BEFORE_ERRORS = FEATURES[:-1]
L2 = 1.0
_PLANNER = (_COLUMN["role_planner-message"], _COLUMN["role_planner-thought"])


def candidates(
    f: TraceFeatures,
    rows: list[int],
    probs: np.ndarray,
    priors: LabelPriors,
    without: Label | None = None,
    errors: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """The agents answerable for any candidate step and their feature rows (in first-appearance order). ``errors``:
    the error detector's log odds of ``rows`` (``errors.ErrorDetector``), when the model has one."""
    names = list(dict.fromkeys(f.agents[i] for i in rows if f.agents[i]))
    if not names:
        return [], np.zeros((0, len(FEATURES)))
    mass = dict.fromkeys(names, 0.0)
    for i, p in zip(rows, probs.tolist()):
        if f.agents[i]:
            mass[f.agents[i]] += p
    top = f.agents[rows[int(np.argmax(probs))]]
    heuristic_top = f.agents[max(rows, key=lambda i: (f.offset[i], -i))]
    actions = [i for i in range(len(f.agents)) if f.ranks[i] >= 0 and f.agents[i]]
    shares = {a: sum(1 for i in actions if f.agents[i] == a) / max(1, len(actions)) for a in names}
    planners = {f.agents[i] for i in range(len(f.agents)) if f.agents[i] and f.dense[i, list(_PLANNER)].any()}
    prior = priors.agent_shares(names, without)
    error_top = f.agents[rows[int(np.argmax(errors))]] if errors is not None and len(errors) else None
    x = np.array(
        [
            [
                math.log(max(mass[a], 1e-6)),
                float(a == top),
                float(a == heuristic_top),
                prior[k],
                shares[a],
                float(a in planners),
                float(bool(actions) and f.agents[actions[0]] == a),
                float(bool(actions) and f.agents[actions[-1]] == a),
                float(a == error_top),
            ]
            for k, a in enumerate(names)
        ]
    )
    return names, x


# How the agent is named. The first is the default: the heuristic's pick, which the product gave before it learned
# anything. The inner split scores every rule on held-out traces, and another replaces the default only when it is
# right on significantly more of them (``clearly_better``: a one-sided sign test at ``SIGNIFICANCE``): a two-trace
# lead is noise on twenty labels, and chasing it cost more than it won in cross-validation. A project with hundreds
# of labels can afford the fitted logit. ``bayes`` multiplies the step model's probability mass by the share of
# labels that blamed the name (no fitted weight: the product of two probabilities).
# The level was 5% until 2026-12-02: a rule then had to win 5 of 5 disputed traces, which an inner split of thirty
# traces almost never offers -- TRAIL GAIA's training folds kept the heuristic's pick while ``mass`` named 86-93% of
# their inner traces right against its 69-76%. Among 5%, 10% and 20% on the dev split only (``attribution.splits``),
# 20% moved TRAIL GAIA's agent accuracy 72 -> 78% and no other collection's agent or step figure; a two-trace lead
# (p = 0.25) still never switches. ``errors`` names the agent of the error detector's likeliest step
# (``errors.ErrorDetector``: trained on every labelled error of a run, not only the decisive one).
RULES = ("heuristic", "mass", "majority", "top", "bayes", "logit", "errors")
SIGNIFICANCE = 0.2


def choose(names: list[str], x: np.ndarray, rule: str, weights: np.ndarray, order: list[str]) -> str:
    """The agent ``rule`` names; ties go to the agent that appears first in the trace."""
    rank = {a: k for k, a in enumerate(order)}
    keys = {
        "mass": lambda k: (x[k, 0],),
        "heuristic": lambda k: (x[k, 2], x[k, 0]),
        "top": lambda k: (x[k, 1],),
        "majority": lambda k: (round(float(x[k, 3]), 9), x[k, 0]),
        "bayes": lambda k: (round(float(x[k, 0] + x[k, 3]), 9),),
        "logit": lambda k: (round(float(x[k] @ weights), 9),),
        "errors": lambda k: (x[k, 8], x[k, 0]),
    }[rule]
    best = max(range(len(names)), key=lambda k: (*keys(k), -rank.get(names[k], len(rank))))
    return names[best]


def select(
    rows: list[tuple[list[str], np.ndarray, str]], folds: int = 3
) -> tuple[str, np.ndarray, dict[str, float]]:
    """The rule that names most held-out agents right when it is ``clearly_better`` than the heuristic's pick, the
    logit's weights (fitted on every row) and each rule's held-out accuracy. The logit is scored on a k-fold split
    of the rows, the fixed rules on all of them."""
    if not rows:
        return RULES[0], DEFAULT.copy(), {}
    hits = {rule: [False] * len(rows) for rule in RULES}
    for k, (names, x, gold) in enumerate(rows):
        if not names:
            continue
        for rule in (r for r in RULES if r != "logit"):
            hits[rule][k] = name_key(choose(names, x, rule, DEFAULT, names)) == name_key(gold)
    for fold in range(folds):
        weights = fit([r for k, r in enumerate(rows) if k % folds != fold])
        for k, (names, x, gold) in enumerate(rows):
            if k % folds == fold and names:
                hits["logit"][k] = name_key(choose(names, x, "logit", weights, names)) == name_key(gold)
    accuracy = {rule: round(sum(h) / len(rows), 4) for rule, h in hits.items()}
    best = max(RULES, key=lambda r: (sum(hits[r]), -RULES.index(r)))
    rule = best if clearly_better(hits[best], hits[RULES[0]]) else RULES[0]
    return rule, fit(rows), accuracy


def clearly_better(candidate: list[bool], default: list[bool], level: float = SIGNIFICANCE) -> bool:
    """Whether ``candidate`` is right on significantly more of the same held-out traces than ``default``: an exact
    one-sided sign test on the traces where exactly one of them is right (McNemar's test for small samples)."""
    wins = sum(a and not b for a, b in zip(candidate, default))
    losses = sum(b and not a for a, b in zip(candidate, default))
    n = wins + losses
    if wins <= losses:
        return False
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n
    return p <= level


def fit(rows: list[tuple[list[str], np.ndarray, str]]) -> np.ndarray:
    """Weights of the agent logit from (candidate names, feature rows, gold agent) triples, L2-penalised towards
    ``DEFAULT`` (so sparse data leaves the mass rule in place). Rows whose gold agent is not a candidate carry no
    information about the choice and are skipped."""
    usable = []
    for names, x, gold in rows:
        keys = [name_key(a) for a in names]
        if name_key(gold) in keys and len(names) > 1:
            usable.append((x, keys.index(name_key(gold))))
    if not usable:
        return DEFAULT.copy()

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = 0.5 * L2 * float(((w - DEFAULT) ** 2).sum()), L2 * (w - DEFAULT)
        for x, gold in usable:
            s = x @ w
            top = s.max()
            e = np.exp(s - top)
            z = e.sum()
            value += float(math.log(z) + top - s[gold])
            p = e / z
            p[gold] -= 1.0
            grad = grad + x.T @ p
        return value, grad

    return minimize(loss, DEFAULT.copy(), jac=True, method="L-BFGS-B", options={"maxiter": 200}).x
