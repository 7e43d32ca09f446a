"""Full-text search over step content, for the trace list and ``GET /api/traces?q=``.

PostgreSQL: ``to_tsvector('simple', content) @@ websearch_to_tsquery('simple', q)``, served by the GIN index of
migration 0010 (``step_content_fts``); the query syntax is the web-search one people know ("quoted phrase", -word,
or). SQLite (embedded mode, one person's laptop): no full-text index; the documented fallback is a case-insensitive
substring match (``icontains``) over the steps of the one project being listed, which stays usable for the few
thousand traces such an install holds.

A search runs once per request (``find``): one pass over the matching steps gives both the traces found and each
one's first hit, and the list's count and page then filter on those ids. Reading the matching steps is what a search
costs: the GIN index finds them exactly (no recheck for plain words, so a stored tsvector column would not help), but
each one's ``trace_id`` is read from its row. It used to happen three times (count, page, first hits); at 5,000 traces
and a word in every trace ("the", 84,772 steps) that was 159 + 137 + 92 ms, now one pass of 84-140 ms and two ~10 ms
queries on the ids (EXPLAIN ANALYZE, 2 loaded cores; page figures in bench/scale.py ``trace_list_search_*``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.db.models import BooleanField, F, Func, Min, Q, QuerySet, Value

from .models import Step, Trace

CONFIG = "simple"  # must match the index expression of migration 0010


@dataclass(frozen=True)
class Found:
    """What a search of one project finds: every trace whose name, task, source id or step content matches, and for
    those found by content, the first matching step (the list links straight to it)."""

    trace_ids: list[int] = field(default_factory=list)
    first_hits: dict[int, int] = field(default_factory=dict)


def matching_steps(q: str) -> QuerySet[Step]:
    """Steps whose content matches ``q`` (any trace: callers narrow by trace or project)."""
    if connection.vendor == "postgresql":
        return Step.objects.annotate(fts=SearchVector("content", config=CONFIG)).filter(
            fts=SearchQuery(q, config=CONFIG, search_type="websearch")
        )
    return Step.objects.filter(content__icontains=q)


def _named(q: str) -> Q:
    return Q(name__icontains=q) | Q(question__icontains=q) | Q(external_id__icontains=q)


def find(q: str, *, project_id: int) -> Found:
    """Search one project: two queries, whatever the size of the result.

    The GIN index finds the matching steps; they are then narrowed to the project's traces by an uncorrelated
    ``trace_id + 0 IN (SELECT id …)``. Never trace by trace: through the trace index the planner computes
    ``to_tsvector`` on every step of each trace (3.6 s for a list holding one 100,000-step trace,
    bench/viewer_waterfall_speed.py), and on a small project it chose exactly that for a plain ``trace_id IN``.
    """
    project_traces = Trace.objects.filter(project_id=project_id).values("pk")
    hits = dict(
        matching_steps(q)
        .annotate(in_trace=F("trace_id") + 0)  # as in first_hits: the trace index would walk every step
        .filter(in_trace__in=project_traces)
        .order_by()  # Step's default ordering would join Trace and split the groups
        .values("trace_id")
        .annotate(first=Min("index"))
        .values_list("trace_id", "first")
    )
    named = Trace.objects.filter(_named(q), project_id=project_id).values_list("pk", flat=True)
    return Found(trace_ids=sorted(set(hits) | set(named)), first_hits=hits)


class _IdIn(Func):
    """``(id = ANY(<array>))``: the found ids as one array parameter, where ``IN (…)`` would send one parameter per
    trace (20,000 at team scale)."""

    arg_joiner = " = ANY("
    template = "(%(expressions)s::bigint[]))"
    output_field = BooleanField()


def trace_matches(q: str, found: Found | None = None) -> Q:
    """A filter for traces: the name, task or source id contains ``q``, or one of its steps' content matches.

    With ``found`` (from ``find``), a filter on its ids: the count and the page reuse the one pass over the matching
    steps. Without, the same condition in SQL, the step part an uncorrelated ``IN (SELECT trace_id …)`` served by the
    GIN index.
    """
    if found is not None:
        if connection.vendor == "postgresql":
            return Q(_IdIn(F("pk"), Value(found.trace_ids)))
        return Q(pk__in=found.trace_ids)  # SQLite: a few thousand traces at most, under its 32,766 parameters
    steps = matching_steps(q).order_by().values("trace_id")
    return _named(q) | Q(pk__in=steps)


def first_hits(q: str, trace_ids: list[int]) -> dict[int, int]:
    """For each listed trace, the first step whose content matches ``q``: the list links straight to it."""
    # "trace_id + 0": keeps the planner off the trace index, which would walk a 10,000-step trace computing
    # to_tsvector for every step (0.9 s in bench/viewer_speed.py); the GIN index finds the hits instead.
    rows = (
        matching_steps(q)
        .annotate(in_trace=F("trace_id") + 0)
        .filter(in_trace__in=trace_ids)
        .order_by()
        .values("trace_id")
        .annotate(first=Min("index"))
        .values_list("trace_id", "first")
    )
    return dict(rows)
