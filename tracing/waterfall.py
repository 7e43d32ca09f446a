"""The trace page's span tree and waterfall, and the per-trace totals in its header.

Only the steps of the page being shown are laid out (the windowed loading stays: a 100,000-step trace draws 50
rows), but bars are scaled against the whole run's start and end, so a row's bar sits where its span sat in the run.
Depth comes from ``Step.parent_index``; parents on earlier pages are looked up (indices only, one query per level).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, FloatField, Max, Min, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Length, Substr

from .long_text import ANSWER, CONTENT, LongText, root_output
from .models import ErrorLabel, Step, StepKind, Trace
from .plumbing import is_plumbing

MAX_DEPTH_CLASS = 15  # deeper spans are indented as this depth; the tree still nests them
BAR_WIDTH = 1000  # viewBox units of one waterfall bar
OUTPUT_STEP_WINDOW = 10  # how far from the end root_answer looks for a TRAIL root's "(output)" step

# Where integrations store the model name and the cost of an LLM span, most specific first.
MODEL_KEYS = (
    "raw__model",
    "raw__span_attributes__llm.model_name",
    "raw__attributes__llm.model_name",
    "raw__attributes__gen_ai.response.model",
    "raw__attributes__gen_ai.request.model",
    "raw__span_attributes__gen_ai.request.model",
)
COST_KEYS = (
    "raw__totalCost",
    "raw__calculatedTotalCost",
    "raw__metadata__attributes__operation.cost",
    "raw__attributes__llm.cost.total",
    "raw__span_attributes__llm.cost.total",
)
# Failed steps: a framework's status_code or level, or an OTLP span's status (code 2, or its name as exporters write
# it). ``services.totals`` counts the same rows in Python.
STATUS_CODE_ERRORS = ("Error", "ERROR", "STATUS_CODE_ERROR")
SPAN_STATUS_ERRORS = (2, "2", "STATUS_CODE_ERROR", "ERROR")
ERROR_STATUS = (
    Q(raw__status_code__in=STATUS_CODE_ERRORS)
    | Q(raw__level="ERROR")
    | Q(raw__status__code__in=SPAN_STATUS_ERRORS)
)


def with_span_facts(steps: Any) -> Any:
    """Annotate a Step queryset with ``model``, ``cost_text``, ``span_type`` and ``status_text``: small keys read
    out of ``raw`` by the database, so the page never loads a step's whole raw JSON to show its model."""
    return steps.annotate(
        model=Coalesce(*(KT(k) for k in MODEL_KEYS)),
        cost_text=Coalesce(*(KT(k) for k in COST_KEYS)),
        span_type=KT("raw__type"),
        status_text=Coalesce(KT("raw__status_code"), KT("raw__level")),
    )


def as_float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass
class TraceTotals:
    started: datetime | None
    ended: datetime | None
    steps: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    errors: int

    @property
    def duration_ms(self) -> float | None:
        if self.started and self.ended and self.ended >= self.started:
            return (self.ended - self.started).total_seconds() * 1000
        return None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def trace_totals(*, trace: Trace) -> TraceTotals:
    """Duration, steps, LLM calls, tokens, cost and errors of the whole run. Read from ``trace.totals``, stored when
    the steps were written; a trace written before that column (or whose steps changed without it) is aggregated
    once here and the result stored, so it heals on its first view. Error labels are counted now (indexed by trace):
    they change after import, the steps do not."""
    stored = stored_totals(trace)
    if stored is None:
        stored = totals_aggregate(trace=trace)
        # Only if no build changed the steps meanwhile; otherwise the next view aggregates again.
        Trace.objects.filter(pk=trace.pk, step_count=trace.step_count).update(totals=stored)
        trace.totals = stored
    return TraceTotals(
        started=moment_of(stored.get("started")),
        ended=moment_of(stored.get("ended")),
        steps=trace.step_count,
        llm_calls=stored.get("llm_calls", 0),
        input_tokens=stored.get("input_tokens", 0),
        output_tokens=stored.get("output_tokens", 0),
        cost=stored.get("cost"),
        errors=stored.get("failed", 0) + ErrorLabel.objects.filter(trace=trace).count(),
    )


def stored_totals(trace: Trace) -> dict[str, Any] | None:
    """``trace.totals`` when they are those of its current steps (stored when the steps were written); None for a
    trace written before they were stored, or whose steps changed without them."""
    stored = trace.totals if isinstance(trace.totals, dict) else {}
    return stored if stored.get("steps") == trace.step_count else None


def totals_aggregate(*, trace: Trace) -> dict[str, Any]:
    """``Trace.totals`` aggregated over the stored steps in one query (the OTLP build's refresh and the fallback of
    ``trace_totals``). Non-numeric cost values are skipped, not cast (a cast error would fail the page)."""
    agg = steps_aggregate(Step.objects.filter(trace=trace))
    ended = max(filter(None, [agg["ended"], agg["last_start"]]), default=None)
    return {
        "steps": trace.step_count,
        "started": agg["started"].isoformat() if agg["started"] else None,
        "ended": ended.isoformat() if ended else None,
        "llm_calls": agg["llm"],
        "input_tokens": agg["tin"] or 0,
        "output_tokens": agg["tout"] or 0,
        "cost": agg["cost"],
        "failed": agg["failed"],
    }


def steps_aggregate(steps: QuerySet) -> dict[str, Any]:
    """The sums, counts and bounds ``totals_aggregate`` reads, over any set of steps (an OTLP build takes out
    those of the steps it replaces)."""
    return (
        steps.order_by()
        .annotate(cost_text=Coalesce(*(KT(k) for k in COST_KEYS)))
        .aggregate(
            started=Min("started_at"),
            ended=Max("ended_at"),
            last_start=Max("started_at"),
            llm=Count("id", filter=Q(kind=StepKind.LLM_CALL)),
            tin=Sum("input_tokens"),
            tout=Sum("output_tokens"),
            failed=Count("id", filter=ERROR_STATUS),
            # FILTER is applied before the argument is evaluated, so the cast never sees a non-number.
            cost=Sum(
                Cast("cost_text", FloatField()), filter=Q(kind=StepKind.LLM_CALL, cost_text__regex=_NUMBER)
            ),
        )
    )


def moment_of(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


_NUMBER = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def llm_costs(steps: Any) -> dict[int, float]:
    """{trace id: summed cost of its LLM calls} for a Step queryset, summed by the database (a 100,000-step trace
    has tens of thousands of LLM calls: 0.1 s in SQL, several times that parsed in Python). Non-numeric cost
    values are skipped, not cast (a cast error would fail the page)."""
    rows = (
        with_span_facts(steps.filter(kind=StepKind.LLM_CALL))
        .order_by()
        .filter(cost_text__regex=_NUMBER)
        .values("trace_id")
        .annotate(total=Sum(Cast("cost_text", FloatField())))
        .values_list("trace_id", "total")
    )
    return {trace_id: total for trace_id, total in rows if total is not None}


def depths(*, trace: Trace, steps: list[Step]) -> dict[int, int]:
    """Depth of each step in the span tree (a root is 0). Parents outside ``steps`` are read by index only."""
    parent = {s.index: s.parent_index for s in steps}
    missing = {p for p in parent.values() if p is not None and p not in parent}
    while missing:  # one query per tree level above the window; span trees are shallow (TRAIL: at most 9)
        found = dict(
            Step.objects.filter(trace=trace, index__in=missing)
            .order_by()
            .values_list("index", "parent_index")
        )
        for index in missing:
            parent[index] = found.get(index)
        missing = {p for p in found.values() if p is not None and p not in parent}
    result: dict[int, int] = {}

    def depth(index: int) -> int:
        chain = []
        while index not in result and parent.get(index) is not None:
            chain.append(index)
            index = parent[index]
        base = result.setdefault(index, 0)
        for offset, node in enumerate(reversed(chain), start=1):
            result[node] = base + offset
        return result[chain[0]] if chain else base

    return {s.index: depth(s.index) for s in steps}


@dataclass
class Row:
    step: Step
    depth: int
    has_children: bool
    closes: range  # how many open subtrees end after this row
    plumbing: bool
    bar_x: float
    bar_width: float

    @property
    def depth_class(self) -> int:
        return min(self.depth, MAX_DEPTH_CLASS)


def decorate(steps: list[Step]) -> None:
    """Per-step facts the templates show: ``duration_ms``, ``cost``, ``is_plumbing``, ``failed``."""
    for s in steps:
        s.duration_ms = (
            (s.ended_at - s.started_at).total_seconds() * 1000
            if s.started_at and s.ended_at and s.ended_at >= s.started_at
            else None
        )
        cost = as_float(getattr(s, "cost_text", None))
        # Langfuse gives every span a cost of 0; only LLM calls (or spans that did cost something) show one.
        s.cost = cost if cost and cost > 0 or s.kind == StepKind.LLM_CALL else None
        s.is_plumbing = is_plumbing(
            name=s.tool_name or s.speaker, step_kind=s.kind, span_kind=getattr(s, "span_type", "") or ""
        )
        s.failed = (getattr(s, "status_text", "") or "").upper() in ("ERROR", "STATUS_CODE_ERROR")


def rows(*, trace: Trace, steps: list[Step], totals: TraceTotals) -> list[Row]:
    """The waterfall's rows in step order, each knowing its depth and how many subtrees close after it."""
    if not any(s.started_at or s.parent_index is not None for s in steps):
        return []  # a flat message log (Who&When): no tree and no times, the step list says it all
    depth = depths(trace=trace, steps=steps)
    in_window = {s.index for s in steps}
    has_children = {s.parent_index for s in steps if s.parent_index in in_window}
    t0, total = totals.started, totals.duration_ms or 0
    result: list[Row] = []
    open_stack: list[int] = []  # indices of the open subtrees (rows with children), innermost last
    by_index = {x.index: x for x in steps}
    for s in steps:
        while open_stack and not _descends(s, open_stack[-1], by_index):
            open_stack.pop()
            result[-1].closes = range(len(result[-1].closes) + 1)
        x = width = 0.0
        if t0 and total and s.started_at:
            x = max(0.0, (s.started_at - t0).total_seconds() * 1000 / total * BAR_WIDTH)
            width = max(2.0, min(BAR_WIDTH - x, (getattr(s, "duration_ms", None) or 0) / total * BAR_WIDTH))
        result.append(
            Row(
                step=s,
                depth=depth[s.index],
                has_children=s.index in has_children,
                closes=range(0),
                plumbing=getattr(s, "is_plumbing", False),
                bar_x=round(x, 1),
                bar_width=round(width, 1),
            )
        )
        if s.index in has_children:
            open_stack.append(s.index)
    if result:
        result[-1].closes = range(len(result[-1].closes) + len(open_stack))
    return result


def _descends(step: Step, ancestor: int, steps_by_index: dict[int, Step]) -> bool:
    index = step.parent_index
    while index is not None:
        if index == ancestor:
            return True
        parent = steps_by_index.get(index)
        index = parent.parent_index if parent else None
    return False


def root_answer(*, trace: Trace, preview: int) -> LongText | None:
    """The run's final answer when step 0 is the root span of a span tree (the other spans hang under it): the
    root's output (OpenInference ``output.value``, else the text the importer kept for it unless that is just the
    task). Shown in the header, so the root is not read as the run's first step. Only its first ``preview``
    characters and its length leave the database (a 1 MB answer must not make a 1 MB page)."""
    if trace.step_count < 2:
        return None
    root = (
        _with_previews(Step.objects.filter(trace=trace, index=0), preview)
        .annotate(output=Substr(root_output(), 1, preview), output_length=Length(root_output()))
        .only("index", "span_id", "parent_index", "kind", "speaker")
        .first()
    )
    if root is None or root.parent_index is not None or not root.span_id or root.kind == StepKind.LLM_CALL:
        return None
    if not Step.objects.filter(trace=trace, index=1, parent_index=0).order_by().exists():
        return None
    if root.output:
        return _long(root.output, root.output_length, ANSWER, 0)
    # The TRAIL reader keeps a root's output as a child step "<root name> (output)", timed at the root's end, so
    # among the last steps: look there only (an index range), never through a 100,000-step trace.
    output_step = Step.objects.filter(
        trace=trace,
        index__gte=trace.step_count - OUTPUT_STEP_WINDOW,
        parent_index=0,
        speaker=f"{root.speaker} (output)",
    ).only("index")
    if output := _with_previews(output_step, preview).order_by("-index").first():
        return _long(output.head, output.head_length, CONTENT, output.index) if output.head else None
    if root.head_length <= preview:
        is_task = root.head.strip() == trace.question.strip()
    else:  # only the start was read: the task is as long and starts the same
        is_task = root.head_length == len(trace.question) and trace.question.startswith(root.head)
    return None if is_task or not root.head else _long(root.head, root.head_length, CONTENT, 0)


def _with_previews(steps: Any, preview: int) -> Any:
    return steps.annotate(head=Substr("content", 1, preview), head_length=Length("content"))


def _long(text: str, length: int, part: str, index: int) -> LongText:
    return LongText(text=text, length=length if length > len(text) else None, part=part, index=index)
