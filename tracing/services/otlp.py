"""The OTLP receiver's storage: spans are kept by (trace id, span id) and each touched trace is rebuilt from all of
its spans, so an exporter may send a trace's spans in any number of requests, in any order, and re-send them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from ..formats import TraceFormatError
from ..formats.otel_traces import hex_id
from ..models import OtlpSpan, Project, Trace
from .writer import trace_create_from_parsed, trace_replace_from_parsed

OTLP_FORMAT = "otlp-json"


def otlp_id(value: Any) -> str:
    """Trace and span ids as lowercase hex (OTLP/JSON sends hex, the protobuf JSON mapping base64); "" if invalid."""
    text = hex_id(value)
    return text if len(text) in (16, 32) and all(c in "0123456789abcdef" for c in text) else ""


def otlp_spans_store(*, project: Project, document: dict[str, Any]) -> tuple[set[str], int]:
    """Upsert every span of an export request. Returns the trace ids touched and the number of spans rejected."""
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans", []), list):
        raise TraceFormatError("an OTLP export request must be an object with a 'resourceSpans' list")
    touched: set[str] = set()
    rejected = 0
    # Keyed by span: one INSERT ... ON CONFLICT may not touch a row twice, so a span sent twice in one request keeps
    # its last copy (as two requests would).
    rows: dict[tuple[str, str], OtlpSpan] = {}
    for resource, scope, span in _spans(document):
        trace_id, span_id = otlp_id(span.get("traceId")), otlp_id(span.get("spanId"))
        if not trace_id or not span_id:
            rejected += 1
            continue
        rows[(trace_id, span_id)] = OtlpSpan(project=project, trace_id=trace_id, span_id=span_id,
                                             resource=without_nul(resource), scope=without_nul(scope),
                                             span=without_nul(span))
        touched.add(trace_id)
    with transaction.atomic():
        OtlpSpan.objects.bulk_create(list(rows.values()), update_conflicts=True,
                                     unique_fields=["project", "trace_id", "span_id"],
                                     update_fields=["resource", "scope", "span", "received_at"])
    return touched, rejected


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


def _spans(document: dict[str, Any]) -> Iterable[tuple[dict, dict, dict]]:
    for resource_spans in document.get("resourceSpans") or []:
        if not isinstance(resource_spans, dict):
            continue
        resource = resource_spans.get("resource") if isinstance(resource_spans.get("resource"), dict) else {}
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans") or []:
            if not isinstance(scope_spans, dict):
                continue
            scope = scope_spans.get("scope") if isinstance(scope_spans.get("scope"), dict) else {}
            for span in scope_spans.get("spans") or []:
                if isinstance(span, dict):
                    yield resource, scope, span


def otlp_trace_rebuild(*, project_id: int, trace_id: str) -> Trace | None:
    """(Re)build the Trace for ``trace_id`` from every span stored for it."""
    from ..formats.otlp_json import traces_from_otlp_dict

    with transaction.atomic():
        # One rebuild per project at a time: two requests for the same new trace must not both create it.
        project = Project.objects.select_for_update().get(pk=project_id)
        spans = list(OtlpSpan.objects.filter(project=project, trace_id=trace_id).order_by("pk"))
        if not spans:
            return None
        parsed = [t for t in traces_from_otlp_dict(_document(spans)) if t.external_id == trace_id]
        if not parsed:
            return None
        existing = Trace.objects.filter(project=project, external_id=trace_id, source_format=parsed[0].source_format,
                                        upload__isnull=True).first()
        if existing is not None:
            return trace_replace_from_parsed(trace=existing, parsed=parsed[0])
        return trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed[0])


def _document(spans: list[OtlpSpan]) -> dict[str, Any]:
    """An OTLP/JSON export request holding the stored spans, grouped back under their resources and scopes."""
    import json

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in spans:
        key = (json.dumps(row.resource, sort_keys=True), json.dumps(row.scope, sort_keys=True))
        group = groups.setdefault(key, {"resource": row.resource, "scope": row.scope, "spans": []})
        group["spans"].append(row.span)
    return {"resourceSpans": [{"resource": g["resource"], "scopeSpans": [{"scope": g["scope"], "spans": g["spans"]}]}
                              for g in groups.values()]}
