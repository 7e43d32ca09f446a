"""The heuristic's position priors, refit from one project's own verified labels.

The heuristic's prior says how often a step in a given cell -- run style (group chat or orchestrated), role
(worker, planner message, planner thought) and rank among the trace's steps of that role -- is the decisive one.
Its built-in table was measured on Who&When; a team's own system has its own shape (its planner may be the usual
culprit, or its third step). Once a project has ``MIN_LABELS`` verified labels, the table is refit from them:

    P(decisive | cell) = (hits + STRENGTH * built-in prior) / (steps + STRENGTH)

a Beta posterior that starts at the built-in prior and moves towards the project's own rate as its steps in that
cell accumulate. The counts are kept (not just the rates) so a labelled trace is always scored with its own label
taken out: attributing a trace the calibration learnt from is a leave-one-out evaluation by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..methods.base import TraceView
from ..methods.heuristic import PRIOR_FLOOR, PRIORS, cells

MIN_LABELS = 20
STRENGTH = 20.0  # pseudo-steps of the built-in prior in every cell; chosen a priori
STYLES = ("group", "orchestrated")


def _key(role: str, rank: int) -> str:
    return f"{role}|{rank}"


def _cell_counts(trace: TraceView) -> tuple[str, dict[str, int]]:
    style, step_cells = cells(trace)
    counts: dict[str, int] = {}
    for role, rank in step_cells:
        counts[_key(role, rank)] = counts.get(_key(role, rank), 0) + 1
    return style, counts


def gold_cell(trace: TraceView, step: int) -> str:
    """The cell of a label: a label on a tool output counts for the action just before it."""
    _, step_cells = cells(trace)
    while step > 0 and trace.steps[step].kind == "tool_result":
        step -= 1
    role, rank = step_cells[step]
    return _key(role, rank)


@dataclass
class Calibration:
    # counts[style][cell] = [hits, steps]
    counts: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {s: {} for s in STYLES})
    # labels[trace id] = [style, gold cell]
    labels: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, examples: Iterable[tuple[TraceView, int]]) -> Calibration:
        """Count every labelled trace's steps per cell and where its label sits."""
        out = cls()
        for trace, step in examples:
            if not trace.steps or not 0 <= step < len(trace.steps):
                continue
            style, counts = _cell_counts(trace)
            table = out.counts[style]
            for cell, n in counts.items():
                table.setdefault(cell, [0, 0])[1] += n
            cell = gold_cell(trace, step)
            table.setdefault(cell, [0, 0])[0] += 1
            out.labels[str(trace.trace_id)] = [style, cell]
        return out

    @property
    def n_labels(self) -> int:
        return len(self.labels)

    def priors_for(self, trace: TraceView) -> dict[str, dict[tuple[str, int], float]] | None:
        """The prior table to score ``trace`` with, its own label left out; None below ``MIN_LABELS`` (the
        built-in priors apply)."""
        own = self.labels.get(str(trace.trace_id))
        if self.n_labels - (1 if own else 0) < MIN_LABELS:
            return None
        minus: dict[str, dict[str, list[int]]] = {}
        if own:
            style, counts = _cell_counts(trace)
            minus[style] = {cell: [0, n] for cell, n in counts.items()}
            minus[style].setdefault(own[1], [0, 0])[0] += 1
        return self._table(minus)

    def table(self) -> dict[str, dict[tuple[str, int], float]]:
        return self._table({})

    def _table(self, minus: dict[str, dict[str, list[int]]]) -> dict[str, dict[tuple[str, int], float]]:
        out: dict[str, dict[tuple[str, int], float]] = {}
        for style in STYLES:
            base = PRIORS[style]
            cells_seen = {*(f"{r}|{k}" for r, k in base), *self.counts.get(style, {})}
            table = {}
            for cell in cells_seen:
                hits, steps = self.counts.get(style, {}).get(cell, [0, 0])
                less = minus.get(style, {}).get(cell, [0, 0])
                hits, steps = max(0, hits - less[0]), max(0, steps - less[1])
                role, rank = cell.rsplit("|", 1)
                prior = base.get((role, int(rank)), PRIOR_FLOOR)
                table[(role, int(rank))] = (hits + STRENGTH * prior) / (steps + STRENGTH)
            out[style] = table
        return out

    def describe(self) -> dict[str, Any]:
        """For people: per style, each cell's calibrated and built-in probability and the evidence behind it."""
        rows = []
        table = self.table()
        for style in STYLES:
            for (role, rank), p in sorted(table[style].items(), key=lambda kv: (kv[0][0], kv[0][1])):
                hits, steps = self.counts.get(style, {}).get(_key(role, rank), [0, 0])
                if not steps and (role, rank) not in PRIORS[style]:
                    continue
                rows.append(
                    {
                        "style": style,
                        "role": role,
                        "rank": rank,
                        "calibrated": round(p, 4),
                        "built_in": PRIORS[style].get((role, rank), PRIOR_FLOOR),
                        "hits": hits,
                        "steps": steps,
                    }
                )
        return {
            "labels": self.n_labels,
            "min_labels": MIN_LABELS,
            "active": self.n_labels >= MIN_LABELS,
            "cells": rows,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "labels": self.labels}

    @classmethod
    def from_dict(cls, data: Any) -> Calibration | None:
        if not isinstance(data, dict) or not isinstance(data.get("counts"), dict):
            return None
        counts = {
            s: {str(c): [int(v[0]), int(v[1])] for c, v in data["counts"].get(s, {}).items()} for s in STYLES
        }
        labels = {str(k): [str(v[0]), str(v[1])] for k, v in (data.get("labels") or {}).items()}
        return cls(counts=counts, labels=labels)
