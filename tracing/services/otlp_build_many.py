"""The builds a request asked for, together: new traces in one transaction with the import writer's batched path.

An SDK's BatchSpanProcessor sends the spans of many short traces per request, most of them new and complete (agent
runs that ended). Built one by one, each cost ~11 statements and a commit (~20 ms a trace, ``bench/otlp_ingest.py``
``wide``). Here the request's traces that are new (no trace row yet) and small (at most ``otlp_build.BUILD_BATCH``
spans waiting) are derived exactly as ``otlp_build`` derives a first build (``_derive``: the same step order, parent
links, agents and header) and written as prepared traces by the import writer (``traces_create_prepared``: unique
names, traces, agents, one COPY of every step, waiting label files), then every span's placement in one UPDATE: a
fixed number of statements for up to ``BATCH_TRACES`` traces. The rest -- traces already built once (incremental),
one another build holds, one too big, one whose every span waits for a parent -- go to ``otlp_trace_build``, one at a
time, as before.

A new trace some of whose spans name a parent not received yet is, when the caller asks (``wait_for_parents``: a
request's build), left unbuilt for now: an SDK exports spans as they end, children first, so the rest of such a
trace is usually in the exporter's next request, whose build then takes the whole trace as new. Built at once, its
first part became steps and the parents' arrival moved every one of them (a known trace's incremental build, ~4x
a new trace's cost in ``bench/otlp_ingest.py`` ``wide``, where 19 of 200 traces straddle two requests). A trace
waits once: the build of its second request builds it, parent or not (a long run whose root ends last is built as it
goes), and so does the build the caller sends ``PARENT_WAIT`` seconds later if no request comes (``tracing.tasks``);
the reaper's sweep of unbuilt spans covers a lost task.

Locks: the same per-trace advisory lock as ``otlp_build._lock``, but tried (``pg_try_advisory_xact_lock``), never
waited on, so two batches never deadlock; a trace whose lock is held is built singly afterwards (which waits).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import psycopg
from django.db import connection, transaction
from django.db.models import Count

from .. import extensions
from ..formats.base import ParsedAgent, ParsedTrace
from ..models import OtlpSpan, Project, Trace
from .otlp_build import _ROW_FIELDS, BUILD_BATCH, OTLP_FORMAT, otlp_trace_build, save_placements
from .otlp_derive import _defaults, _derive, _level
from .otlp_records import _header, _parsed, _row_service
from .writer import trace_prepare, traces_create_prepared

BATCH_TRACES = 200  # traces per transaction
BATCH_SPANS = 20_000  # spans per transaction (what one worker holds parsed at once)
PARENT_WAIT = 2.0  # seconds a new trace whose spans name a parent not received yet may wait for it


def otlp_traces_build(*, project_id: int, trace_ids: list[str], wait_for_parents: bool = False) -> list[str]:
    """Build every trace of ``trace_ids``: new ones together, the others one by one. With ``wait_for_parents``, a
    new trace whose spans name a parent not received yet is left unbuilt; returns those trace ids."""
    trace_ids = sorted(set(trace_ids))
    if connection.vendor != "postgresql":
        left, waiting = trace_ids, []
    else:
        left, waiting = _new_traces_build(project_id, trace_ids, wait_for_parents)
    for trace_id in left:
        otlp_trace_build(project_id=project_id, trace_id=trace_id)
    return waiting


def _new_traces_build(
    project_id: int, trace_ids: list[str], wait_for_parents: bool
) -> tuple[list[str], list[str]]:
    """Build the new traces among ``trace_ids``, ``BATCH_TRACES`` per transaction; the trace ids left to the
    one-by-one build, and those left waiting for a parent."""
    left: list[str] = []
    waiting: list[str] = []
    for start in range(0, len(trace_ids), BATCH_TRACES):
        with transaction.atomic():
            batch_left, batch_waiting = _build_batch(
                project_id, trace_ids[start : start + BATCH_TRACES], wait_for_parents
            )
        left += batch_left
        waiting += batch_waiting
    return left, waiting


def _build_batch(
    project_id: int, trace_ids: list[str], wait_for_parents: bool
) -> tuple[list[str], list[str]]:
    locked = _try_locks(project_id, trace_ids)
    known = set(
        Trace.objects.filter(
            project_id=project_id, source_format=OTLP_FORMAT, upload__isnull=True, external_id__in=locked
        ).values_list("external_id", flat=True)
    )
    new = _small([t for t in locked if t not in known], project_id)
    rows = _unbuilt_rows(project_id, new) if new else {}
    items, placements, built, waiting = [], [], set(), []
    for trace_id in new:
        if wait_for_parents and _waits_for_parent(rows[trace_id]):
            waiting.append(trace_id)
            continue
        made = _prepare(trace_id, rows[trace_id]) if rows[trace_id] else None
        if made is None:
            continue
        prepared, placed = made
        items.append((0, prepared))
        placements += placed
        built.add(trace_id)
    if items:
        created = traces_create_prepared(project=Project.objects.get(pk=project_id), upload=None, items=items)
        save_placements(placements)
        extensions.traces_arrived(project_id, [t.pk for t in created])
    return [t for t in trace_ids if t not in built and t not in waiting], waiting


# What a first build reads of a stored span: ``otlp_build``'s fields but the placement it is about to write, and the
# trace id (one query reads many traces).
_READ = ("id", "trace_id", *(f for f in _ROW_FIELDS if f not in ("id", "path", "built")))
_JSON = {"resource", "scope", "span"}  # read as text: one decoding for the many spans that share a resource


class SpanRow:
    """A stored span as a first build reads it (``_READ``, the id as ``pk``): the ``OtlpSpan`` fields ``_derive``
    and ``save_placements`` use, without a model instance (building the instances of a request's 512 rows cost about
    as much as reading them)."""

    __slots__ = ("pk", *_READ[1:], "_parsed", "_service")

    def __init__(self, values: tuple) -> None:
        for name, value in zip(self.__slots__, values, strict=False):
            setattr(self, name, value)
        self._parsed = None


def _unbuilt_rows(project_id: int, trace_ids: list[str]) -> dict[str, list[SpanRow]]:
    """The unbuilt spans of ``trace_ids`` in arrival order, by trace. Read in binary (the payloads are not hex-coded
    and decoded again); the JSON of a resource or scope, the same for every span an SDK sends, is decoded once and
    shared, and so is the resource's service name."""
    rows: dict[str, list[SpanRow]] = defaultdict(list)
    scopes: dict[str, Any] = {}
    resources: dict[str, tuple[Any, str]] = {}  # text -> (decoded, its service name)
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"SELECT {', '.join(f'{c}::text' if c in _JSON else c for c in _READ)} FROM {OtlpSpan._meta.db_table} "
            "WHERE project_id = %s AND trace_id = ANY(%s) AND NOT built ORDER BY id",
            [project_id, trace_ids],
            binary=True,
        )
        for values in cursor:
            row = SpanRow(values)
            text = row.resource
            if text not in resources:
                row.resource, row._service = json.loads(text), None
                resources[text] = (row.resource, _row_service(row))
            row.resource, row._service = resources[text]
            if row.scope not in scopes:
                scopes[row.scope] = json.loads(row.scope)
            row.scope = scopes[row.scope]
            row.span = json.loads(row.span) if row.span is not None else None
            row.payload = bytes(row.payload) if row.payload is not None else None
            rows[row.trace_id].append(row)
    return rows


def _waits_for_parent(rows: list[SpanRow]) -> bool:
    """Whether a span of these names a parent that is not among them (a part of the trace is still to come) and
    they all came in one request (they share the request's ``received_at``): a trace waits for the next request at
    most once, so a long run whose root ends last is built as it goes, from its second request on."""
    ids = {row.span_id for row in rows}
    return len({row.received_at for row in rows}) == 1 and any(
        row.parent_span_id and row.parent_span_id not in ids for row in rows
    )


def _try_locks(project_id: int, trace_ids: list[str]) -> list[str]:
    """The traces whose build lock (``otlp_build._lock``'s key) this transaction took; one held elsewhere is
    skipped, never waited for."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t FROM unnest(%s::text[]) AS t WHERE pg_try_advisory_xact_lock(hashtextextended(%s || t, 17))",
            [trace_ids, f"{project_id}:"],
        )
        return [t for (t,) in cursor.fetchall()]


def _small(trace_ids: list[str], project_id: int) -> list[str]:
    """The traces whose waiting spans fit a first build of their own (``BUILD_BATCH``), up to ``BATCH_SPANS`` in
    all; one read of the index of unbuilt spans."""
    if not trace_ids:
        return []
    counts = dict(
        OtlpSpan.objects.filter(project_id=project_id, trace_id__in=trace_ids, built=False)
        .values("trace_id")
        .annotate(n=Count("id"))
        .values_list("trace_id", "n")
    )
    chosen, total = [], 0
    for trace_id in trace_ids:
        n = counts.get(trace_id, 0)
        if 0 < n <= BUILD_BATCH and total + n <= BATCH_SPANS:
            chosen.append(trace_id)
            total += n
    return chosen


def _prepare(trace_id: str, rows: list[Any]) -> tuple[Any, list[tuple[Any, Any]]] | None:
    """A new trace's first build as the import writer's prepared trace, and its spans' placements; None when it
    has no root (every span waits for a parent: the one-by-one build decides)."""
    ids = {row.span_id for row in rows}
    roots = [row for row in rows if not row.parent_span_id or row.parent_span_id not in ids]
    if not roots:
        return None
    root = min(roots, key=lambda row: _level(_parsed(row)))
    placed, new_steps = _derive(rows, {}, *_defaults(root), set())
    # Step order is path order (``_derive`` emits them so); a step hangs from a step of this build or from none.
    order = sorted(range(len(new_steps)), key=lambda i: (new_steps[i]["path"], new_steps[i]["order"]))
    index_of = {i: position for position, i in enumerate(order)}
    steps, prompts = [], {}
    for i in order:
        step = new_steps[i]
        anchor = step["parent"]
        parsed = step["step"]
        parsed.parent = index_of[anchor[1]] if anchor is not None and anchor[0] == "new" else None
        steps.append(parsed)
        if step["prompt"] and not prompts.get(step["agent"]):
            prompts[step["agent"]] = step["prompt"]
        prompts.setdefault(step["agent"], "")
    header = _header(root, trace_id)
    metadata = header["metadata"]
    metadata.update(
        span_count=len(rows),
        error_span_count=sum(1 for row in rows if row.error),
        scopes=sorted(
            {str(row.scope["name"]) for row in rows if isinstance(row.scope, dict) and row.scope.get("name")}
        ),
    )
    parsed_trace = ParsedTrace(
        name=header["name"],
        source_format=OTLP_FORMAT,
        steps=steps,
        agents=[ParsedAgent(name=name, system_prompt=prompt) for name, prompt in prompts.items() if name],
        external_id=trace_id,
        question=header["question"],
        outcome=header["outcome"],
        metadata=metadata,
    )
    prepared = trace_prepare(parsed_trace)
    prepared.content_hash = ""  # an OTLP trace grows as spans arrive: it has no content hash to dedupe on
    by_id = {row.span_id: row for row in rows}
    return prepared, [(by_id[p.span_id], p) for p in placed]
