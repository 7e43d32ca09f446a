"""The full-text indexer: writes the search documents (``StepSearch``) of steps the write path left pending.

Importing a step and moving one used to compute its ``to_tsvector`` inside the writing transaction (an expression
index on ``tracing_step``): two thirds of the time of importing many small traces, and most of an OTLP renumbering.
Now the writers only mark a trace (``Trace.search_pending``: new traces start marked, an OTLP build that adds steps
to a known trace marks it) and ask for an indexing task once their transaction commits; the task writes the
documents of the steps above each trace's ``search_through`` in transactions of about ``BATCH_STEPS`` steps.
``tracing.search`` reads the text of steps not indexed yet directly, so a search is exact before, during and after.
The same statement adds the steps' lexemes to their trace's document (``TraceSearch``), which answers "which traces
match this word" from one row per trace.

Concurrency and crashes:

- The task locks the traces it indexes (``FOR UPDATE SKIP LOCKED``: two tasks split the work, and a trace a build is
  writing is left for the next run). A writer that adds steps to a known trace marks it in its own transaction, so
  it waits for the indexer's commit (or the indexer for the writer's): a step committed after the indexer read the
  trace always finds the trace marked again.
- Step ids only grow and a step is never edited in place, so "steps above ``search_through``" is exactly what is
  missing; a killed task rolls its batch back and the traces stay marked for the next run (a beat every minute
  sweeps up anything a lost message left behind).
- It never waits on a table lock either (``LOCK_TIMEOUT_MS``): a migration or a TRUNCATE goes first, the batch is
  rolled back and the traces stay marked.
- At most one task waits in the queue: ``search_index_schedule`` enqueues only when no earlier request is still
  waiting (a cache key the task clears when it starts).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from psycopg import errors

from config import broker

from ..search import CONFIG

logger = logging.getLogger(__name__)

# Steps per transaction: ~1 s of to_tsvector, short enough to hold the traces' row locks and for a trace build that
# arrives meanwhile to wait behind (``search_index_run`` gives way to builds between batches).
BATCH_STEPS = 5_000
YIELD_FOR = 2  # seconds before an indexer run that gave way to builds goes on
# Steps a run indexes when builds already wait as it starts (~0.1 s instead of a whole batch's ~1 s: the OTLP
# benchmark's worker spent up to two batches of it between the builds of one burst of requests).
GIVING_WAY_STEPS = 500
BATCH_TRACES = 500
QUEUED_KEY = "tracing:search-index-queued"
QUEUED_FOR = 600  # seconds; a lost message blocks new requests no longer than this (the beat runs meanwhile)
# The indexer never waits on a table lock (a migration, a TRUNCATE): it gives the batch up and the next run retries.
# Row locks it never waits on either (SKIP LOCKED). Without this, a TRUNCATE that had locked the step table while the
# indexer held the trace table deadlocked with it.
LOCK_TIMEOUT_MS = 200


def search_index_schedule() -> None:
    """Ask for an indexing run once the current transaction commits (PostgreSQL only: SQLite searches without the
    documents). Cheap to call often: one callback per transaction, one task waiting at a time."""
    if connection.vendor != "postgresql":
        return
    if connection.in_atomic_block and any(func is _enqueue for _, func, _ in connection.run_on_commit):
        return
    transaction.on_commit(_enqueue)


def _enqueue(countdown: float | None = None) -> None:
    """Queue an indexing run (in ``countdown`` seconds if given), unless one is already waiting."""
    from ..tasks import search_index_task

    # The cache down: the beat's sweep indexes later, and the search stays exact meanwhile.
    try:
        queued = cache.add(QUEUED_KEY, 1, timeout=QUEUED_FOR)
    except Exception:
        logger.warning("could not queue the search indexer; the periodic sweep will do it", exc_info=True)
        return
    # Not queued: a run is already waiting, and it will see these traces too. Not sent: the broker is down (logged
    # by broker.send); the mark goes so the next commit tries again, and the beat's sweep covers the gap.
    if queued and not broker.send(search_index_task, countdown=countdown):
        with contextlib.suppress(Exception):
            cache.delete(QUEUED_KEY)


def search_index_run() -> int:
    """The task's body: clear the waiting mark first (a writer committing from now on queues a new run), then
    index everything pending, giving way to trace builds: when one waits in the queue, the run stops after its
    current batch (after ``GIVING_WAY_STEPS`` steps if one waits already as it starts) and asks for another in
    ``YIELD_FOR`` seconds. Returns the number of steps indexed."""
    cache.delete(QUEUED_KEY)
    gave_way = False

    def stop() -> bool:
        nonlocal gave_way
        gave_way = builds_waiting()
        return gave_way

    try:
        # Builds wait already: a small batch only, so that indexing still moves on under a steady stream of them.
        if builds_waiting():
            gave_way = True
            indexed = search_index_pending(batch_steps=GIVING_WAY_STEPS, stop=lambda: True)
        else:
            indexed = search_index_pending(stop=stop)
    except OperationalError as exc:
        if not isinstance(exc.__cause__, errors.LockNotAvailable):
            raise
        logger.info("search indexer: a table is locked (%s); the next run goes on", exc)
        return 0
    if gave_way:  # stopped with steps left: go on once the builds had their turn
        _enqueue(countdown=YIELD_FOR)
    return indexed


def builds_waiting() -> bool:
    """Whether a trace build waits for a worker (an OTLP build's mark is cleared when the build starts): the traces
    users wait to see come before the search documents, whose steps a search reads directly meanwhile."""
    from ..models import OtlpPendingBuild

    return OtlpPendingBuild.objects.exists()


def search_index_pending(
    *,
    batch_steps: int | None = None,
    batch_traces: int = BATCH_TRACES,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Index the pending steps of every marked trace, batch after batch, until none is left (or only traces that
    another transaction holds, or ``stop`` says so after a batch). Returns the number of steps indexed."""
    if connection.vendor != "postgresql":
        return 0
    total = 0
    while True:
        indexed, more = _index_batch(batch_steps or BATCH_STEPS, batch_traces)
        total += indexed
        if not more or (stop is not None and stop()):
            return total


def _index_batch(batch_steps: int, batch_traces: int) -> tuple[int, bool]:
    """One transaction: lock up to ``batch_traces`` marked traces and index their next ``batch_steps`` steps, in
    step id order. Returns (steps indexed, whether to go on)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
        cursor.execute(
            "SELECT id, search_through, project_id, step_count FROM tracing_trace WHERE id IN ("
            "  SELECT id FROM tracing_trace WHERE search_pending ORDER BY id LIMIT %s"
            ") AND search_pending ORDER BY id FOR UPDATE SKIP LOCKED",
            [batch_traces],
        )
        locked = cursor.fetchall()
        if not locked:
            return 0, False
        ids = [row[0] for row in locked]
        through = {row[0]: row[1] for row in locked}
        # The steps' documents, and their lexemes added to their traces' documents (TraceSearch) in the same
        # statement: a search reading both sees a step in neither or in both.
        cursor.execute(
            """
            WITH todo AS (
                SELECT * FROM unnest(%(ids)s::bigint[], %(through)s::bigint[], %(projects)s::bigint[])
                AS todo(trace_id, through, project_id)
            ),
            -- Each trace's steps through its own index (LATERAL, OFFSET 0 keeps it apart): joined plainly, a
            -- planner without statistics (a bulk import not yet analysed) ANDed every step id above ``through``
            -- from the primary key into each trace's lookup, 75 ms a trace at 2.3 million steps.
            picked AS (
                SELECT p.id, p.trace_id FROM todo CROSS JOIN LATERAL (
                    SELECT s.id, s.trace_id FROM tracing_step AS s
                    WHERE s.trace_id = todo.trace_id AND s.id > todo.through OFFSET 0
                ) AS p
                ORDER BY p.id LIMIT %(limit)s
            ),
            docs AS MATERIALIZED (
                SELECT s.id, s.trace_id, to_tsvector(%(config)s::regconfig, COALESCE(s.content, '')) AS document
                FROM picked JOIN tracing_step AS s ON s.id = picked.id
            ),
            written AS (
                INSERT INTO tracing_stepsearch (step_id, trace_id, document)
                SELECT id, trace_id, document FROM docs
                ON CONFLICT (step_id) DO NOTHING
            ),
            -- Each trace's lexemes, repeated as often as its new steps hold them: array_to_tsvector keeps each
            -- once (three times faster than a DISTINCT first). Their length bounds the document's; only above a
            -- tsvector's limit are they counted once each, and a trace over it too gets no document (NULL).
            added AS (
                SELECT trace_id, array_agg(u.lexeme) AS lexemes, sum(octet_length(u.lexeme)) AS bytes
                FROM docs, unnest(tsvector_to_array(docs.document)) AS u(lexeme) GROUP BY trace_id
            ),
            vectors AS (
                SELECT trace_id, CASE WHEN bytes <= %(fits)s
                    OR (SELECT sum(octet_length(l)) FROM (SELECT DISTINCT unnest(lexemes) AS l) AS d) <= %(fits)s
                    THEN array_to_tsvector(lexemes) END AS document
                FROM added
            ),
            merged AS (
                INSERT INTO tracing_tracesearch AS ts (trace_id, project_id, document, exact)
                SELECT vectors.trace_id, todo.project_id, vectors.document, vectors.document IS NOT NULL
                FROM vectors JOIN todo ON todo.trace_id = vectors.trace_id
                -- The union of two documents holds at most the sum of their lexemes: when that outgrows a
                -- tsvector, the document goes NULL and the trace inexact (a search checks its steps).
                ON CONFLICT (trace_id) DO UPDATE SET
                    document = CASE WHEN ts.document IS NOT NULL AND EXCLUDED.document IS NOT NULL
                        AND COALESCE((SELECT sum(octet_length(l)) FROM unnest(tsvector_to_array(ts.document)) AS l), 0)
                        + COALESCE((SELECT sum(octet_length(l)) FROM unnest(tsvector_to_array(EXCLUDED.document)) AS l), 0)
                            <= %(fits)s
                        THEN ts.document || EXCLUDED.document END,
                    exact = ts.exact AND ts.document IS NOT NULL AND EXCLUDED.document IS NOT NULL
                        AND COALESCE((SELECT sum(octet_length(l)) FROM unnest(tsvector_to_array(ts.document)) AS l), 0)
                        + COALESCE((SELECT sum(octet_length(l)) FROM unnest(tsvector_to_array(EXCLUDED.document)) AS l), 0)
                            <= %(fits)s
            )
            SELECT trace_id, max(id), count(*) FROM picked GROUP BY trace_id
            """,
            {
                "ids": ids,
                "through": [through[i] for i in ids],
                "projects": [row[2] for row in locked],
                "limit": batch_steps,
                "config": CONFIG,
                "fits": TRACE_LEXEME_BYTES,
            },
        )
        done = {trace_id: (last, n) for trace_id, last, n in cursor.fetchall()}
        _rebuild_inexact(cursor, [row[0] for row in locked if row[3] <= batch_steps])
        indexed = sum(n for _, n in done.values())
        # The limit may have stopped inside a trace: all of the batch's traces stay marked for the next turn.
        cut = indexed >= batch_steps
        cursor.execute(
            "UPDATE tracing_trace AS t SET search_through = GREATEST(t.search_through, v.last), "
            "search_pending = v.pending "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::boolean[]) AS v(id, last, pending) WHERE t.id = v.id",
            [ids, [done.get(i, (through[i], 0))[0] for i in ids], [cut] * len(ids)],
        )
    return indexed, True


# A trace document's lexemes, at most: a tsvector holds 1,048,575 bytes of them. A trace above it has no document
# and is checked step by step (TraceSearch.exact false).
TRACE_LEXEME_BYTES = 1_000_000


def _rebuild_inexact(cursor, trace_ids: list[int]) -> None:
    """Make the inexact documents among ``trace_ids`` (traces of at most a batch's steps, locked by the batch) the
    lexemes of their step documents again, so searches stop checking their steps. Their rows are locked first and
    the step documents read in the next statement, which sees whatever an OTLP build committed before it; a build
    committing after marks the document inexact again (it waits for this transaction)."""
    if not trace_ids:
        return
    cursor.execute(
        "SELECT trace_id FROM tracing_tracesearch WHERE trace_id = ANY(%s) AND NOT exact ORDER BY trace_id FOR UPDATE",
        [trace_ids],
    )
    inexact = [row[0] for row in cursor.fetchall()]
    if not inexact:
        return
    cursor.execute(
        """
        WITH added AS (
            SELECT trace_id, array_agg(u.lexeme) AS lexemes, sum(octet_length(u.lexeme)) AS bytes
            FROM tracing_stepsearch AS s, unnest(tsvector_to_array(s.document)) AS u(lexeme)
            WHERE s.trace_id = ANY(%(ids)s) GROUP BY trace_id
        ),
        vectors AS (
            SELECT trace_id, CASE WHEN bytes <= %(fits)s
                OR (SELECT sum(octet_length(l)) FROM (SELECT DISTINCT unnest(lexemes) AS l) AS d) <= %(fits)s
                THEN array_to_tsvector(lexemes) END AS document
            FROM added
        )
        UPDATE tracing_tracesearch AS ts
        SET document = CASE WHEN vectors.trace_id IS NULL THEN ''::tsvector ELSE vectors.document END,
            exact = vectors.trace_id IS NULL OR vectors.document IS NOT NULL
        FROM (SELECT unnest(%(ids)s::bigint[]) AS trace_id) AS wanted LEFT JOIN vectors USING (trace_id)
        WHERE ts.trace_id = wanted.trace_id
        """,
        {"ids": inexact, "fits": TRACE_LEXEME_BYTES},
    )
