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

Locks: the same per-trace advisory lock as ``otlp_build._lock``, but tried (``pg_try_advisory_xact_lock``), never
waited on, so two batches never deadlock; a trace whose lock is held is built singly afterwards (which waits).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import connection, transaction
from django.db.models import Count

from .. import extensions
from ..formats.base import ParsedAgent, ParsedTrace
from ..models import OtlpSpan, Project, Trace
from .otlp_build import _ROW_FIELDS, BUILD_BATCH, OTLP_FORMAT, otlp_trace_build, save_placements
from .otlp_derive import _defaults, _derive, _level
from .otlp_records import _header, _parsed
from .writer import trace_prepare, traces_create_prepared

BATCH_TRACES = 200  # traces per transaction
BATCH_SPANS = 20_000  # spans per transaction (what one worker holds parsed at once)


def otlp_traces_build(*, project_id: int, trace_ids: list[str]) -> None:
    """Build every trace of ``trace_ids``: new ones together, the others one by one."""
    trace_ids = sorted(set(trace_ids))
    left = _new_traces_build(project_id, trace_ids) if connection.vendor == "postgresql" else trace_ids
    for trace_id in left:
        otlp_trace_build(project_id=project_id, trace_id=trace_id)


def _new_traces_build(project_id: int, trace_ids: list[str]) -> list[str]:
    """Build the new traces among ``trace_ids``, ``BATCH_TRACES`` per transaction; the trace ids left to the
    one-by-one build."""
    left: list[str] = []
    for start in range(0, len(trace_ids), BATCH_TRACES):
        with transaction.atomic():
            left += _build_batch(project_id, trace_ids[start : start + BATCH_TRACES])
    return left


def _build_batch(project_id: int, trace_ids: list[str]) -> list[str]:
    locked = _try_locks(project_id, trace_ids)
    known = set(
        Trace.objects.filter(
            project_id=project_id, source_format=OTLP_FORMAT, upload__isnull=True, external_id__in=locked
        ).values_list("external_id", flat=True)
    )
    new = _small([t for t in locked if t not in known], project_id)
    rows: dict[str, list[Any]] = defaultdict(list)
    if new:
        spans = OtlpSpan.objects.filter(project_id=project_id, trace_id__in=new, built=False)
        for row in spans.order_by("pk").only("trace_id", *_ROW_FIELDS):
            rows[row.trace_id].append(row)
    items, placements, built = [], [], set()
    for trace_id in new:
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
    return [t for t in trace_ids if t not in built]


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
