"""Arize Phoenix span exports: spans in Phoenix's own JSON shape, grouped into one trace per trace id.

A span (Phoenix REST ``GET /v1/projects/{id}/spans``, model ``Span`` in ``phoenix/server/api/routers/v1/spans.py``)::

    {"id": "U3BhbjoxMDE=", "name": "ChatCompletion", "context": {"trace_id": "…", "span_id": "…"},
     "span_kind": "LLM", "parent_id": "…" | null, "start_time": "2025-…+00:00", "end_time": "…",
     "status_code": "OK" | "ERROR" | "UNSET", "status_message": "", "attributes": {"llm.input_messages.0.…": …},
     "events": [{"name": "exception", "timestamp": "…", "attributes": {"exception.message": "…"}}]}

Accepted containers: a JSON array of spans; the REST answer ``{data: [spans], next_cursor}``; the Phoenix CLI's
``px trace`` object ``{traceId, status, spans: [...]}`` (or ``px traces``' array of them); JSON Lines of spans; and
span lists under names of their own (``{"accepted_prompt_edit": [spans], "rejected_prompt_edit": [spans]}``, as
test fixtures and hand-made exports keep one scenario per key), each key a group whose traces carry its name.
Attributes may be flat dotted keys (REST) or nested dicts (Phoenix's stored form); ``get_spans_dataframe().to_json(
orient="records")`` rows, with ``context.span_id`` and ``attributes.llm.input_messages`` columns, are read too, as are
OpenTelemetry Python ``span.to_json()`` records (``kind``, ``status: {status_code}``, ``0x``-prefixed ids).
Attribute meaning (OpenInference) is read by ``otel_attributes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .jsonlines import peek, read_values
from .otel_attributes import build_span, exception_text, flatten_attributes
from .otel_traces import assemble, hex_id
from .spans import Span, parse_time


class Phoenix:
    name = "phoenix"
    label = "Arize Phoenix spans"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if '"context.span_id"' not in head and not ('"context"' in head and '"span_id"' in head):
            return 0.0
        peeked = peek(source)
        first = _first_span(peeked[0]) if peeked else None
        if first is None:
            return 0.0
        return 0.95 if "span_kind" in first or "attributes" in first or "status_code" in first else 0.7

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        values, is_lines = read_values(source)
        groups: dict[str, list[dict[str, Any]]] = {}
        for number, value in enumerate(values, start=1):
            try:
                for group, records in _grouped_records(value):
                    groups.setdefault(group, []).extend(records)
            except TraceFormatError as exc:
                raise TraceFormatError(f"line {number}: {exc}" if is_lines else str(exc)) from None
        if not any(groups.values()):
            raise TraceFormatError("the Phoenix export holds no spans")
        for group, records in groups.items():
            if records:  # an empty scenario list is nothing to import, not an error
                yield from traces_from_phoenix_spans(records, group=group)


def traces_from_phoenix_spans(records: list[dict[str, Any]], *, group: str = "") -> list[ParsedTrace]:
    by_trace: dict[str, list[Span]] = {}
    for index, record in enumerate(records):
        trace_id, span = _span(record, index)
        by_trace.setdefault(trace_id, []).append(span)
    if not by_trace:
        raise TraceFormatError(f"the Phoenix export holds no spans{f' under {group!r}' if group else ''}")
    several = len(by_trace) > 1
    traces = [
        assemble(spans, trace_id=trace_id, source_format=Phoenix.name, tag_name=several)
        for trace_id, spans in by_trace.items()
    ]
    for trace in traces:
        if group:
            # The key is the name its author gave the scenario: a better title than the root span's.
            trace.name = f"{group} [{trace.external_id[:8]}]" if several else group
            trace.metadata["group"] = group
    return traces


def _grouped_records(value: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """(group name, span records) in one JSON value: named span lists give one group per key, else one unnamed."""
    if isinstance(value, dict) and not _is_span(value) and _is_named_groups(value):
        return [(str(key), _span_records(spans)) for key, spans in value.items()]
    return [("", _span_records(value))]


def _is_named_groups(value: dict[str, Any]) -> bool:
    if any(isinstance(value.get(key), list) for key in ("data", "spans")) or not value:
        return False
    return all(isinstance(v, list) for v in value.values()) and any(
        _is_span(item) for v in value.values() for item in v[:1]
    )


def _span_records(value: Any) -> list[dict[str, Any]]:
    """The span records in one JSON value: a span, a list of spans, ``{data: [...]}`` or ``{traceId, spans}``."""
    if isinstance(value, list):
        return [record for item in value for record in _span_records(item)]
    if not isinstance(value, dict):
        raise TraceFormatError(
            f"expected Phoenix spans (objects with a 'context'), found a {type(value).__name__}"
        )
    for key in ("data", "spans"):
        if isinstance(value.get(key), list) and not _is_span(value):
            return [_checked(item) for item in value[key]]
    return [_checked(value)]


def _checked(item: Any) -> dict[str, Any]:
    if not _is_span(item):
        shape = (
            f"an object with keys {', '.join(list(map(str, item))[:6])}"
            if isinstance(item, dict)
            else f"a {type(item).__name__}"
        )
        raise TraceFormatError(
            f"expected a Phoenix span with context.trace_id and context.span_id, found {shape}"
        )
    return item


def _is_span(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    context = item.get("context")
    if isinstance(context, dict):
        return "span_id" in context and "trace_id" in context
    return "context.span_id" in item and "context.trace_id" in item


def _first_span(value: Any) -> dict[str, Any] | None:
    if isinstance(value, list):
        return _first_span(value[0]) if value else None
    if not isinstance(value, dict):
        return None
    if _is_span(value):
        return value
    for key in ("data", "spans"):
        if isinstance(value.get(key), list) and value[key]:
            return _first_span(value[key][0])
    if _is_named_groups(value):
        return next((_first_span(v) for v in value.values() if v), None)
    return None


def _span(record: dict[str, Any], index: int) -> tuple[str, Span]:
    context = record.get("context") if isinstance(record.get("context"), dict) else {}
    trace_id = _id(context.get("trace_id", record.get("context.trace_id")))
    span_id = _id(context.get("span_id", record.get("context.span_id")))
    if not trace_id or not span_id:
        raise TraceFormatError(
            f"span {index + 1} ({record.get('name') or 'unnamed'}) has an empty trace or span id"
        )
    attributes = _attributes(record)
    if not isinstance(record.get("events") or [], list):
        raise TraceFormatError(f"span {index + 1}: 'events' must be a list")
    events = [_event(e) for e in record.get("events") or [] if isinstance(e, dict)]
    status = record.get("status") if isinstance(record.get("status"), dict) else {}
    code = str(record.get("status_code") or status.get("status_code") or "").upper()
    error = ""
    if code in ("ERROR", "STATUS_CODE_ERROR", "2"):
        message = record.get("status_message") or status.get("description") or ""
        error = str(message) or exception_text(events, attributes) or "the span ended with status ERROR"
    raw = {key: value for key, value in record.items() if not key.startswith("attributes.")}
    raw["attributes"] = attributes
    span = build_span(
        span_id=span_id,
        parent_id=_id(record.get("parent_id")) or None,
        name=str(record.get("name") or ""),
        attributes=attributes,
        kind_hint=record.get("span_kind"),
        events=events,
        error=error,
        start=parse_time(record.get("start_time")),
        end=parse_time(record.get("end_time")),
        raw=raw,
    )
    return trace_id, span


def _attributes(record: dict[str, Any]) -> dict[str, Any]:
    attributes = record.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise TraceFormatError(f"span {record.get('name') or '?'!r}: 'attributes' must be an object")
    columns = {
        key.removeprefix("attributes."): value
        for key, value in record.items()
        if key.startswith("attributes.") and value is not None
    }  # dataframe rows: one column per attribute
    return flatten_attributes({**(attributes or {}), **columns})


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(event.get("name") or ""),
        "time": event.get("timestamp"),
        "attributes": flatten_attributes(
            event.get("attributes") if isinstance(event.get("attributes"), dict) else {}
        ),
    }


def _id(value: Any) -> str:
    text = str(value).strip() if value is not None else ""
    return hex_id(text[2:] if text.lower().startswith("0x") else text)


FORMAT = Phoenix()
