"""A second look at a judge's verdict, offline: does anything in the trace itself point at the blamed step?

An LLM judge reads text written by other models and web pages; a trace can talk it into a confident answer that no
evidence supports. The heuristic's signals (errors, wrong values, loops, ...) and its ranking are computed from the
trace alone, so a verdict whose step carries no offline signal, is far down the heuristic's ranking, and whose agent
is not the heuristic's pick disagrees with every offline signal. Such a verdict is kept (the judge may be right) but
flagged as low confidence, with the reason, instead of being stored as certain.
"""

from __future__ import annotations

from dataclasses import replace

from .base import MethodResult, TraceView

TOP_RANKS = 5  # a step among the heuristic's five most suspicious candidates counts as supported
LOW_CONFIDENCE = 0.3  # the most a flagged verdict may claim


def unsupported_reason(trace: TraceView, result: MethodResult, *, with_ground_truth: bool = True) -> str:
    """Why no offline signal supports the verdict, or "" when something does."""
    from .heuristic import analyse

    if not trace.steps or not 0 <= result.step < len(trace.steps):
        return ""
    a = analyse(trace, with_ground_truth=with_ground_truth)
    if any(s.step == result.step and s.signal != "ancestor" for s in a.signals):
        return ""
    ranked = sorted(a.candidates, key=lambda i: (-a.raw[i], i))
    if result.step in ranked[:TOP_RANKS]:
        return ""
    pick = ranked[0] if ranked else -1
    if pick >= 0 and a.ctx.steps[a.ctx.blamed(pick)].agent == result.agent:
        return ""
    position = ranked.index(result.step) + 1 if result.step in ranked else None
    where = f"ranked {position} of {len(ranked)}" if position else "not among the steps it can blame"
    return (
        f"no offline signal supports step {result.step}: the heuristic finds no error, wrong value or loop there "
        f"({where}) and blames another agent"
    )


def flag_unsupported(
    trace: TraceView, result: MethodResult, *, with_ground_truth: bool = True
) -> MethodResult:
    """The verdict, with its confidence capped at ``LOW_CONFIDENCE`` and the reason in ``details["low_confidence"]``
    when nothing offline supports it."""
    reason = unsupported_reason(trace, result, with_ground_truth=with_ground_truth)
    if not reason:
        return result
    return replace(
        result,
        confidence=min(result.confidence, LOW_CONFIDENCE),
        details={**result.details, "low_confidence": reason},
    )
