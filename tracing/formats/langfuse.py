"""Langfuse trace exports: ``{"trace": {...}, "observations": [...]}``, as the Langfuse UI downloads a trace.

Each observation has ``id``, ``type`` (GENERATION, SPAN, EVENT, AGENT, TOOL, CHAIN, RETRIEVER, EMBEDDING, ...),
``parentObservationId``, ``name``, ``input``, ``output``, ``startTime``, ``endTime``, ``level`` (ERROR marks a
failure, with ``statusMessage``), ``usageDetails`` and ``metadata`` (often a JSON string) whose ``attributes`` are the
OpenTelemetry attributes of the span the integration sent. Also accepted: the public API's trace object with its
``observations`` inside, a list of either, and ``{"data": [...]}`` pages of them.

Integrations differ (samples: agno, beeai, google-adk, langgraph, microsoft-agent-framework, pydantic-ai), so kinds
and agents are read from several places, most specific first:

- kind: the observation ``type``; for plain SPANs, ``openinference.span.kind`` or ``gen_ai.operation.name`` in the
  attributes, or LangChain's tool callback (``inputs`` + ``color`` in metadata, or a ToolMessage as output);
- agent: ``gen_ai.agent.name`` / ``agent_name`` / ``agent.name``, LangGraph's ``langgraph_node``, BeeAI's ``source``
  on an agent span, then the name (``invoke_agent X``, ``agent_run [X]``, ``X.run``, ``X run``, or the bare name of
  an AGENT observation); observations outside every agent belong to the root observation's agent or name.

Observations with nothing to show (BeeAI's ``finish`` events) become no step. ``*.chatml.json`` files in Langfuse's
test data are a derived rendering (observation id -> parsed ChatML input/output), not an export: they are recognised
so the person gets a clear error instead of "unknown shape".
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .chat_text import as_int, first_user_text, openinference_output, parse_jsonish, readable, system_prompt
from .spans import Span, parse_time, steps_from_spans

_TYPES = {
    "GENERATION": "llm",
    "TOOL": "tool",
    "AGENT": "agent",
    "RETRIEVER": "retriever",
    "EMBEDDING": "embedding",
}
_OPENINFERENCE = {
    "LLM": "llm",
    "TOOL": "tool",
    "AGENT": "agent",
    "CHAIN": "chain",
    "RETRIEVER": "retriever",
    "EMBEDDING": "embedding",
}
_OPERATIONS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "execute_tool": "tool",
    "invoke_agent": "agent",
}
_AGENT_KEYS = ("gen_ai.agent.name", "agent_name", "agent.name")
_AGENT_NAMES = (
    re.compile(r"^invoke_agent\s+(.+)$"),
    re.compile(r"^agent_run\s*\[(.+)\]$"),
    re.compile(r"^(\w+)(?:\.run|\s+run)$"),
)
_QUESTION_KEYS = ("message", "input", "question", "query", "task", "prompt")
_TOOL_PREFIXES = ("running tool: ", "execute_tool ")
_EVENT_SUFFIX = re.compile(
    r"\.(?:start|success|finish|error|update)-\d+$"
)  # BeeAI: tool.search.wikipedia.start-12


class Langfuse:
    name = "langfuse"
    label = "Langfuse trace export"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if head[:1] not in ("{", "["):
            return 0.0
        export = '"observations"' in head and ('"parentObservationId"' in head or '"traceId"' in head)
        chatml = head.startswith("{") and '"success"' in head
        if not (export or chatml):
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        if _documents(document):
            return 0.95
        # Recognised only to fail with a clear message; above MIN_CONFIDENCE, below any real format's score.
        return 0.6 if _is_chatml(document) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        document = source.json()
        if _is_chatml(document):
            raise TraceFormatError(
                f"this is Langfuse's ChatML rendering of {len(document)} observation(s) (observation id -> parsed "
                "input/output), not a trace export: it has no observation names, types, parents or times to build "
                "steps from. Export the trace itself from Langfuse (the JSON with 'trace' and 'observations')."
            )
        pairs = _documents(document)
        if not pairs:
            raise TraceFormatError(
                "a Langfuse export must be an object with 'trace' and 'observations' (or a list of them)"
            )
        stem = _stem(source.name)
        traces = [
            _parse_trace(trace, observations, name=stem if len(pairs) == 1 else "")
            for trace, observations in pairs
        ]
        yield from traces


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".trace.json", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _documents(document: Any) -> list[tuple[dict[str, Any], list[Any]]]:
    """(trace, observations) pairs in any of the accepted shapes; [] when the document is none of them."""
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    items = document if isinstance(document, list) else [document]
    pairs = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("observations"), list):
            return []
        trace = item.get("trace") if isinstance(item.get("trace"), dict) else item
        if "trace" in item and not isinstance(item["trace"], dict):
            return []
        if not trace.get("id") and not item["observations"]:
            return []
        pairs.append((trace, item["observations"]))
    return pairs


def _is_chatml(document: Any) -> bool:
    if not isinstance(document, dict) or not document:
        return False
    for value in document.values():
        if not isinstance(value, dict) or not value or not set(value) <= {"input", "output"}:
            return False
        if not all(isinstance(v, dict) and "success" in v for v in value.values()):
            return False
    return True


def _parse_trace(trace: dict[str, Any], observations: list[Any], *, name: str) -> ParsedTrace:
    trace_id = str(trace.get("id") or "")
    label = f"trace {trace_id or '?'}"
    if observations and all(isinstance(o, str) for o in observations):
        raise TraceFormatError(
            f"{label} lists its observations by id only (the trace list API's shape); "
            "export the trace with its observations instead"
        )
    for index, observation in enumerate(observations):
        if not isinstance(observation, dict) or not observation.get("id"):
            raise TraceFormatError(f"{label}: observations[{index}] is not an object with an 'id'")
    if not observations:
        raise TraceFormatError(f"{label} has no observations: there are no steps to import")
    spans = _drop_repeats([_span(o) for o in observations])
    default = _default_agent(spans, trace)
    loops: list[str] = []
    steps, agents = steps_from_spans(spans, default_agent=default, warnings=loops)
    if not steps:
        raise TraceFormatError(
            f"{label}: no observation carries any input or output: there are no steps to import"
        )
    return ParsedTrace(
        name=name or f"{trace.get('name') or 'trace'} {trace_id[:8]}".strip(),
        source_format=Langfuse.name,
        steps=steps,
        agents=agents,
        external_id=trace_id,
        question=_question(trace, observations),
        outcome="failed"
        if any(o.get("level") == "ERROR" and not o.get("parentObservationId") for o in observations)
        else "unknown",
        metadata=_trace_metadata(trace, observations),
        warnings=_warnings(observations) + loops,
    )


def _metadata(observation: dict[str, Any]) -> dict[str, Any]:
    metadata = parse_jsonish(observation.get("metadata"))
    return metadata if isinstance(metadata, dict) else {}


def _attributes(metadata: dict[str, Any]) -> dict[str, Any]:
    attributes = metadata.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _span(observation: dict[str, Any]) -> Span:
    metadata = _metadata(observation)
    attributes = _attributes(metadata)
    name = str(observation.get("name") or observation.get("type") or "observation")
    kind = _kind(observation, metadata, attributes)
    error = str(observation.get("statusMessage") or "error") if observation.get("level") == "ERROR" else ""
    span = Span(
        span_id=str(observation["id"]),
        parent_id=_optional_id(observation.get("parentObservationId")),
        name=name,
        kind=kind,
        start=parse_time(observation.get("startTime")),
        end=parse_time(observation.get("endTime")),
        agent=_agent(name, kind, observation, metadata, attributes),
        error=error,
        raw=observation,
    )
    if kind == "llm":
        usage = observation.get("usageDetails") or observation.get("usage") or {}
        usage = usage if isinstance(usage, dict) else {}
        span.input = _shown(observation.get("input"))
        span.output = _shown(observation.get("output")) or openinference_output(attributes)
        span.input_tokens = as_int(usage.get("input", usage.get("promptTokens")))
        span.output_tokens = as_int(usage.get("output", usage.get("completionTokens")))
        span.system_prompt = system_prompt(observation.get("input")) or _instructions(attributes)
        empty = not (span.input or span.output)
    elif kind == "tool":
        span.tool_name = _tool_name(name, attributes)
        span.tool_arguments = _tool_arguments(observation.get("input"), attributes)
        span.output = _shown(observation.get("output"))
        empty = span.tool_arguments in (None, "", {}) and not span.output
    else:
        span.input = _shown(observation.get("input")) or attributes.get("thought") or None
        span.output = _shown(observation.get("output"))
        empty = not (span.input or span.output)
    if empty and not error:  # an event with nothing to show (BeeAI's start/finish markers): a container
        span.kind, span.input, span.output, span.tool_arguments = "chain", None, None, None
    return span


def _shown(value: Any) -> str:
    """Readable text; the string "None" is how some instrumentations log a missing value, and Python reprs of
    messages (``{'role': 'assistant', 'text': ...}``, BeeAI) are read as the dicts they print."""
    text = readable(value)
    if text.startswith(("{'", "[{'")) and len(text) < 100_000:
        text = readable(_literal(text))
    return "" if text.strip() in ("None", "null") else text


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
        return text


def _drop_repeats(spans: list[Span]) -> list[Span]:
    """Streaming integrations (BeeAI) repeat one agent state in successive update events: keep the first of a run
    of siblings showing the same text; the repeats become containers."""
    siblings: dict[str | None, list[Span]] = {}
    for span in spans:
        siblings.setdefault(span.parent_id, []).append(span)
    for group in siblings.values():
        group.sort(key=lambda s: (s.start is None, s.start or 0))
        previous = None
        for span in group:
            if span.kind not in ("agent", "chain") or span.error:
                previous = None
                continue
            text = span.output or span.input
            if text and text == previous:
                span.input = span.output = None
            previous = text or previous
    return spans


def _optional_id(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _kind(observation: dict[str, Any], metadata: dict[str, Any], attributes: dict[str, Any]) -> str:
    kind = _TYPES.get(str(observation.get("type") or "").upper())
    if kind:
        return kind
    hinted = _OPENINFERENCE.get(str(attributes.get("openinference.span.kind") or "").upper())
    hinted = hinted or _OPERATIONS.get(str(attributes.get("gen_ai.operation.name") or ""))
    if hinted:
        return hinted
    output = parse_jsonish(observation.get("output"))
    if ("inputs" in metadata and "color" in metadata) or (
        isinstance(output, dict) and output.get("type") == "tool"
    ):
        return "tool"  # LangChain's on_tool_start passes inputs and color; a tool returns a ToolMessage
    return "chain"


def _agent(
    name: str, kind: str, observation: dict[str, Any], metadata: dict[str, Any], attributes: dict[str, Any]
) -> str | None:
    for key in _AGENT_KEYS:
        if isinstance(attributes.get(key), str) and attributes[key].strip():
            return attributes[key].strip()
    if isinstance(metadata.get("langgraph_node"), str) and metadata["langgraph_node"]:
        return metadata["langgraph_node"]
    if kind != "agent":
        return None
    if isinstance(attributes.get("source"), str) and attributes["source"]:
        return attributes["source"]  # BeeAI names the agent class on its root span
    for pattern in _AGENT_NAMES:
        match = pattern.match(name)
        if match:
            return match[1].strip()
    # Only Langfuse's own AGENT type is sure to be named after its agent; OpenInference AGENT spans may be
    # events of the agent (BeeAI's "agent.react.update-13") and inherit the agent instead.
    return name if str(observation.get("type") or "").upper() == "AGENT" else None


def _default_agent(spans: list[Span], trace: dict[str, Any]) -> str:
    ids = {span.span_id for span in spans}
    roots = [s for s in spans if not s.parent_id or s.parent_id not in ids]
    roots.sort(key=lambda s: (s.start is None, s.start or 0))
    root = roots[0] if roots else None
    if root is not None and root.agent:
        return root.agent
    name = root.name if root is not None else str(trace.get("name") or "application")
    return _bracketed(name) or name


def _bracketed(name: str) -> str | None:
    """What the name's closing "[...]" holds ("workflow [planner]" -> "planner"), or None.

    The same answer as ``re.search(r"\\[([^\\]]+)\\]\\s*$", name)[1]`` (from the first "[" after the last "]"
    before the closing one), found with string methods: the regex retried every "[" to the end of the name, so
    a name of 50,000 "[" took seconds.
    """
    stripped = name.rstrip()  # the same white space as \s
    if not stripped.endswith("]"):
        return None
    close = len(stripped) - 1
    start = stripped.find("[", stripped.rfind("]", 0, close) + 1, close - 1)
    return stripped[start + 1 : close] if start != -1 else None


def _instructions(attributes: dict[str, Any]) -> str:
    value = parse_jsonish(attributes.get("gen_ai.system_instructions"))
    return readable(value) if value else ""


def _tool_name(name: str, attributes: dict[str, Any]) -> str:
    for key in ("tool.name", "gen_ai.tool.name"):
        if isinstance(attributes.get(key), str) and attributes[key]:
            return attributes[key]
    for prefix in _TOOL_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return _EVENT_SUFFIX.sub("", name)


def _tool_arguments(value: Any, attributes: dict[str, Any]) -> Any:
    if value in (None, ""):
        for key in (
            "gen_ai.tool.call.arguments",
            "tool_arguments",
            "gcp.vertex.agent.tool_call_args",
            "tool.parameters",
        ):
            if attributes.get(key) not in (None, "", "null"):
                value = attributes[key]
                break
    parsed = parse_jsonish(value)
    if isinstance(parsed, str) and parsed.startswith("{") and len(parsed) < 10_000:
        parsed = _literal(parsed)  # LangChain logs tool inputs as Python reprs: {'query': 'example'}
    return parsed


def _question(trace: dict[str, Any], observations: list[dict[str, Any]]) -> str:
    """What the user asked: the trace's input, else the first user message any model call was given."""
    roots = [o for o in observations if not o.get("parentObservationId")]
    for value in (trace.get("input"), roots[0].get("input") if roots else None):
        text = first_user_text(value)
        if text and not text.lstrip().startswith(("{", "[")):
            return text
        value = parse_jsonish(value)
        for key in _QUESTION_KEYS:  # agno: {"run_response": ..., "message": "What is ..."}
            if isinstance(value, dict) and isinstance(value.get(key), str) and value[key].strip():
                return value[key]
    for observation in observations:
        value = parse_jsonish(observation.get("input"))
        if str(observation.get("type")).upper() == "GENERATION" and not isinstance(value, str):
            text = first_user_text(value)
            if text:
                return text
    return ""


def _trace_metadata(trace: dict[str, Any], observations: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"observation_count": len(observations)}
    for key in ("name", "sessionId", "userId", "environment", "release", "version", "tags", "latency"):
        if trace.get(key) not in (None, "", []):
            metadata[key] = trace[key]
    scores = trace.get("scores")
    if isinstance(scores, list) and scores:
        metadata["scores"] = [
            {k: s.get(k) for k in ("name", "value", "comment") if k in s}
            for s in scores
            if isinstance(s, dict)
        ]
    scope_of = (_metadata(o).get("scope") for o in observations)
    scopes = sorted(
        {str(scope["name"]) for scope in scope_of if isinstance(scope, dict) and scope.get("name")}
    )
    if scopes:
        metadata["instrumentation"] = scopes
    return metadata


def _warnings(observations: list[dict[str, Any]]) -> list[str]:
    ids = {str(o["id"]) for o in observations}
    missing = sorted(
        {
            str(o["parentObservationId"])
            for o in observations
            if o.get("parentObservationId") and str(o["parentObservationId"]) not in ids
        }
    )
    if not missing:
        return []
    return [
        f"{len(missing)} parent observation(s) are missing from the export ({', '.join(missing[:5])}); "
        "their children are shown at the top level"
    ]


FORMAT = Langfuse()
