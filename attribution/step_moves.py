"""Verdicts' per-step scores follow a renumbered step (registered in ``AttributionConfig.ready``).

A verdict stores its blame strip as a list indexed by step (``Verdict.scores``). When an OTLP trace grows by spans
that sort before existing steps, tracing renumbers the later steps and tells ``tracing.extensions.steps_moved``; the
verdict's ``step_index`` already followed (tracing moves every ``step_index`` row itself), the scores list follows
here, in the same transaction, so the strip keeps each score on the step it was given to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracing import extensions

from .models import Verdict

# Verdicts rewritten per query: a verdict of a 100,000-step trace holds 100,000 numbers (~2.4 MB as Python floats),
# so a few at a time keep a build's memory bounded on a trace that many runs have scored.
BATCH = 20


def realigned(
    scores: list[Any], mapping: Mapping[int, int], n_steps: int, dropped: frozenset[int]
) -> list[Any]:
    """``scores`` renumbered: the score of old step ``i`` moves to ``mapping.get(i, i)``; the scores of dropped
    steps go; new steps score 0; the list has one score per step of the trace now."""
    moved: list[Any] = [0.0] * n_steps
    for index, score in enumerate(scores):
        if index in dropped:
            continue
        target = mapping.get(index, index)
        if 0 <= target < n_steps:
            moved[target] = score
    return moved


def verdict_scores_follow(
    trace_id: int, mapping: Mapping[int, int], n_steps: int, dropped: frozenset[int]
) -> None:
    """Rewrite the scores of the trace's verdicts after a renumbering: linear in verdicts × steps of that trace."""
    ids = list(
        Verdict.objects.filter(trace_id=trace_id)
        .exclude(scores=[])
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for start in range(0, len(ids), BATCH):
        # Locked (in pk order) before the read: a concurrent write of these scores is not overwritten by stale ones.
        verdicts = list(
            Verdict.objects.filter(pk__in=ids[start : start + BATCH])
            .order_by("pk")
            .select_for_update()
            .only("pk", "scores")
        )
        changed = []
        for verdict in verdicts:
            if not isinstance(verdict.scores, list):  # a hand-written verdict: nothing indexed by step
                continue
            scores = realigned(verdict.scores, mapping, n_steps, dropped)
            if scores != verdict.scores:
                verdict.scores = scores
                changed.append(verdict)
        if changed:
            Verdict.objects.bulk_update(changed, ["scores"])


def register() -> None:
    extensions.register_steps_moved(verdict_scores_follow)
