"""Spans of one trace id to a ``ParsedTrace`` (not a format: shared by OTLP/JSON and Phoenix).

``steps_from_spans`` turns spans with no text of their own into no step, which is right for containers but loses
leaf spans that only carry attributes (an HTTP call, the OTLP example's ``my.span.attr``): those leaves show their
attributes instead, so every span that did something appears once.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .base import ParsedTrace, TraceFormatError
from .spans import Span, steps_from_spans

_HEX = re.compile(r"^[0-9a-fA-F]+$")


def hex_id(value: Any) -> str:
    """Trace and span ids as lowercase hex: OTLP/JSON writes hex, the protobuf JSON mapping writes base64."""
    if value is None:
        return ""
    text = str(value).strip()
    if _HEX.match(text) and len(text) in (16, 32):
        return text.lower()
    if len(text) in (12, 24) and text.endswith("="):  # 8 or 16 bytes in base64
        try:
            return base64.b64decode(text, validate=True).hex()
        except (binascii.Error, ValueError):
            pass
    return text.lower() if _HEX.match(text) else text


def assemble(
    spans: list[Span],
    *,
    trace_id: str,
    source_format: str,
    default_agent: str = "",
    tag_name: bool = False,
    metadata: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> ParsedTrace:
    """One trace from its spans. ``tag_name`` adds the trace id to the name (files holding several traces)."""
    if not spans:
        raise TraceFormatError(f"trace {trace_id} has no spans")
    warnings = list(warnings or [])
    unique = {span.span_id: span for span in spans}  # a re-sent span replaces the earlier copy, as upserts do
    if len(unique) < len(spans):
        warnings.append(
            f"trace {trace_id} holds {len(spans) - len(unique)} repeated span(s): the last copy is used"
        )
        spans = list(unique.values())
    ids = set(unique)
    parents = {span.parent_id for span in spans if span.parent_id}
    for span in spans:
        if span.parent_id and span.parent_id not in ids:
            warnings.append(
                f"span {span.span_id} ({span.name}) names parent {span.parent_id}, which is not in the "
                "file: it is shown as a root"
            )
        if span.span_id not in parents and _is_silent(span):
            span.input = _shown_attributes(span)
    steps, agents = steps_from_spans(spans, default_agent=default_agent, warnings=warnings)
    if not steps:
        raise TraceFormatError(f"trace {trace_id} has spans but none with any content to show")
    roots = [s for s in spans if not s.parent_id or s.parent_id not in ids]
    root = min(roots or spans, key=lambda s: (s.start is None, s.start or 0))
    errors = [s for s in spans if s.error]
    name = root.name or trace_id
    return ParsedTrace(
        name=f"{name} [{trace_id[:8]}]" if tag_name else name,
        source_format=source_format,
        steps=steps,
        agents=agents,
        external_id=trace_id,
        question=_question(root),
        # A failed tool call inside a run that recovered is not a failed run; a failed root span is.
        outcome="failed" if root.error else "unknown",
        metadata={
            "trace_id": trace_id,
            "span_count": len(spans),
            "error_span_count": len(errors),
            **(metadata or {}),
        },
        warnings=warnings,
    )


def _is_silent(span: Span) -> bool:
    return not span.error and all(
        v in (None, "", [], {}) for v in (span.input, span.output, span.tool_arguments)
    )


def _shown_attributes(span: Span) -> Any:
    attributes = span.raw.get("attributes") if isinstance(span.raw, dict) else None
    return attributes or f"({span.kind} span with no attributes)"


def _question(root: Span) -> str:
    value = root.input
    return value.strip() if isinstance(value, str) and root.kind in ("agent", "chain") else ""
