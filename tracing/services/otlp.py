"""The OTLP receiver's storage: spans are kept by (trace id, span id), so an exporter may send a trace's spans in any
number of requests, in any order, and re-send them. Accepting only stores spans and queues at most one build per
trace; the build (``otlp_build.py``) turns the new spans into steps incrementally.

Protobuf spans go straight into rows: the span's own bytes (re-serialised, ~3 us) plus the columns the builder places
it by, no dict or JSON detour. The bytes are not compressed here: zlib at level 1 cost 40 us a span, as much as the
rest of accepting together (bench/otlp_ingest.py), and PostgreSQL compresses every value over ~2 KB itself (TOAST),
which is where real LLM spans with their prompts land."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import psycopg
from django.db import connection, transaction
from django.utils import timezone

from ..formats import TraceFormatError
from ..formats.base import finite
from ..formats.otel_attributes import flatten_attributes, unwrap_otlp_attributes
from ..formats.otel_traces import hex_id
from ..models import OtlpPendingBuild, OtlpSpan, Project, Trace
from .otlp_build import otlp_trace_build
from .otlp_build_many import otlp_traces_build

OTLP_FORMAT = "otlp-json"
ENCODING_JSON, ENCODING_PROTOBUF = 0, 1
_ERROR_CODES = {"2", "STATUS_CODE_ERROR", "ERROR"}


def otlp_id(value: Any) -> str:
    """Trace and span ids as lowercase hex (OTLP/JSON sends hex, the protobuf JSON mapping base64); "" if invalid."""
    text = hex_id(value)
    return text if len(text) in (16, 32) and all(c in "0123456789abcdef" for c in text) else ""


# --- accepting ------------------------------------------------------------------------------------------------------


def otlp_spans_accept(
    *, project: Project, message: Any = None, document: dict[str, Any] | None = None
) -> tuple[list[str], int]:
    """The receiver's path: store the spans of a decoded protobuf ``message`` or an OTLP/JSON ``document`` and mark
    the builds they need, in one statement and so one commit (marking after storing was a second transaction, ~2 ms
    of round trips and WAL flush on a 512-span request). Returns the trace ids newly marked, whose build the caller
    must send, and the number of spans rejected."""
    rows, rejected = _protobuf_rows(message) if message is not None else _json_rows(document)
    return _store(project, rows, mark_builds=True)[1], rejected


def otlp_spans_store_protobuf(*, project: Project, message: Any) -> tuple[set[str], int]:
    """Store every span of a decoded ``ExportTraceServiceRequest``. Returns the trace ids whose spans are new or
    changed (a re-sent identical span touches nothing) and the number of spans rejected for a missing id."""
    rows, rejected = _protobuf_rows(message)
    return _store(project, rows)[0], rejected


def otlp_spans_store(*, project: Project, document: dict[str, Any]) -> tuple[set[str], int]:
    """Store every span of an OTLP/JSON export request (kept as JSON). Returns the trace ids touched and the number
    of spans rejected."""
    rows, rejected = _json_rows(document)
    return _store(project, rows)[0], rejected


def _protobuf_rows(message: Any) -> tuple[list[tuple], int]:
    """One row per span of an ``ExportTraceServiceRequest`` (see ``_COLUMNS``) and the number of spans rejected."""
    rows: dict[tuple[str, str], tuple] = {}
    rejected = 0
    for resource_spans in message.resource_spans:
        attributes = without_nul(
            flatten_attributes(attributes_from_protobuf(resource_spans.resource.attributes))
        )
        resource = json.dumps({"attributes": attributes}, ensure_ascii=False, default=str)
        service = _service(attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = json.dumps(
                {"name": without_nul(scope_spans.scope.name)} if scope_spans.scope.name else {}
            )
            for span in scope_spans.spans:
                trace_id, span_id = span.trace_id, span.span_id
                if len(trace_id) not in (8, 16) or len(span_id) not in (8, 16):
                    rejected += 1
                    continue
                trace_id, span_id = trace_id.hex(), span_id.hex()
                events = span.events
                error = span.status.code == 2 or (
                    len(events) > 0 and any(event.name == "exception" for event in events)
                )
                # A span sent twice in one request keeps its last copy (one INSERT may not touch a row twice).
                rows[(trace_id, span_id)] = (
                    trace_id,
                    span_id,
                    resource,
                    scope,
                    None,
                    span.SerializeToString(),
                    ENCODING_PROTOBUF,
                    span.parent_span_id.hex(),
                    span.start_time_unix_nano or None,
                    service,
                    error,
                )
    return list(rows.values()), rejected


def _json_rows(document: Any) -> tuple[list[tuple], int]:
    """One row per span of an OTLP/JSON export request (see ``_COLUMNS``) and the number of spans rejected."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans", []), list):
        raise TraceFormatError("an OTLP export request must be an object with a 'resourceSpans' list")
    rows: dict[tuple[str, str], tuple] = {}
    rejected = 0
    for resource, scope, span in _spans(document):
        if span is None:  # not an object
            rejected += 1
            continue
        trace_id, span_id = otlp_id(span.get("traceId")), otlp_id(span.get("spanId"))
        if not trace_id or not span_id:
            rejected += 1
            continue
        attributes = without_nul(flatten_attributes(unwrap_otlp_attributes(resource.get("attributes"))))
        status = span.get("status") if isinstance(span.get("status"), dict) else {}
        events = span.get("events") if isinstance(span.get("events"), list) else []
        error = str(status.get("code")) in _ERROR_CODES or any(
            isinstance(e, dict) and e.get("name") == "exception" for e in events
        )
        rows[(trace_id, span_id)] = (
            trace_id,
            span_id,
            json.dumps({"attributes": attributes}, ensure_ascii=False, default=str),
            json.dumps(without_nul(scope), ensure_ascii=False, default=str),
            _json_text(without_nul(span)),
            None,
            ENCODING_JSON,
            otlp_id(span.get("parentSpanId")),
            _nanos(span.get("startTimeUnixNano")),
            _service(attributes),
            error,
        )
    return list(rows.values()), rejected


_COLUMNS = (
    "trace_id",
    "span_id",
    "resource",
    "scope",
    "span",
    "payload",
    "encoding",
    "parent_span_id",
    "start_ns",
    "service",
    "error",
)
_TYPES = dict(
    zip(
        _COLUMNS,
        ("text", "text", "jsonb", "jsonb", "jsonb", "bytea", "int", "text", "bigint", "text", "bool"),
    )
)
# The columns every span of one resource and scope shares, in ``_COLUMNS`` order: sent once per group and picked by
# the span's group number, not once per span (four arrays of 512 copies took the driver ~0.6 ms to dump).
_GROUP_COLUMNS = ("resource", "scope", "encoding", "service")


def _store(project: Project, rows: list[tuple], *, mark_builds: bool = False) -> tuple[set[str], list[str]]:
    """Upsert the rows; the trace ids whose spans were inserted or changed (a changed span is marked unbuilt) and,
    with ``mark_builds``, those of them newly marked for a build (``otlp_builds_mark``), in the same transaction.

    One statement per request with one array per column (unnest): a VALUES list of 512 rows x 11 placeholders spent
    more time having its placeholders converted by the driver than PostgreSQL spent inserting (bench/otlp_ingest.py).
    Every span of one request gets the statement's time as ``received_at`` (not the transaction's: a build tells
    the requests apart by it, ``otlp_build_many._waits_for_parent``, and tells a span re-sent during it).
    The marks are a second data-modifying CTE over the upsert's RETURNING, taken in trace id order as
    ``otlp_builds_mark`` takes them, so two requests marking the same traces cannot deadlock."""
    if connection.vendor != "postgresql":
        with transaction.atomic():
            touched = _store_orm(project, rows)
            return touched, otlp_builds_mark(project_id=project.pk, trace_ids=touched) if mark_builds else []
    if not rows:
        return set(), []
    groups: dict[tuple, int] = {}
    # 1-based, as PostgreSQL arrays are: a new group's number is the count before it plus one.
    numbers = [groups.setdefault((r[2], r[3], r[6], r[9]), len(groups) + 1) for r in rows]
    per_group = [list(values) for values in zip(*groups)]  # resources, scopes, encodings, services
    trace_ids, span_ids, _, _, spans, payloads, _, parents, starts, _, errors = (
        list(values) for values in zip(*rows)
    )
    per_span = [c for c in _COLUMNS if c not in _GROUP_COLUMNS]
    table = OtlpSpan._meta.db_table
    values = ", ".join(f"(%b::{t}[])[v.g]" if c in _GROUP_COLUMNS else f"v.{c}" for c, t in _TYPES.items())
    changed = " OR ".join(
        f"{table}.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in ("payload", "span", "resource")
    )
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[2:])
    sql = (
        f"WITH upserted AS (INSERT INTO {table} (project_id, {', '.join(_COLUMNS)}, built, received_at, agent, "
        f"step_span, step_count, shown_leaf) SELECT %b, {values}, false, statement_timestamp(), '', '', 0, false FROM unnest(%b::int[], "
        + ", ".join(f"%b::{_TYPES[c]}[]" for c in per_span)
        + f") AS v(g, {', '.join(per_span)}) "
        f"ON CONFLICT (project_id, trace_id, span_id) DO UPDATE SET {updates}, built = false, "
        f"received_at = statement_timestamp() WHERE {changed} RETURNING trace_id), "
        "touched AS (SELECT DISTINCT trace_id FROM upserted)"
    )
    params = [project.pk, *per_group, numbers, trace_ids, span_ids, spans, payloads, parents, starts, errors]
    if mark_builds:
        sql += (
            f", marked AS (INSERT INTO {OtlpPendingBuild._meta.db_table} (project_id, trace_id, queued_at) "
            "SELECT %b, trace_id, %b FROM touched ORDER BY trace_id "
            "ON CONFLICT (project_id, trace_id) DO NOTHING RETURNING trace_id) "
            "SELECT trace_id, false FROM touched UNION ALL SELECT trace_id, true FROM marked"
        )
        params += [project.pk, timezone.now()]
    else:
        sql += " SELECT trace_id, false FROM touched"
    # One statement, so no atomic block: in autocommit it is its own transaction, committed (the spans durable,
    # the deferred foreign key checked) before it returns, without the BEGIN and COMMIT round trips of a block.
    connection.ensure_connection()
    # A server-side binding cursor sends the arrays in binary (%b); Django's client-side cursor would escape every
    # byte of the payloads into SQL text first.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        result = cursor.fetchall()
    return {t for t, mark in result if not mark}, sorted(t for t, mark in result if mark)


def _store_orm(project: Project, rows: list[tuple]) -> set[str]:
    """SQLite (the embedded mode): every stored span counts as changed."""
    objects = []
    for row in rows:
        values = dict(zip(_COLUMNS, row))
        for key in ("resource", "scope", "span"):
            values[key] = json.loads(values[key]) if values[key] is not None else None
        values["resource"] = values["resource"] or {}
        values["scope"] = values["scope"] or {}
        objects.append(OtlpSpan(project=project, built=False, **values))
    with transaction.atomic():
        OtlpSpan.objects.bulk_create(
            objects,
            update_conflicts=True,
            unique_fields=["project", "trace_id", "span_id"],
            update_fields=[*_COLUMNS[2:], "built", "received_at"],
        )
    return {row[0] for row in rows}


def attributes_from_protobuf(items: Iterable[Any]) -> dict[str, Any]:
    """A protobuf ``KeyValue`` list as a plain dict, values as OTLP/JSON's unwrapping would give them."""
    return {item.key: _any_value(item.value) for item in items}


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_from_protobuf(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()  # as the protobuf JSON mapping writes bytes
    return getattr(value, kind)


def without_nul(value: Any) -> Any:
    """``value`` with NUL characters removed from every string: PostgreSQL's jsonb refuses \\u0000, and a span whose
    attribute holds one is still worth keeping. Depth is bounded by the JSON depth check / protobuf's own limit."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # NaN / Infinity: jsonb refuses them
        return json.dumps(finite(value), ensure_ascii=False, default=str)


def _nanos(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**63 else None


def _service(attributes: dict[str, Any]) -> str:
    name = attributes.get("service.name")
    return name.strip()[:200] if isinstance(name, str) else ""


def _spans(document: dict[str, Any]) -> Iterable[tuple[dict, dict, Any]]:
    """(resource, scope, span) of every span entry; an entry that is not an object, at any level, comes as a span of
    None so that the answer counts it as rejected (an exporter is told, not answered with a silent 200)."""
    for resource_spans in document.get("resourceSpans") or []:
        if not isinstance(resource_spans, dict):
            yield {}, {}, None
            continue
        resource = resource_spans.get("resource") if isinstance(resource_spans.get("resource"), dict) else {}
        groups = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []
        for scope_spans in groups if isinstance(groups, list) else [None]:
            if not isinstance(scope_spans, dict):
                yield resource, {}, None
                continue
            scope = scope_spans.get("scope") if isinstance(scope_spans.get("scope"), dict) else {}
            spans = scope_spans.get("spans") or []
            for span in spans if isinstance(spans, list) else [None]:
                yield resource, scope, span if isinstance(span, dict) else None


# --- queueing builds (debounce) --------------------------------------------------------------------------------------


def otlp_builds_mark(*, project_id: int, trace_ids: Iterable[str]) -> list[str]:
    """Mark each trace as having a build queued; the trace ids newly marked, whose build the caller must send.
    A trace already marked has a build waiting that will see these spans too (it has not started yet)."""
    trace_ids = sorted(set(trace_ids))
    if not trace_ids:
        return []
    now = timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {OtlpPendingBuild._meta.db_table} (project_id, trace_id, queued_at) "
                "SELECT %s, t, %s FROM unnest(%s::text[]) AS t ON CONFLICT (project_id, trace_id) DO NOTHING "
                "RETURNING trace_id",
                [project_id, now, trace_ids],
            )
            return sorted(t for (t,) in cursor.fetchall())
    return [
        t
        for t in trace_ids
        if OtlpPendingBuild.objects.get_or_create(
            project_id=project_id, trace_id=t, defaults={"queued_at": now}
        )[1]
    ]


def otlp_builds_unmark(*, project_id: int, trace_ids: Iterable[str]) -> None:
    """The build could not be sent (broker down): drop the marks so the exporter's retry sends it."""
    OtlpPendingBuild.objects.filter(project_id=project_id, trace_id__in=list(trace_ids)).delete()


def otlp_trace_rebuild(*, project_id: int, trace_id: str) -> Trace | None:
    """The build task's body: clear the trace's pending mark first (spans arriving from now on queue a new build, and
    that build waits for this one on the trace lock), then build the spans not built yet."""
    OtlpPendingBuild.objects.filter(project_id=project_id, trace_id=trace_id).delete()
    return otlp_trace_build(project_id=project_id, trace_id=trace_id)


def otlp_traces_rebuild(
    *, project_id: int, trace_ids: list[str], wait_for_parents: bool = False
) -> list[str]:
    """``otlp_trace_rebuild`` for the traces one request marked: their marks go first, then new traces are built
    together and the others one by one (``otlp_build_many``). With ``wait_for_parents``, new traces still missing a
    parent span are left unbuilt and returned: the caller builds them later."""
    OtlpPendingBuild.objects.filter(project_id=project_id, trace_id__in=list(trace_ids)).delete()
    return otlp_traces_build(
        project_id=project_id, trace_ids=list(trace_ids), wait_for_parents=wait_for_parents
    )


def otlp_builds_reap(*, stale_after: int, enqueue: Any) -> dict[str, int]:
    """Celery beat (with the job reaper): builds that went missing are sent again. A mark older than ``stale_after``
    lost its message; unbuilt spans older than that with no mark lost their build (a worker killed after clearing the
    mark whose message was not redelivered). The mark's ``queued_at`` is moved first, so two reapers send once."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    counts = {"resent": 0, "orphans": 0}
    for mark in OtlpPendingBuild.objects.filter(queued_at__lt=cutoff).order_by("pk")[:1000]:
        if OtlpPendingBuild.objects.filter(pk=mark.pk, queued_at=mark.queued_at).update(
            queued_at=timezone.now()
        ):
            enqueue(mark.project_id, mark.trace_id)
            counts["resent"] += 1
    lost = (
        OtlpSpan.objects.filter(built=False, received_at__lt=cutoff)
        .values_list("project_id", "trace_id")
        .distinct()[:1000]
    )
    by_project: dict[int, list[str]] = {}
    for project_id, trace_id in lost:
        by_project.setdefault(project_id, []).append(trace_id)
    for project_id, trace_ids in by_project.items():
        for trace_id in otlp_builds_mark(project_id=project_id, trace_ids=trace_ids):
            enqueue(project_id, trace_id)
            counts["orphans"] += 1
    return counts
