"""Server-drawn charts: pure geometry for the templates, no database, no HTML.

``accuracy_chart`` lays out the agent and step accuracy of some rows (methods on the evaluation page, models on a
model page) as horizontal bars with their 95% interval whiskers, in two panels that share the row labels, with
trivial baselines as dashed lines across each panel. It returns plain dicts of coordinates and ready-made strings;
``templates/attribution/_accuracy_chart.html`` only places them (and escapes every label). Coordinates are in the
SVG's own units (its viewBox); CSS scales the drawing to the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FIGURES = (("agent", "Agent accuracy"), ("step", "Step accuracy (exact)"))
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)

LABEL_W = 170  # row labels, left of the first panel
PLOT_W = 230  # 0–100% of one panel
VALUE_W = 132  # "100.0% (95.3–100.0%)" right of each panel's plot, so no text ever sits on a bar
GAP = 16  # between the two panels
ROW_H = 36
BAR_H = 14
CAP = 5  # half the height of a whisker's end cap
BAND_ROW = 14  # one baseline label per line above the plot
CHAR_W = 6.2  # average width of a character at the chart's 11px font, for truncating and laying out text
LABEL_CHARS = 26  # 26 characters fit LABEL_W


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _interval(ci: Sequence[float]) -> str:
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def _bar(row: dict[str, Any], figure: str, name: str, x0: float, cy: float) -> dict[str, Any] | None:
    value = row.get(figure)
    if value is None:
        return None
    ci = row.get(f"{figure}_ci") or [value, value]
    lo, hi = _unit(ci[0]), _unit(ci[1])
    return {
        "x": x0,
        "y": round(cy - BAR_H / 2, 1),
        "width": round(_unit(value) * PLOT_W, 1),
        "height": BAR_H,
        "lo": round(x0 + lo * PLOT_W, 1),
        "hi": round(x0 + hi * PLOT_W, 1),
        "cy": round(cy, 1),
        "cap_top": round(cy - CAP, 1),
        "cap_bottom": round(cy + CAP, 1),
        "figure": figure,
        "muted": bool(row.get("muted")),
        "value_x": x0 + PLOT_W + 8,
        "value_y": round(cy + 4, 1),
        "value": _pct(value),
        "interval": f"({_interval([lo, hi])})",
        "title": f"{row['label']}: {name.lower()} {_pct(value)} (95% interval {_interval([lo, hi])}), "
        f"n={row.get('n', 0)}",
    }


def _baseline(base: dict[str, Any], figure: str, x0: float, label_y: float, bottom: float) -> dict[str, Any]:
    value = _unit(base[figure])
    x = round(x0 + value * PLOT_W, 1)
    text = f"{base['label']} {_pct(value)}"
    right = value > 0.55  # past the middle the label reads leftwards from the line, so it stays in the panel
    room = (x - x0 if right else x0 + PLOT_W + VALUE_W - x) - 4
    return {
        "x": x,
        "y1": round(label_y + 3, 1),
        "y2": bottom,
        "label": _clip(text, int(room / CHAR_W)),
        "label_x": round(x - 4 if right else x + 4, 1),
        "label_y": label_y,
        "anchor": "end" if right else "start",
        "title": text,
    }


def _legend(y: float, muted: bool, baselines: bool = True) -> list[dict[str, Any]]:
    items = [
        ("agent", "agent accuracy"),
        ("step", "step accuracy"),
        ("whisker", "95% interval"),
        *([("baseline", "best trivial baseline")] if baselines else []),
    ]
    if muted:
        items.append(("muted", "too few traces to rank"))
    legend, x = [], 10.0
    for kind, label in items:
        legend.append(
            {
                "kind": kind,
                "x": x,
                "y": y,
                "mark_x2": x + 16,
                "mark_y": y - 6,
                "text_x": x + 22,
                "text_y": y + 4,
                "label": label,
            }
        )
        x = round(x + 22 + len(label) * CHAR_W + 18, 1)
    return legend


def accuracy_chart(
    rows: Sequence[dict[str, Any]],
    baselines: Sequence[dict[str, Any]] = (),
    *,
    chart_id: str = "accuracy-chart",
    title: str = "Agent and step accuracy",
) -> dict[str, Any]:
    """Bars for ``rows`` (``{"label", "agent", "agent_ci", "step", "step_ci", "n", "muted"}``, drawn in the order
    given; a figure that is None is left out) and dashed lines for ``baselines`` (``{"label", "agent", "step"}``; a
    None figure draws no line in that panel). ``chart_id`` prefixes the ids of the SVG's title and description, so
    two charts can share a page."""
    band = BAND_ROW * max((sum(b.get(f) is not None for b in baselines) for f, _ in FIGURES), default=0)
    top = 28 + band + 6
    bottom = top + ROW_H * len(rows)
    panels = []
    for p, (figure, name) in enumerate(FIGURES):
        x0 = LABEL_W + p * (PLOT_W + VALUE_W + GAP)
        bars = [_bar(row, figure, name, x0, top + ROW_H * i + ROW_H / 2) for i, row in enumerate(rows)]
        drawn = [b for b in baselines if b.get(figure) is not None]
        panels.append(
            {
                "figure": figure,
                "title": name,
                "title_x": x0,
                "title_y": 18,
                "x0": x0,
                "x1": x0 + PLOT_W,
                "ticks": [
                    {
                        "x": round(x0 + t * PLOT_W, 1),
                        "label": f"{round(100 * t)}%",
                        "y1": top,
                        "y2": bottom,
                        "label_y": bottom + 14,
                    }
                    for t in TICKS
                ],
                "bars": [b for b in bars if b is not None],
                "baselines": [
                    _baseline(b, figure, x0, 28 + BAND_ROW * (j + 1) - 4, bottom) for j, b in enumerate(drawn)
                ],
            }
        )
    labels = [
        {
            "label": _clip(str(row["label"]), LABEL_CHARS),
            "full_label": str(row["label"]),
            "x": LABEL_W - 10,
            "y": top + ROW_H * i + ROW_H / 2 - 2,
            "note_y": top + ROW_H * i + ROW_H / 2 + 11,
            "note": f"n={row.get('n', 0)}" + (" · too few traces to rank" if row.get("muted") else ""),
            "muted": bool(row.get("muted")),
        }
        for i, row in enumerate(rows)
    ]
    muted = any(row.get("muted") for row in rows)
    return {
        "id": chart_id,
        "title": title,
        "desc": _describe(rows, baselines),
        "width": LABEL_W + 2 * (PLOT_W + VALUE_W) + GAP,
        "height": bottom + 48,
        "axis_y": bottom,
        "panels": panels,
        "rows": labels,
        "legend": _legend(bottom + 34, muted, baselines=bool(baselines)),
    }


def _describe(rows: Sequence[dict[str, Any]], baselines: Sequence[dict[str, Any]]) -> str:
    """The chart in words, for screen readers (an SVG with role="img" hides its children)."""
    parts = []
    for row in rows:
        figures = [
            f"{figure} {_pct(row[figure])} ({_interval(row.get(f'{figure}_ci') or [row[figure]] * 2)})"
            for figure, _ in FIGURES
            if row.get(figure) is not None
        ]
        muted = ", too few traces to rank" if row.get("muted") else ""
        parts.append(f"{row['label']}: {', '.join(figures)}, n={row.get('n', 0)}{muted}.")
    for base in baselines:
        figures = [f"{figure} {_pct(base[figure])}" for figure, _ in FIGURES if base.get(figure) is not None]
        parts.append(f"Baseline {base['label']}: {', '.join(figures)}.")
    return " ".join(parts)


# --- the evaluation page's two error pictures ----------------------------------------------------------------------

MATRIX_AGENTS = 12  # past a dozen gold agents the rest are pooled as "other": a 30×30 grid is unreadable
CELL = 34
MATRIX_LABEL_W = 150
MATRIX_TOP = 96  # room for the predicted agents' names, written at an angle above the columns
MATRIX_TALLY_W = 56  # the column of "right / total" after each row
NO_VERDICT = "(no verdict)"
OTHER = "(other)"


def confusion_matrix(
    pairs: Sequence[tuple[str, str]], *, chart_id: str = "confusion-matrix"
) -> dict[str, Any]:
    """Gold agent (rows) against predicted agent (columns) of ``pairs`` (``(gold, predicted)``; an empty prediction
    is a method that gave no verdict). Cells carry their count, their share of the row (drawn as the cell's opacity,
    an SVG attribute, so the page's CSP stays without inline styles) and whether they sit on the diagonal."""
    if not pairs:
        return {}
    gold_counts: dict[str, int] = {}
    for gold, _ in pairs:
        gold_counts[gold] = gold_counts.get(gold, 0) + 1
    kept = sorted(gold_counts, key=lambda a: (-gold_counts[a], a))[:MATRIX_AGENTS]
    shown = set(kept)

    def name(agent: str, *, predicted: bool) -> str:
        if predicted and not agent:
            return NO_VERDICT
        return agent if agent in shown else OTHER

    counts: dict[tuple[str, str], int] = {}
    for gold, pred in pairs:
        key = (name(gold, predicted=False), name(pred, predicted=True))
        counts[key] = counts.get(key, 0) + 1
    rows = kept + ([OTHER] if any(g == OTHER for g, _ in counts) else [])
    columns = kept + [c for c in (OTHER, NO_VERDICT) if any(p == c for _, p in counts)]
    totals = {r: sum(n for (g, _), n in counts.items() if g == r) for r in rows}
    cells = []
    for i, gold in enumerate(rows):
        for j, pred in enumerate(columns):
            n = counts.get((gold, pred), 0)
            share = n / totals[gold] if totals[gold] else 0.0
            cells.append(
                {
                    "x": MATRIX_LABEL_W + j * CELL,
                    "y": MATRIX_TOP + i * CELL,
                    "size": CELL - 2,
                    "count": n,
                    "opacity": round(0.08 + 0.92 * share, 2) if n else 0,
                    "text_x": MATRIX_LABEL_W + j * CELL + (CELL - 2) / 2,
                    "text_y": MATRIX_TOP + i * CELL + 21,
                    "diagonal": gold == pred,
                    "dark": share > 0.55,
                    "title": f"gold {gold}, predicted {pred}: {n} of {totals[gold]} ({_pct(share)})",
                }
            )
    right = sum(counts.get((a, a), 0) for a in kept)
    bottom = MATRIX_TOP + CELL * len(rows)
    tally_x = MATRIX_LABEL_W + CELL * len(columns) + 8  # each row's "right of total", after its last cell
    # At least as wide as the caption under the grid (~360 units at 11px).
    return {
        "id": chart_id,
        "width": max(tally_x + MATRIX_TALLY_W, 380),
        "height": bottom + 30,
        "title": "Agent confusion matrix: gold agent per row, predicted agent per column",
        "desc": f"{right} of {len(pairs)} traces on the diagonal (predicted agent = gold agent). "
        + " ".join(
            f"Gold {r}: " + ", ".join(f"{c} {counts[(r, c)]}" for c in columns if (r, c) in counts) + "."
            for r in rows
        ),
        "rows": [
            {
                "label": _clip(r, 18),
                "full_label": r,
                "x": MATRIX_LABEL_W - 8,
                "y": MATRIX_TOP + i * CELL + 21,
                "tally": f"{counts.get((r, r), 0) if r in shown else 0}/{totals[r]}",
                "tally_x": tally_x,
            }
            for i, r in enumerate(rows)
        ],
        "tally_x": tally_x,
        "tally_head_y": MATRIX_TOP - 8,
        "columns": [
            {
                "label": _clip(c, 16),
                "full_label": c,
                "x": MATRIX_LABEL_W + j * CELL + CELL / 2,
                "y": MATRIX_TOP - 8,
            }
            for j, c in enumerate(columns)
        ],
        "cells": cells,
        "axis_y": bottom + 20,
        "axis_x": 10,
    }


def confusion_matrix_from_counts(
    table: dict[str, Any], *, chart_id: str = "confusion-matrix", no_verdict: str = "(none)"
) -> dict[str, Any]:
    """``confusion_matrix`` of a stored table ``{rows, columns, counts}`` (gold × predicted counts, as a learned
    model's summary keeps them; the ``no_verdict`` column is a trace the model named no agent for)."""
    rows, columns, counts = table.get("rows") or [], table.get("columns") or [], table.get("counts") or []
    pairs = [
        (gold, "" if predicted == no_verdict else predicted)
        for gold, line in zip(rows, counts, strict=False)
        for predicted, n in zip(columns, line, strict=False)
        for _ in range(max(0, int(n)))
    ]
    return confusion_matrix(pairs, chart_id=chart_id)


HIST_RANGE = 10  # errors beyond ±10 steps are pooled into the two end bins
HIST_BIN_W = 26
HIST_PLOT_H = 140
HIST_LEFT = 40
HIST_TOP = 24


def step_error_histogram(
    errors: Sequence[int | None], *, chart_id: str = "step-error-histogram"
) -> dict[str, Any]:
    """How many verdicts missed the gold step by each amount (predicted minus gold; negative: too early), with the
    misses beyond ±HIST_RANGE pooled at the ends and the verdicts without a step (None) counted apart."""
    missing = sum(1 for e in errors if e is None)
    known = [e for e in errors if e is not None]
    if not known and not missing:
        return {}
    bins = list(range(-HIST_RANGE - 1, HIST_RANGE + 2))  # the two outer bins hold everything past the range
    counts = dict.fromkeys(bins, 0)
    for error in known:
        counts[max(-HIST_RANGE - 1, min(HIST_RANGE + 1, error))] += 1
    top = max(counts.values()) or 1
    bars = []
    for i, b in enumerate(bins):
        height = round(HIST_PLOT_H * counts[b] / top, 1)
        label = (
            f"≤{-HIST_RANGE - 1}"
            if b == -HIST_RANGE - 1
            else f"≥{HIST_RANGE + 1}"
            if b == HIST_RANGE + 1
            else f"{b:+d}"
            if b
            else "0"
        )
        x = HIST_LEFT + i * HIST_BIN_W
        bars.append(
            {
                "x": x + 2,
                "width": HIST_BIN_W - 4,
                "y": round(HIST_TOP + HIST_PLOT_H - height, 1),
                "height": height,
                "count": counts[b],
                "exact": b == 0,
                "label": label,
                "label_x": x + HIST_BIN_W / 2,
                "count_y": round(HIST_TOP + HIST_PLOT_H - height - 3, 1),
                "title": f"predicted − gold = {label}: {counts[b]} verdict{'s' if counts[b] != 1 else ''}",
            }
        )
    axis_y = HIST_TOP + HIST_PLOT_H
    width = HIST_LEFT + HIST_BIN_W * len(bins) + 10
    exact = counts[0]
    return {
        "id": chart_id,
        "width": width,
        "height": axis_y + 44,
        "axis_y": axis_y,
        "axis_x0": HIST_LEFT,
        "axis_x1": width - 10,
        "label_y": axis_y + 14,
        "caption_y": axis_y + 34,
        "caption_x": width / 2,
        "bars": bars,
        "missing": missing,
        "n": len(known),
        "title": "Step error: predicted step minus gold step, per verdict",
        "desc": f"{exact} of {len(known)} verdicts name the gold step exactly; "
        + ", ".join(f"{b['label']}: {b['count']}" for b in bars if b["count"])
        + (f"; {missing} without a step" if missing else "")
        + ".",
    }
