"""Full-text search over step content, for the trace list and ``GET /api/traces?q=``.

PostgreSQL: ``to_tsvector('simple', content) @@ websearch_to_tsquery('simple', q)``, served by the GIN index of
migration 0010 (``step_content_fts``); the query syntax is the web-search one people know ("quoted phrase", -word,
or). SQLite (embedded mode, one person's laptop): no full-text index; the documented fallback is a case-insensitive
substring match (``icontains``) over the steps of the one project being listed, which stays usable for the few
thousand traces such an install holds.
"""

from __future__ import annotations

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.db.models import F, Min, Q, QuerySet

from .models import Step

CONFIG = "simple"  # must match the index expression of migration 0010


def matching_steps(q: str) -> QuerySet[Step]:
    """Steps whose content matches ``q`` (any trace: callers narrow by trace or project)."""
    if connection.vendor == "postgresql":
        return Step.objects.annotate(fts=SearchVector("content", config=CONFIG)).filter(
            fts=SearchQuery(q, config=CONFIG, search_type="websearch")
        )
    return Step.objects.filter(content__icontains=q)


def trace_matches(q: str) -> Q:
    """A filter for traces: the name, task or source id contains ``q``, or one of its steps' content matches.

    The step condition is an uncorrelated ``IN (SELECT trace_id …)``, not a correlated ``EXISTS``: with EXISTS the
    planner walked each trace's steps through the (trace, index) index and computed ``to_tsvector`` on every one,
    3.6 s for a list holding one 100,000-step trace (bench/viewer_waterfall_speed.py); the uncorrelated form can
    only be served well by the GIN index, and is.
    """
    steps = matching_steps(q).order_by().values("trace_id")
    return Q(name__icontains=q) | Q(question__icontains=q) | Q(external_id__icontains=q) | Q(pk__in=steps)


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
