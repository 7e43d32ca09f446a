"""Stored OTLP span rows read back as spans: the protobuf bytes or JSON a row keeps, in the shape the span formats
read (``formats/otlp_json.py``), parsed once per build; a row's service; the trace header a root span gives."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.trace.v1 import trace_pb2

from ..formats.otel_attributes import flatten_attributes, unwrap_otlp_attributes
from ..formats.otel_traces import _question
from ..formats.otlp_json import _service
from ..formats.otlp_json import _span as span_from_record
from ..formats.spans import Span


def _parsed(row: Any) -> Span:
    """The row's span, parsed once per build."""
    cached = getattr(row, "_parsed", None)
    if cached is None:
        cached = span_from_record(_record(row))
        row._parsed = cached
    return cached


def _record(row: Any) -> dict[str, Any]:
    """The span in the OTLP/JSON shape ``formats/otlp_json.py`` reads (attributes already unwrapped)."""
    if row.encoding != 1:
        return row.span if isinstance(row.span, dict) else {"spanId": row.span_id}
    from .otlp import attributes_from_protobuf

    span = trace_pb2.Span.FromString(bytes(row.payload))
    record: dict[str, Any] = {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "name": span.name,
        "attributes": attributes_from_protobuf(span.attributes),
    }
    if span.parent_span_id:
        record["parentSpanId"] = span.parent_span_id.hex()
    if span.kind:
        record["kind"] = trace_pb2.Span.SpanKind.Name(span.kind)
    if span.start_time_unix_nano:
        record["startTimeUnixNano"] = str(span.start_time_unix_nano)
    if span.end_time_unix_nano:
        record["endTimeUnixNano"] = str(span.end_time_unix_nano)
    if span.events:
        record["events"] = [
            {
                "name": e.name,
                "timeUnixNano": str(e.time_unix_nano),
                "attributes": attributes_from_protobuf(e.attributes),
            }
            for e in span.events
        ]
    if span.status.code or span.status.message:
        record["status"] = {
            k: v
            for k, v in (
                ("code", trace_pb2.Status.StatusCode.Name(span.status.code)),
                ("message", span.status.message),
            )
            if v
        }
    return record


def _row_service(row: Any) -> str:
    """The service.name of the row's resource (kept on the row when its loader worked it out once for many)."""
    known = getattr(row, "_service", None)
    if known is not None:
        return known
    resource = row.resource if isinstance(row.resource, dict) else {}
    return _service(flatten_attributes(unwrap_otlp_attributes(resource.get("attributes"))))


def _header(root: Any, trace_id: str) -> dict[str, Any]:
    span = _parsed(root)
    resource = root.resource if isinstance(root.resource, dict) else {}
    attributes = flatten_attributes(unwrap_otlp_attributes(resource.get("attributes")))
    return {
        "name": (span.name or trace_id)[:300],
        "question": _question(span),
        "outcome": "failed" if span.error else "unknown",
        "metadata": {
            "trace_id": trace_id,
            "service.name": _service(attributes),
            "resource": {k: v for k, v in attributes.items() if isinstance(v, (str, int, float, bool))},
        },
    }
