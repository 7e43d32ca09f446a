"""OpenTelemetry traces as OTLP/JSON: ``{resourceSpans: [{resource: {attributes}, scopeSpans: [{scope, spans: [
{traceId, spanId, parentSpanId, name, kind, startTimeUnixNano, endTimeUnixNano, attributes, events, status}]}]}]}``.

This is what ``POST /v1/traces`` carries as JSON (opentelemetry-proto ``examples/trace.json``) and what the OTel
Collector's file exporter writes, one export request per line (JSON Lines; spans of one trace may be spread over
many lines and are merged). Field names are read in both spellings the protobuf JSON mapping allows (``traceId`` and
``trace_id``); ids may be hex (OTLP/JSON) or base64 (generic protobuf JSON) and are normalised to lowercase hex.
Phoenix's ``/v1/projects/{id}/spans/otlpv1`` answer (``{data: [spans]}``, no resource) is read too.

Each trace id gives one trace (``external_id`` = the trace id). Span attributes are read by ``otel_attributes``
(OpenInference and OTel GenAI conventions); the resource's ``service.name`` is the agent of spans that name none.
Status code 2 (``STATUS_CODE_ERROR``) and ``exception`` events mark a span as failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .jsonlines import peek, read_values
from .otel_attributes import build_span, exception_text, flatten_attributes, unwrap_otlp_attributes
from .otel_traces import assemble, hex_id
from .spans import Span, parse_time

_ERROR_CODES = {"2", "STATUS_CODE_ERROR", "ERROR"}


class OtlpJson:
    name = "otlp-json"
    label = "OpenTelemetry OTLP/JSON"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if not any(key in head for key in ('"resourceSpans"', '"resource_spans"', "UnixNano", "unix_nano")):
            return 0.0
        peeked = peek(source)
        if peeked is None:
            return 0.0
        first = peeked[0][0] if isinstance(peeked[0], list) and peeked[0] else peeked[0]
        if isinstance(first, dict) and isinstance(_get(first, "resourceSpans", "resource_spans"), list):
            return 0.95
        return 0.85 if _bare_spans(first) is not None else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        values, is_lines = read_values(source)
        requests: list[Any] = []
        for number, value in enumerate(values, start=1):
            items = value if isinstance(value, list) and not is_lines else [value]
            for item in items:
                if not isinstance(item, dict):
                    where = f"line {number}" if is_lines else "the document"
                    raise TraceFormatError(
                        f"{where} is not an OTLP export request (an object with 'resourceSpans')"
                    )
                requests.append(item)
        yield from traces_from_requests(requests)


def traces_from_otlp_dict(document: dict[str, Any]) -> list[ParsedTrace]:
    """Traces from one decoded export request (the OTLP/HTTP receiver decodes protobuf into this shape)."""
    if not isinstance(document, dict):
        raise TraceFormatError("an OTLP export request must be an object with 'resourceSpans'")
    return traces_from_requests([document])


def traces_from_requests(requests: list[dict[str, Any]]) -> list[ParsedTrace]:
    """Traces from export requests, spans of one trace id merged across requests, in order of first appearance."""
    by_trace: dict[str, list[tuple[dict[str, Any], dict[str, Any], str]]] = {}
    for request in requests:
        for resource, scope, record in _records(request):
            trace_id = hex_id(_get(record, "traceId", "trace_id"))
            if not trace_id:
                raise TraceFormatError(f"span {_get(record, 'name') or '?'!r} has no traceId")
            by_trace.setdefault(trace_id, []).append((resource, record, scope))
    if not by_trace:
        raise TraceFormatError("the OTLP export holds no spans")
    several = len(by_trace) > 1
    return [_trace(trace_id, entries, several) for trace_id, entries in by_trace.items()]


def _records(request: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    resource_spans = _get(request, "resourceSpans", "resource_spans")
    if resource_spans is None:
        bare = _bare_spans(request)
        if bare is None:
            raise TraceFormatError("not an OTLP export request: no 'resourceSpans' list")
        resource_spans = [{"scopeSpans": [{"spans": bare}]}]
    for resource_span in _list(resource_spans, "resourceSpans"):
        resource = _dict(_get(resource_span, "resource"), "resource")
        attributes = flatten_attributes(unwrap_otlp_attributes(_get(resource, "attributes")))
        scopes = _get(
            resource_span,
            "scopeSpans",
            "scope_spans",
            "instrumentationLibrarySpans",
            "instrumentation_library_spans",
        )
        for scope_span in _list(scopes or [], "scopeSpans"):
            scope = _dict(
                _get(scope_span, "scope", "instrumentationLibrary", "instrumentation_library"), "scope"
            )
            for record in _list(_get(scope_span, "spans") or [], "spans"):
                yield attributes, str(_get(scope, "name") or ""), _dict(record, "span")


def _trace(
    trace_id: str, entries: list[tuple[dict[str, Any], dict[str, Any], str]], several: bool
) -> ParsedTrace:
    spans = [_span(record) for _, record, _ in entries]
    services = {id(span): _service(resource) for span, (resource, _, _) in zip(spans, entries)}
    by_id = {span.span_id: span for span in spans}
    default = next((services[id(s)] for s in spans if not s.parent_id or s.parent_id not in by_id), "")
    for span in spans:  # a span that enters another service acts for that service (distributed agents)
        service, parent = services[id(span)], by_id.get(span.parent_id or "")
        if (
            not span.agent
            and service
            and service != default
            and (parent is None or services[id(parent)] != service)
        ):
            span.agent = service
    resource = entries[0][0]
    metadata = {
        "service.name": default or _service(resource),
        "scopes": sorted({scope for _, _, scope in entries if scope}),
        "resource": {k: v for k, v in resource.items() if isinstance(v, (str, int, float, bool))},
    }
    return assemble(
        spans,
        trace_id=trace_id,
        source_format=OtlpJson.name,
        default_agent=default,
        tag_name=several,
        metadata=metadata,
    )


def _span(record: dict[str, Any]) -> Span:
    attributes = flatten_attributes(unwrap_otlp_attributes(_get(record, "attributes")))
    raw_events = _get(record, "events")
    events = [_event(e) for e in raw_events if isinstance(e, dict)] if isinstance(raw_events, list) else []
    status = _get(record, "status") if isinstance(_get(record, "status"), dict) else {}
    error = exception_text(events, attributes)
    if str(_get(status, "code")) in _ERROR_CODES:
        error = str(_get(status, "message") or "") or error or "the span ended with status ERROR"
    span_id = hex_id(_get(record, "spanId", "span_id"))
    if not span_id:
        raise TraceFormatError(f"span {_get(record, 'name') or '?'!r} has no spanId")
    start, end = (
        _get(record, "startTimeUnixNano", "start_time_unix_nano"),
        _get(record, "endTimeUnixNano", "end_time_unix_nano"),
    )
    raw = {
        "traceId": hex_id(_get(record, "traceId", "trace_id")),
        "spanId": span_id,
        "parentSpanId": hex_id(_get(record, "parentSpanId", "parent_span_id")),
        "name": _get(record, "name"),
        "kind": _get(record, "kind"),
        "startTimeUnixNano": start,
        "endTimeUnixNano": end,
        "attributes": attributes,
        "events": events,
        "status": status,
    }
    return build_span(
        span_id=span_id,
        parent_id=raw["parentSpanId"] or None,
        name=str(_get(record, "name") or ""),
        attributes=attributes,
        events=events,
        error=error,
        start=parse_time(start),
        end=parse_time(end),
        raw=raw,
    )


def _event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(_get(event, "name") or ""),
        "time": _get(event, "timeUnixNano", "time_unix_nano"),
        "attributes": flatten_attributes(unwrap_otlp_attributes(_get(event, "attributes"))),
    }


def _service(resource: dict[str, Any]) -> str:
    name = resource.get("service.name")
    # The SDK's placeholder when no service name was configured says nothing about who acted.
    return name.strip() if isinstance(name, str) and not name.startswith("unknown_service") else ""


def _bare_spans(document: Any) -> list[Any] | None:
    """Phoenix's OTLP-shaped span list ``{data: [{trace_id, span_id, start_time_unix_nano, …}]}``, else None."""
    data = document.get("data") if isinstance(document, dict) else None
    if (
        isinstance(data, list)
        and data
        and isinstance(data[0], dict)
        and _get(data[0], "traceId", "trace_id")
        and _get(data[0], "startTimeUnixNano", "start_time_unix_nano") is not None
    ):
        return data
    return None


def _get(record: Any, *keys: str) -> Any:
    if not isinstance(record, dict):
        return None
    for key in keys:
        if key in record:
            return record[key]
    return None


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise TraceFormatError(f"'{what}' must be a list, got {type(value).__name__}")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TraceFormatError(f"a '{what}' must be an object, got {type(value).__name__}")
    return value


FORMAT = OtlpJson()
