"""The offline heuristic's verdict explained: the "Why" a person reads under a verdict (the blamed step and the
signals that put it first, its position prior, the runners-up with their scores, every other signal that fired)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .heuristic import Analysis


# What each signal is called in a verdict's "Why" (its sentence says where and what; the name says which rule).
SIGNAL_NAMES = {
    "first_code": "first code of the run",
    "code": "writes code",
    "handover": "handed a wrong value over",
    "tool_error": "tool error",
    "runtime_error": "error in its own message",
    "answer_origin": "origin of the answer",
    "wrong_value": "origin of a wrong value",
    "accepted": "accepted without checking",
    "made_up": "invented data",
    "empty_result": "empty result",
    "ancestor": "the final answer depends on it",
    "premature_termination": "premature termination",
    "loop": "repetition",
}
# How many runner-up steps a "Why" names with their scores: enough to see how close the call was.
RUNNERS_UP = 3


def _score(value: float) -> str:
    """Two decimals, or two significant digits below 0.01, so a distant runner-up does not read as zero."""
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.2g}"


def _why_step(a: Analysis, i: int, scores: list[float]) -> str:
    step = a.ctx.steps[i]
    names = [SIGNAL_NAMES.get(s.signal, s.signal) for s in a.signals if s.step == i]
    return f"step {i} ({step.agent or 'no agent'}) score {_score(scores[i])}" + (
        f": {', '.join(names)}" if names else ": position prior only"
    )


def reason(a: Analysis, step: int, scores: list[float]) -> str:
    """The verdict's "Why": the blamed step itself and the signals that put it first (each with its weight),
    its position prior, then the runner-up steps with their scores, then every other signal that fired.
    Scores are odds relative to the most suspicious step (1.00 there), the same numbers as the blame strip."""
    from .heuristic import NEAR_TOP, WEIGHTS  # the heuristic imports this module

    ctx = a.ctx
    own = [s for s in a.signals if s.step == step]
    role, rank = ctx.cells[1][step]
    head = f"Blamed step {step} ({ctx.steps[step].agent or 'no agent'}), score {_score(scores[step])}"
    because = "; ".join(
        f"{SIGNAL_NAMES.get(s.signal, s.signal)} (+{s.weight:.2f}): {s.text}"
        for s in own
        if s.signal != "ancestor"
    )
    if any(s.signal == "ancestor" for s in own):
        because += (
            "; " if because else ""
        ) + f"the final answer (step {ctx.final}) depends on it (+{WEIGHTS['ancestor']:.2f})"
    parts = [
        f"{head}. Why: {because or 'no signal fired on it; chosen by the position prior alone'}; position "
        f"prior: {role} step no. {rank + 1}{' or later' if rank == 4 else ''} of the run "
        f"(log odds {a.priors[step]:.2f})."
    ]
    best = max(a.candidates, key=lambda i: (a.raw[i], -i))
    if best != step:
        parts.append(
            f"Step {best} scores higher, but step {step} is the earliest step within {NEAR_TOP} log odds "
            "of the best, and the decisive error is the earliest one."
        )
    others = sorted((i for i in a.candidates if i != step), key=lambda i: (-a.raw[i], i))[:RUNNERS_UP]
    if others:
        parts.append("Runners-up: " + "; ".join(_why_step(a, i, scores) for i in others) + ".")
    rest = sorted((s for s in a.signals if s.step != step and s.signal != "ancestor"), key=lambda s: s.step)
    if rest:
        parts.append("Other signals: " + "; ".join(s.text for s in rest) + ".")
    if a.found:
        shown = ", ".join(str(i) for i in sorted(a.found)[:12]) + (
            f" and {len(a.found) - 12} more" if len(a.found) > 12 else ""
        )
        parts.append(f"The final answer (step {ctx.final}) depends on steps {shown}.")
    return " ".join(parts)
