"""A single span's attribute dictionary (OpenInference or OTel GenAI conventions), as instrumentation tests, SDK
debug output and "copy attributes" buttons produce it: ``{"openinference.span.kind": "LLM", "llm.input_messages.0…"}``
or ``{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": …}``. It becomes a one-span trace, so a lone
LLM or tool call can still be read, labelled and exported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .otel_attributes import build_span, flatten_attributes
from .otel_traces import assemble

# Keys that only span attributes in these conventions carry; one of them must be present.
_MARKERS = (
    "openinference.span.kind",
    "gen_ai.operation.name",
    "gen_ai.system",
    "gen_ai.tool.name",
    "llm.model_name",
    "llm.input_messages",
    "tool.name",
    "gen_ai.request.model",
    "gen_ai.agent.name",
)


class OtelSpanAttributes:
    name = "otel-attributes"
    label = "OpenInference / GenAI span attributes"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if (
            not head.startswith("{")
            or not any(f'"{m}' in head for m in _MARKERS)
            or source.size > 1024 * 1024
        ):
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        return 0.85 if _is_attribute_map(document) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        document = source.json()
        if not _is_attribute_map(document):
            raise TraceFormatError(
                "expected one span's attributes: an object of dotted OpenInference/GenAI keys"
            )
        stem = PurePosixPath(source.name.replace("\\", "/")).name.split(".")[0] or "span"
        attributes = flatten_attributes(document)
        span = build_span(span_id=stem, parent_id=None, name=stem, attributes=attributes, raw=document)
        # No agent is named in a lone span's attributes; "agent" beats the file name as the acting party.
        trace = assemble(
            [span],
            trace_id=stem,
            source_format=self.name,
            default_agent=str(attributes.get("gen_ai.agent.name") or "agent"),
        )
        trace.warnings.append("a single span's attributes: no trace or span ids, timing or parent links")
        yield trace


def _is_attribute_map(document: Any) -> bool:
    if not isinstance(document, dict) or not document:
        return False
    keys = [k for k in document if isinstance(k, str)]
    dotted = sum("." in k for k in keys)
    return dotted * 2 >= len(keys) and any(k.startswith(m) for k in keys for m in _MARKERS)


FORMAT = OtelSpanAttributes()
