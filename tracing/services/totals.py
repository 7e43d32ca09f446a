"""A trace's totals (``Trace.totals``) computed from its step rows as they are written, in one pass and no query.

The result must equal ``tracing.waterfall.totals_aggregate`` over the stored rows exactly, so each rule here mirrors
the SQL there: the cost is the first non-null of ``COST_KEYS`` in ``raw`` (as ``->>`` text), counted on LLM calls
only when that text is a number; a step failed when ``raw.status_code`` / ``raw.level`` is one of the error strings.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from typing import Any

from ..models import StepKind, Trace
from ..waterfall import _NUMBER, COST_KEYS, SPAN_STATUS_ERRORS, STATUS_CODE_ERRORS

_COST_PATHS = tuple(tuple(key.split("__")[1:]) for key in COST_KEYS)  # "raw__a__b" -> ("a", "b")
_IS_NUMBER = re.compile(
    _NUMBER.removeprefix("^").removesuffix("$")
)  # fullmatch: PostgreSQL's $ ends the text


# ``StepTotals.replace``'s aggregate when a build deleted no step.
NOTHING_REMOVED = {
    "started": None,
    "ended": None,
    "last_start": None,
    "llm": 0,
    "tin": 0,
    "tout": 0,
    "failed": 0,
    "cost": None,
}


class StepTotals:
    """Feed it the step rows (``writer.STEP_COLUMNS`` dicts) batch by batch; ``stored`` gives ``Trace.totals``."""

    def __init__(self) -> None:
        self.started: dt.datetime | None = None
        self.ended: dt.datetime | None = None
        self.llm_calls = self.input_tokens = self.output_tokens = self.failed = 0
        self.cost: float | None = None

    @classmethod
    def from_stored(cls, totals: dict[str, Any] | None) -> StepTotals | None:
        """The running totals a stored ``Trace.totals`` holds, to add new rows to (an OTLP build that only appended
        steps); None when it holds none (a trace written before totals were stored)."""
        keys = ("started", "ended", "llm_calls", "input_tokens", "output_tokens", "cost", "failed")
        if not isinstance(totals, dict) or any(key not in totals for key in keys):
            return None
        made = cls()
        made.started = dt.datetime.fromisoformat(totals["started"]) if totals["started"] else None
        made.ended = dt.datetime.fromisoformat(totals["ended"]) if totals["ended"] else None
        made.llm_calls, made.failed = int(totals["llm_calls"]), int(totals["failed"])
        made.input_tokens, made.output_tokens = int(totals["input_tokens"]), int(totals["output_tokens"])
        made.cost = None if totals["cost"] is None else float(totals["cost"])
        return made

    def replace(self, aggregate: dict[str, Any] | None, rows: list[dict[str, Any]]) -> bool:
        """Take out steps that were deleted (as ``waterfall.steps_aggregate`` summed them) and add ``rows``; False,
        with nothing changed, when that cannot be exact: the deleted steps held the run's first start or last
        moment and the new rows do not reach it again (the bound would need the other steps), or a cost (a float
        sum taken apart drifts from the one the database adds up). Steps derived again from the same spans (a
        subtree adopted by a parent that just came) have the same times, so they keep the bounds."""
        if aggregate is None or aggregate["cost"] is not None:
            return False
        fresh = StepTotals()
        fresh.add(rows)
        started = _utc(aggregate["started"]) if aggregate["started"] else None
        ends = [_utc(moment) for moment in (aggregate["ended"], aggregate["last_start"]) if moment]
        if started is not None and (self.started is None or started <= self.started):
            if fresh.started is None or fresh.started > started:
                return False
        if ends and (self.ended is None or max(ends) >= self.ended):
            if fresh.ended is None or fresh.ended < max(ends):
                return False
        self.llm_calls -= aggregate["llm"]
        self.input_tokens -= aggregate["tin"] or 0
        self.output_tokens -= aggregate["tout"] or 0
        self.failed -= aggregate["failed"]
        self.add(rows)
        return True

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            for moment in (row["started_at"], row["ended_at"]):  # the run ends at its last end or start
                if moment is not None:
                    moment = _utc(moment)
                    self.ended = moment if self.ended is None or moment > self.ended else self.ended
            if row["started_at"] is not None:
                start = _utc(row["started_at"])
                self.started = start if self.started is None or start < self.started else self.started
            self.input_tokens += row["input_tokens"] or 0
            self.output_tokens += row["output_tokens"] or 0
            raw = row["raw"] if isinstance(row["raw"], dict) else {}
            self.failed += _failed(raw)
            if row["kind"] == StepKind.LLM_CALL:
                self.llm_calls += 1
                if (cost := _cost(raw)) is not None:  # summed in step order, as the database scans them
                    self.cost = cost if self.cost is None else self.cost + cost

    def stored(self, *, steps: int) -> dict[str, Any]:
        return {
            "steps": steps,
            "started": self.started.isoformat() if self.started else None,
            "ended": self.ended.isoformat() if self.ended else None,
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "failed": self.failed,
        }


def trace_totals_store(*, trace: Trace, steps: Iterable[dict[str, Any]]) -> None:
    """Store the totals of ``trace`` computed from all its step rows, for a writer that does not stream batches
    (``writer._write_contents`` feeds a ``StepTotals`` itself and saves it with the rest of the header)."""
    totals = StepTotals()
    rows = list(steps)
    totals.add(rows)
    trace.totals = totals.stored(steps=len(rows))
    trace.save(update_fields=["totals"])


def _utc(moment: dt.datetime) -> dt.datetime:
    # A naive time is written as UTC (Django's database session runs in UTC), so read it the same way.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _failed(raw: dict[str, Any]) -> bool:
    # JSON equality in SQL: only a string value equals the error names.
    status, level = raw.get("status_code"), raw.get("level")
    span_status = raw.get("status")
    code = span_status.get("code") if isinstance(span_status, dict) else None
    span_failed = not isinstance(code, bool) and code in SPAN_STATUS_ERRORS
    return (isinstance(status, str) and status in STATUS_CODE_ERRORS) or level == "ERROR" or span_failed


def _cost(raw: dict[str, Any]) -> float | None:
    for path in _COST_PATHS:
        value: Any = raw
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:  # missing or JSON null: COALESCE goes on to the next key
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None  # true/false/objects as text are never numbers
        if isinstance(value, str):
            return float(value) if _IS_NUMBER.fullmatch(value) else None
        return float(value) if math.isfinite(value) else None  # NaN is stored as the text "nan"
    return None
