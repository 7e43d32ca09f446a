"""Full-text search over step content, for the trace list and ``GET /api/traces?q=``.

PostgreSQL: ``document @@ websearch_to_tsquery('simple', q)`` over ``StepSearch``, each step's stored
``to_tsvector('simple', content)`` behind a GIN index (migration 0013); the query syntax is the web-search one people
know ("quoted phrase", -word, or). The documents are written after the steps commit (``services.search_index``), so
steps of traces still marked ``search_pending`` above their ``search_through`` are matched on their text directly, by
the same expression: a search finds a step the moment it is committed, and the index only makes it cheap. SQLite
(embedded mode, one person's laptop): no full-text index; the documented fallback is a case-insensitive substring
match (``icontains``) over the steps of the one project being listed, which stays usable for the few thousand traces
such an install holds.

Which traces match is read from one document per trace where that is exact (``TraceSearch``, the lexemes of all its
step documents, migration 0018): a word, or words joined by "or", matches a trace exactly when it matches one of its
steps. Words that must share a step take the traces whose document holds them all and check those traces' steps; a
phrase or a -word needs positions or an absence, so it reads the step documents as before (``_shape``). A trace whose
document may hold more than its steps (an OTLP build replaced some) is checked on its steps until the indexer
rebuilds it. The name, task and source id match (``icontains``) goes through trigram indexes (migration 0019).

A search runs once per request (``find``): one query over the documents and the few unindexed steps gives the traces
found, and the list's count and page then filter on those ids; the first hit of each trace on the page (the "match
in step N" link) is one more query over those 25 traces (``first_hits``). Page figures in bench/scale.py
``trace_list_search_*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, F, Func, Min, OuterRef, Q, QuerySet, Value

from .models import Step, StepSearch, Trace, TraceSearch

CONFIG = "simple"  # the text search configuration of the stored documents (services.search_index) and queries


@dataclass(frozen=True)
class Found:
    """What a search of one project finds: every trace whose name, task, source id or step content matches. (The
    first matching step of each, which the list links to, is read for the page's rows only: ``first_hits``.)"""

    trace_ids: list[int] = field(default_factory=list)


def _query(q: str) -> SearchQuery:
    return SearchQuery(q, config=CONFIG, search_type="websearch")


def _indexed(q: str) -> QuerySet[StepSearch]:
    """Documents matching ``q`` (the GIN index of migration 0013)."""
    return StepSearch.objects.filter(document=_query(q))


def _unindexed(q: str) -> QuerySet[Step]:
    """Steps not indexed yet (of traces marked pending, above their indexed part) whose text matches ``q``: the
    same ``to_tsvector`` the indexer stores, computed on the spot for these few steps."""
    return (
        Step.objects.filter(trace__search_pending=True, pk__gt=F("trace__search_through"))
        .annotate(fts=SearchVector("content", config=CONFIG))
        .filter(fts=_query(q))
    )


def _named(q: str) -> Q:
    """The name, task or source id contains ``q``. PostgreSQL: each through its trigram index, which holds the
    traces the indexer has done (migration 0024), and the traces still pending through theirs: one arm each, so
    the planner ORs four index scans (three trigram indexes and the pending traces') instead of reading every
    trace."""
    columns = [Q(name__icontains=q), Q(question__icontains=q), Q(external_id__icontains=q)]
    anywhere = columns[0] | columns[1] | columns[2]
    if connection.vendor != "postgresql":
        return anywhere
    done = Q(search_pending=False)
    return (
        (done & columns[0]) | (done & columns[1]) | (done & columns[2]) | (Q(search_pending=True) & anywhere)
    )


def first_hits(q: str, trace_ids: list[int]) -> dict[int, int]:
    """{trace id: index of its first matching step} among the listed traces (a page of the list links straight to
    each one's first hit).

    PostgreSQL, one query of two halves: the listed traces' matching documents (stored vectors checked, no
    ``to_tsvector`` computed) joined to their steps by primary key for the step index, and their unindexed steps'
    text. Never the steps of a trace through the step table with ``to_tsvector``: that cost 3.6 s for a list holding
    one 100,000-step trace (bench/viewer_waterfall_speed.py).
    """
    if connection.vendor != "postgresql":
        return dict(
            Step.objects.filter(content__icontains=q, trace_id__in=trace_ids)
            .order_by()
            .values("trace_id")
            .annotate(first=Min("index"))
            .values_list("trace_id", "first")
        )
    indexed = (
        _indexed(q)
        .filter(trace_id__in=trace_ids)
        .order_by()
        .values("trace_id")
        .annotate(first=Min("step__index"))
        .values_list("trace_id", "first")
    )
    fresh = (
        _unindexed(q)
        .filter(trace_id__in=trace_ids)
        .order_by()  # Step's default ordering would join Trace and split the groups
        .values("trace_id")
        .annotate(first=Min("index"))
        .values_list("trace_id", "first")
    )
    hits: dict[int, int] = {}
    for trace_id, first in indexed.union(fresh, all=True):  # a trace may be in both halves
        hits[trace_id] = min(first, hits.get(trace_id, first))
    return hits


# A tsquery's lexemes as PostgreSQL prints them ('it''s'), to read its operators without them.
_LEXEME = re.compile(r"'(?:[^']|'')*'")


def _shape(q: str) -> str:
    """How trace documents can answer ``q``: "any" for one word or words joined by "or" (a trace's lexemes contain
    one of them exactly when one of its steps does), "all" for words that must all be in one step (the trace's
    lexemes hold them when a step does, not the other way round: its steps are checked), "steps" for a quoted phrase
    or a -word (positions, or an absence, which the stripped trace documents cannot tell)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT websearch_to_tsquery(%s::regconfig, %s)::text", [CONFIG, q])
        operators = _LEXEME.sub("", cursor.fetchone()[0])
    if "!" in operators or "<" in operators:
        return "steps"
    return "all" if "&" in operators else "any"


def _content_queries(q: str, project_id: int) -> list[QuerySet]:
    """The queries whose union is the project's traces with a matching step, indexed or not (none reads a step)."""
    fresh = _unindexed(q).filter(trace__project_id=project_id).order_by().values_list("trace_id")
    shape = _shape(q)
    if shape == "steps":
        return [_indexed(q).filter(trace__project_id=project_id).order_by().values_list("trace_id"), fresh]
    docs = TraceSearch.objects.filter(project_id=project_id).order_by()
    matched = docs.filter(document=_query(q))
    in_a_step = Exists(StepSearch.objects.filter(trace_id=OuterRef("trace_id"), document=_query(q)))
    # Documents that may hold more than their steps (or none, too large): few, each checked on its own steps.
    unknown = docs.filter(exact=False, document__isnull=True).filter(in_a_step)
    if shape == "any":
        hits = [matched.filter(exact=True), matched.filter(exact=False).filter(in_a_step)]
    else:
        hits = [matched.filter(in_a_step)]
    return [*(part.values_list("trace_id") for part in [*hits, unknown]), fresh]


def _matching_traces(q: str, project_id: int) -> set[int]:
    """The project's traces with a matching step, indexed or not: one query. A word (or words joined by "or") is
    answered from one document per trace (``TraceSearch``): a word in every trace of a 20,000-trace project matches
    341,536 step documents, and finding their traces read the whole step document table (200-300 ms)."""
    first, *others = _content_queries(q, project_id)
    # For a common word the planner prefers reading every document to the GIN index, not knowing that reading one
    # means fetching it from TOAST: 115-156 ms against 41-48 ms through the index for a word in all 5,000 traces.
    # So this one query runs without sequential scans; the setting ends with it, whatever the outer transaction.
    # (A failed query rolls the block back, and the setting with it.)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        found = {trace_id for (trace_id,) in first.union(*others)}  # UNION: distinct trace ids
        cursor.execute("RESET enable_seqscan")
    return found


def find(q: str, *, project_id: int, traces: int | None = None) -> Found:
    """Search one project: two queries (the steps, indexed or not, and the names), whatever the size of the
    result. With ``traces`` (how many the project holds, which the trace list reads for its header anyway), the
    names are not read when the steps matched every trace already: a word in every trace made that match read
    every trace row for nothing (60-80 ms at 20,000 traces; the trigram indexes of migration 0019 do not help a
    word that most names or tasks contain)."""
    if connection.vendor == "postgresql":
        content = _matching_traces(q, project_id)
    else:
        content = set(
            Step.objects.filter(content__icontains=q, trace__project_id=project_id)
            .order_by()
            .values_list("trace_id", flat=True)
            .distinct()
        )
    if traces is not None and len(content) >= traces:
        return Found(trace_ids=sorted(content))
    named = Trace.objects.filter(_named(q), project_id=project_id).values_list("pk", flat=True)
    return Found(trace_ids=sorted(content | set(named)))


class _IdIn(Func):
    """``(id = ANY(<array>))``: the found ids as one array parameter, where ``IN (…)`` would send one parameter per
    trace (20,000 at team scale)."""

    arg_joiner = " = ANY("
    template = "(%(expressions)s::bigint[]))"
    output_field = BooleanField()


def trace_matches(q: str, found: Found | None = None) -> Q:
    """A filter for traces: the name, task or source id contains ``q``, or one of its steps' content matches.

    With ``found`` (from ``find``), a filter on its ids: the count and the page reuse the one pass over the matching
    steps. Without, the same condition in SQL: uncorrelated ``IN (SELECT trace_id …)`` over the documents (the GIN
    index) and over the unindexed steps.
    """
    if found is not None:
        if connection.vendor == "postgresql":
            return Q(_IdIn(F("pk"), Value(found.trace_ids)))
        return Q(pk__in=found.trace_ids)  # SQLite: a few thousand traces at most, under its 32,766 parameters
    if connection.vendor == "postgresql":
        indexed = _indexed(q).values("trace_id")
        return _named(q) | Q(pk__in=indexed) | Q(pk__in=_unindexed(q).order_by().values("trace_id"))
    return _named(q) | Q(pk__in=Step.objects.filter(content__icontains=q).order_by().values("trace_id"))
