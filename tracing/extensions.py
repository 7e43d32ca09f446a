"""Extension points through which apps further up the dependency chain (attribution) add to tracing's pages
without tracing importing them: extra trace-list columns, filters, sort keys and API item fields, per-step scores for
the step list's blame strip, human names for label categories, and a call when a trace's steps are renumbered (so
what an app stores per step, such as a verdict's scores, can follow).

An app registers its implementation in its ``AppConfig.ready()``; tracing asks the registry and renders what comes
back (plain strings and numbers, auto-escaped by the templates). With nothing registered the pages look as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from django import forms
    from django.db.models import QuerySet

    from .models import Trace


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    sort_key: str = ""  # one of the extension's ``orderings``: the header becomes a sort link


@dataclass(frozen=True)
class Cell:
    """One cell of an extension's column: text, a tooltip and CSS classes, never markup."""

    text: str = ""
    title: str = ""
    css: str = ""
    href: str = ""  # a link on the text (a path of this site)
    tag: str = ""  # a short second word shown as a tag, e.g. the verdict's method


class TraceListExtension(Protocol):
    """Columns, filters, sort keys and API item fields of the trace list (the page and ``GET /api/traces``)."""

    columns: tuple[Column, ...]
    orderings: tuple[str, ...]  # sort keys it adds: ``ordering=<key>`` ascending, ``-<key>`` descending

    def filter_fields(self) -> dict[str, forms.Field]:
        """Form fields added to ``TraceFilterForm``: their names are the URL's and the API's parameter names."""

    def annotate(self, traces: QuerySet[Trace], params: Mapping[str, Any]) -> QuerySet[Trace]:
        """The queryset annotated and filtered by the cleaned values of ``filter_fields`` (missing when invalid or
        empty). Use Subquery/Exists annotations: the list must cost the same number of queries for any page."""

    def order_by(self, traces: QuerySet[Trace], key: str) -> tuple[QuerySet[Trace], list[str]]:
        """For one of ``orderings``: the queryset annotated with what ``key`` sorts by, and those annotations' names,
        most significant first (tracing adds the direction, NULLs last, and the tie-breaker)."""

    def cells(self, traces: list[Trace]) -> dict[int, list[Cell]]:
        """The cells of ``columns`` for one page of traces, by trace id, in a fixed number of queries."""

    def api_fields(self, traces: list[Trace]) -> dict[int, dict[str, Any]]:
        """Extra JSON fields of each ``GET /api/traces`` item for one page of traces (queried by ``annotate``), by
        trace id, in a fixed number of queries. The app documents them in the OpenAPI schema itself."""


@dataclass(frozen=True)
class StepScores:
    """Per-step scores (each in [0, 1]) of one verdict for a window of steps: the blame strip."""

    label: str  # what the scores come from, e.g. "heuristic verdict of 2025-03-01 12:00"
    scores: dict[int, float]  # step index -> score, for the requested window only
    blamed_agent: str = ""
    blamed_step: int | None = None


class StepScoreProvider(Protocol):
    def __call__(self, trace: Trace, first: int, last: int) -> StepScores | None:
        """Scores of steps ``first``..``last`` (inclusive) of the trace, or None when there are none."""


class StepsMovedHook(Protocol):
    def __call__(
        self, trace_id: int, mapping: Mapping[int, int], n_steps: int, dropped: frozenset[int]
    ) -> None:
        """The trace's steps were renumbered, inside the transaction that did it: ``mapping`` is {old index: new
        index} of every step that moved, ``dropped`` the old indexes of steps that are gone, ``n_steps`` the new
        step count. Every other old index still holds the same step; a new index nothing maps to is a new step."""


class TracesDeletedHook(Protocol):
    def __call__(self, project_id: int, trace_ids: list[int]) -> None:
        """These traces are about to be deleted, inside the transaction that deletes them (their rows and what
        cascades from them are still there): work in progress over them lets them go."""


class TracesArrivedHook(Protocol):
    def __call__(self, project_id: int, trace_ids: list[int]) -> None:
        """New traces came in from outside (an import, the API, the OTLP receiver), inside the transaction that wrote
        them: whatever the hook writes commits or rolls back with them. Not called for traces the product made itself
        (sandbox runs, injected faults)."""


@dataclass
class _Registry:
    trace_list: list[TraceListExtension] = field(default_factory=list)
    step_scores: list[StepScoreProvider] = field(default_factory=list)
    steps_moved: list[StepsMovedHook] = field(default_factory=list)
    traces_arrived: list[TracesArrivedHook] = field(default_factory=list)
    traces_deleted: list[TracesDeletedHook] = field(default_factory=list)
    category_namer: Callable[[str, str], str] | None = None  # (category, family) -> a person's name


_registry = _Registry()


def register_trace_list(extension: TraceListExtension) -> None:
    if extension not in _registry.trace_list:  # ready() may run twice (tests, reloads): register once
        _registry.trace_list.append(extension)


def register_step_scores(provider: StepScoreProvider) -> None:
    if provider not in _registry.step_scores:
        _registry.step_scores.append(provider)


def register_steps_moved(hook: StepsMovedHook) -> None:
    if hook not in _registry.steps_moved:
        _registry.steps_moved.append(hook)


def register_traces_arrived(hook: TracesArrivedHook) -> None:
    if hook not in _registry.traces_arrived:
        _registry.traces_arrived.append(hook)


def register_traces_deleted(hook: TracesDeletedHook) -> None:
    if hook not in _registry.traces_deleted:
        _registry.traces_deleted.append(hook)


def register_category_namer(namer: Callable[[str, str], str]) -> None:
    _registry.category_namer = namer


def trace_list_extensions() -> list[TraceListExtension]:
    return list(_registry.trace_list)


def trace_list_columns() -> list[Column]:
    return [column for ext in _registry.trace_list for column in ext.columns]


def trace_list_orderings() -> list[str]:
    return [key for ext in _registry.trace_list for key in ext.orderings]


def trace_list_order_by(traces: QuerySet[Trace], key: str) -> tuple[QuerySet[Trace], list[str]] | None:
    """The extension that sorts by ``key`` annotates ``traces`` for it; None when no extension knows the key."""
    for ext in _registry.trace_list:
        if key in ext.orderings:
            return ext.order_by(traces, key)
    return None


def trace_list_api_fields(traces: list[Trace]) -> dict[int, dict[str, Any]]:
    """Every extension's extra fields of each API item, by trace id (an empty dict where none has any)."""
    fields: dict[int, dict[str, Any]] = {t.pk: {} for t in traces}
    for ext in _registry.trace_list:
        for pk, found in ext.api_fields(traces).items():
            if pk in fields:
                fields[pk].update(found)
    return fields


def trace_list_cells(traces: list[Trace]) -> dict[int, list[Cell]]:
    """Every extension column's cell for each trace of the page, in column order (an empty cell where an extension
    has nothing for a trace)."""
    cells: dict[int, list[Cell]] = {t.pk: [] for t in traces}
    for ext in _registry.trace_list:
        found = ext.cells(traces)
        for pk, row in cells.items():
            row.extend(found.get(pk) or [Cell()] * len(ext.columns))
    return cells


def step_scores(trace: Trace, first: int, last: int) -> StepScores | None:
    """The first registered provider's scores for the window, or None."""
    for provider in _registry.step_scores:
        if (found := provider(trace, first, last)) is not None:
            return found
    return None


def steps_moved(
    trace_id: int, mapping: Mapping[int, int], n_steps: int, dropped: frozenset[int] = frozenset()
) -> None:
    """Tell every registered hook that the trace's steps were renumbered (see ``StepsMovedHook``)."""
    for hook in _registry.steps_moved:
        hook(trace_id, mapping, n_steps, dropped)


def traces_arrived(project_id: int, trace_ids: list[int]) -> None:
    """Tell every registered hook that these traces arrived (see ``TracesArrivedHook``)."""
    if trace_ids:
        for hook in _registry.traces_arrived:
            hook(project_id, trace_ids)


def traces_deleted(project_id: int, trace_ids: list[int]) -> None:
    """Tell every registered hook that these traces are being deleted (see ``TracesDeletedHook``)."""
    if trace_ids:
        for hook in _registry.traces_deleted:
            hook(project_id, trace_ids)


def category_name(category: str, family: str = "") -> str:
    """A person's name for a label's category (a taxonomy code, or a dataset's own wording such as TRAIL's
    "Tool-related", read in its ``family``); the category as written when no app names categories."""
    namer = _registry.category_namer
    if namer and category:
        return namer(category, family)
    return f"{family}: {category}" if family and category else category
