"""Span attributes in the OpenInference and OpenTelemetry GenAI conventions, read into ``Span`` fields.

Not a format: shared by the OTLP/JSON and Phoenix formats and by the OTLP/HTTP receiver. Attributes are a flat dict
of dotted keys; OTLP's ``[{key, value: {stringValue: …}}]`` lists go through ``unwrap_otlp_attributes`` first, and
nested dicts or lists of dicts (Phoenix's stored form, its dataframe export) through ``flatten_attributes``.

Keys read, most specific first:

- kind: ``openinference.span.kind`` (LLM, TOOL, AGENT, CHAIN, RETRIEVER, EMBEDDING), ``gen_ai.operation.name``
  (chat/text_completion -> llm, execute_tool -> tool, invoke_agent/create_agent -> agent), ``traceloop.span.kind``,
  then the presence of tool or model keys;
- agent: ``agent.name``, ``gen_ai.agent.name``, ``graph.node.name``/``graph.node.id``, ``agent_name``; an AGENT
  span without one is named after its span (``invoke_agent Researcher`` -> ``Researcher``);
- text: ``llm.input_messages.N.message.{role, content, contents.M.message_content.text, tool_calls…}`` and
  ``llm.output_messages…`` (OpenInference), ``gen_ai.input.messages``/``gen_ai.output.messages`` (JSON with
  ``parts``), legacy ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``, ``gen_ai.*.message``/``gen_ai.choice`` events,
  then ``input.value``/``output.value``, ``traceloop.entity.input``/``output`` and bare ``input``/``output``;
- tools: ``tool.name``, ``gen_ai.tool.name``, ``tool_call.function.{name, arguments}``,
  ``gen_ai.tool.call.{arguments, result}``, ``tool.parameters`` (a schema, used only when nothing else says);
- tokens: ``llm.token_count.{prompt, completion}``, ``gen_ai.usage.{input,output}_tokens`` (and the older
  ``prompt_tokens``/``completion_tokens``); system prompt: the first system/developer message, else
  ``gen_ai.system_instructions``. (``gen_ai.system`` is the provider's name, not a prompt.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .base import json_text
from .spans import Span

_OPENINFERENCE_KINDS = {
    "LLM": "llm",
    "TOOL": "tool",
    "AGENT": "agent",
    "CHAIN": "chain",
    "RETRIEVER": "retriever",
    "RERANKER": "retriever",
    "EMBEDDING": "embedding",
}
_GENAI_OPERATIONS = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "completion": "llm",
    "execute_tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "embeddings": "embedding",
}
_TRACELOOP_KINDS = {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}
_AGENT_KEYS = ("agent.name", "gen_ai.agent.name", "graph.node.name", "graph.node.id", "agent_name")
_TOOL_KEYS = ("tool.name", "gen_ai.tool.name", "tool_call.function.name")
_MODEL_PREFIXES = (
    "llm.input_messages",
    "llm.output_messages",
    "llm.model_name",
    "gen_ai.request.model",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.prompt",
    "gen_ai.completion",
    "llm.request.type",
)
_INPUT_KEYS = ("input.value", "gen_ai.tool.call.arguments", "traceloop.entity.input", "input")
_OUTPUT_KEYS = ("output.value", "gen_ai.tool.call.result", "traceloop.entity.output", "output")
_ARGUMENT_KEYS = (
    "tool_call.function.arguments",
    "gen_ai.tool.call.arguments",
    "input.value",
    "traceloop.entity.input",
    "input",
    "tool.parameters",
)
_RESULT_KEYS = ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output", "output")
_PROMPT_TOKENS = ("llm.token_count.prompt", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_COMPLETION_TOKENS = (
    "llm.token_count.completion",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
)
_SYSTEM_ROLES = ("system", "developer")


# --- OTLP values and attribute shapes --------------------------------------------------------------------------------


def unwrap_otlp_value(value: Any) -> Any:
    """``{stringValue: "x"}`` -> "x", ``{arrayValue: {values: [...]}}`` -> list, ``{kvlistValue: …}`` -> dict.

    Both the OTLP/JSON (camelCase) and protobuf field (snake_case) spellings are read; anything else is kept.
    """
    if not isinstance(value, dict):
        return value
    for camel, snake in (
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("bytesValue", "bytes_value"),
    ):
        if camel in value or snake in value:
            return value.get(camel, value.get(snake))
    for camel, snake, cast in (("intValue", "int_value", int), ("doubleValue", "double_value", float)):
        if camel in value or snake in value:
            raw = value.get(camel, value.get(snake))
            try:
                return cast(raw)  # OTLP/JSON writes 64-bit ints as strings
            except (TypeError, ValueError):
                return raw
    for camel, snake in (("arrayValue", "array_value"), ("kvlistValue", "kvlist_value")):
        if camel in value or snake in value:
            inner = value.get(camel, value.get(snake))
            values = inner.get("values") if isinstance(inner, dict) else None
            if camel == "arrayValue":
                return [unwrap_otlp_value(v) for v in values] if isinstance(values, list) else []
            return unwrap_otlp_attributes(values)
    return None if not value else value


def unwrap_otlp_attributes(items: Any) -> dict[str, Any]:
    """OTLP's attribute list as a plain dict; a dict is taken as already unwrapped; anything else gives {}."""
    if isinstance(items, dict):
        return dict(items)
    if not isinstance(items, list):
        return {}
    return {
        item["key"]: unwrap_otlp_value(item.get("value"))
        for item in items
        if isinstance(item, dict) and isinstance(item.get("key"), str)
    }


def flatten_attributes(attributes: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists of dicts as dotted keys (``{"llm": {"input_messages": [{…}]}}`` ->
    ``llm.input_messages.0.…``); lists of plain values stay lists."""
    flat: dict[str, Any] = {}
    if not isinstance(attributes, dict):
        return flat
    for key, value in attributes.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_attributes(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                flat.update(flatten_attributes(item, f"{name}.{index}."))
        else:
            flat[name] = value
    return flat


def nested(attributes: dict[str, Any], key: str) -> Any:
    """The structure stored under ``key``: its value (a JSON string decoded when it holds a list or object), or
    rebuilt from the dotted keys below it, where numeric parts become list positions. None when absent."""
    if key in attributes:
        return _decoded(attributes[key])
    lead = f"{key}."
    tree: dict[str, Any] = {}
    for name, value in attributes.items():
        if name.startswith(lead):
            _insert(tree, name[len(lead) :].split("."), value)
    return _listify(tree) if tree else None


def _insert(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            return  # "a.b" is both a value and a prefix: the value wins
        tree = child
    tree.setdefault(parts[-1], value)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isascii() and k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --- messages --------------------------------------------------------------------------------------------------------


def input_messages(attributes: dict[str, Any], events: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Messages sent to the model, each ``{role, content, name, tool_calls, tool_call_id}``."""
    for key in ("llm.input_messages", "gen_ai.input.messages", "gen_ai.prompt"):
        messages = _messages(nested(attributes, key))
        if messages:
            return messages
    return _messages(
        [
            _event_message(e)
            for e in events
            if str(e.get("name", "")).startswith("gen_ai.") and str(e.get("name")).endswith(".message")
        ]
    )


def output_messages(
    attributes: dict[str, Any], events: Iterable[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Messages the model answered with, in the same shape as ``input_messages``."""
    for key in ("llm.output_messages", "gen_ai.output.messages", "gen_ai.completion"):
        messages = _messages(nested(attributes, key), default_role="assistant")
        if messages:
            return messages
    return _messages(
        [_event_message(e) for e in events if e.get("name") == "gen_ai.choice"], default_role="assistant"
    )


def render_messages(messages: list[dict[str, Any]], *, with_roles: bool = True) -> str:
    """Readable text: ``role: content`` per message, tool calls as ``-> name(arguments)``."""
    lines = []
    for message in messages:
        text = message["content"]
        if with_roles and message["role"]:
            text = f"{message['role']}: {text}" if text else f"{message['role']}:"
        calls = [f"-> {call['name']}({_compact(call['arguments'])})" for call in message["tool_calls"]]
        lines.append("\n".join(part for part in [text, *calls] if part))
    return "\n\n".join(line for line in lines if line)


def _messages(value: Any, default_role: str = "") -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [_message({"role": default_role or "user", "content": value})] if value.strip() else []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return []
    messages = [_message(item, default_role) for item in value if isinstance(item, dict)]
    return [m for m in messages if m["content"] or m["tool_calls"] or m["role"]]


def _message(item: dict[str, Any], default_role: str = "") -> dict[str, Any]:
    body = item.get("message") if isinstance(item.get("message"), dict) else item
    parts = body.get("parts") if isinstance(body.get("parts"), list) else []
    calls = body.get("tool_calls") if isinstance(body.get("tool_calls"), list) else []
    content = _content(body.get("content")) or _content(body.get("contents")) or _content(parts)
    return {
        "role": str(body.get("role") or default_role),
        "content": content,
        "name": str(body.get("name") or ""),
        "tool_calls": [
            c for c in map(_tool_call, calls + [p for p in parts if _part_type(p) == "tool_call"]) if c
        ],
        "tool_call_id": str(body.get("tool_call_id") or ""),
    }


def _content(value: Any) -> str:
    """Message content as text: a string, or the text of a list of parts (OpenAI, OpenInference, GenAI)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if not value.keys() & {"text", "content", "type", "message_content"}:
            return json_text(value)  # structured content of no known shape: show it whole
        value = [value]
    if not isinstance(value, list):
        return json_text(value)
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            continue
        part = part.get("message_content") if isinstance(part.get("message_content"), dict) else part
        kind = _part_type(part)
        if kind == "tool_call":
            continue  # kept as a tool call, not as text
        if kind == "tool_call_response":
            texts.append(json_text(part.get("response", part.get("result"))))
        elif isinstance(part.get("text"), str) or isinstance(part.get("content"), str):
            texts.append(part.get("text") if isinstance(part.get("text"), str) else part["content"])
        elif kind:
            texts.append(f"[{kind}]")  # images, audio, files: say that something was there
    return "\n".join(t for t in texts if t)


def _part_type(part: Any) -> str:
    return str(part.get("type") or "") if isinstance(part, dict) else ""


def _tool_call(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    call = call.get("tool_call") if isinstance(call.get("tool_call"), dict) else call
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name")
    if not name:
        return None
    return {
        "id": str(call.get("id") or ""),
        "name": str(name),
        "arguments": _decoded(function.get("arguments")),
    }


def _event_message(event: dict[str, Any]) -> dict[str, Any]:
    """The older GenAI convention logs messages as span events (``gen_ai.user.message``, ``gen_ai.choice``)."""
    attributes = event.get("attributes") if isinstance(event.get("attributes"), dict) else {}
    body = nested(attributes, "message") or {}
    body = body if isinstance(body, dict) else {"content": body}
    role = str(event.get("name", "")).removeprefix("gen_ai.").removesuffix(".message")
    return {
        "role": attributes.get("role") or body.get("role") or ("assistant" if role == "choice" else role),
        "content": attributes.get("content", body.get("content")),
        "tool_calls": body.get("tool_calls"),
    }


# --- span fields -----------------------------------------------------------------------------------------------------


def span_kind(attributes: dict[str, Any], hint: Any = "") -> str:
    """One of ``spans.SPAN_KINDS``; ``hint`` is a kind the source states outside the attributes (Phoenix)."""
    for raw in (hint, attributes.get("openinference.span.kind")):
        if isinstance(raw, str) and raw.strip().upper() in _OPENINFERENCE_KINDS:
            return _OPENINFERENCE_KINDS[raw.strip().upper()]
    operation = str(attributes.get("gen_ai.operation.name") or "").strip().lower()
    if operation in _GENAI_OPERATIONS:
        return _GENAI_OPERATIONS[operation]
    traceloop = str(attributes.get("traceloop.span.kind") or "").strip().lower()
    if traceloop in _TRACELOOP_KINDS:
        return _TRACELOOP_KINDS[traceloop]
    if any(_text_value(attributes.get(key)) for key in _TOOL_KEYS):
        return "tool"
    if any(key.startswith(_MODEL_PREFIXES) for key in attributes):
        return "llm"
    if any(_text_value(attributes.get(key)) for key in _AGENT_KEYS):
        return "agent"
    return "other"


def agent_name(attributes: dict[str, Any], *, kind: str = "", span_name: str = "") -> str | None:
    """The agent the span names; an agent span without a name attribute is named after the span itself."""
    for key in _AGENT_KEYS:
        if value := _text_value(attributes.get(key)):
            return value
    if kind == "agent":
        name = _text_value(attributes.get("traceloop.entity.name")) or span_name.strip()
        for prefix in ("invoke_agent ", "create_agent "):
            name = name.removeprefix(prefix).strip()
        return name or None
    return None


def input_value(attributes: dict[str, Any], events: Iterable[dict[str, Any]] = ()) -> Any:
    messages = input_messages(attributes, events)
    if messages:  # a lone message (the user's request) reads best without its role in front
        return render_messages(messages, with_roles=len(messages) > 1)
    return _first(attributes, _INPUT_KEYS)


def output_value(attributes: dict[str, Any], events: Iterable[dict[str, Any]] = ()) -> Any:
    messages = output_messages(attributes, events)
    if messages:  # the model's answer reads best without an "assistant:" in front of every reply
        return render_messages(messages, with_roles=len({m["role"] for m in messages}) > 1)
    return _first(attributes, _OUTPUT_KEYS)


def tool_name(attributes: dict[str, Any], span_name: str = "") -> str:
    for key in (*_TOOL_KEYS, "traceloop.entity.name"):
        if value := _text_value(attributes.get(key)):
            return value
    return span_name.removeprefix("execute_tool ").strip()


def tool_arguments(attributes: dict[str, Any]) -> Any:
    """The call's arguments, decoded from JSON when they are an object or a list."""
    value = _first(attributes, _ARGUMENT_KEYS)
    if value is None:
        value = nested(attributes, "tool_call.function.arguments") or nested(
            attributes, "gen_ai.tool.call.arguments"
        )
    return _decoded(value)


def tool_result(attributes: dict[str, Any]) -> Any:
    return _first(attributes, _RESULT_KEYS)


def token_counts(attributes: dict[str, Any]) -> tuple[int | None, int | None]:
    return _first_int(attributes, _PROMPT_TOKENS), _first_int(attributes, _COMPLETION_TOKENS)


def system_prompt(attributes: dict[str, Any], events: Iterable[dict[str, Any]] = ()) -> str:
    for message in input_messages(attributes, events):
        if message["role"] in _SYSTEM_ROLES and message["content"]:
            return message["content"]
    instructions = nested(attributes, "gen_ai.system_instructions")
    return _content(instructions) if instructions is not None else ""


def exception_text(events: Iterable[Any], attributes: dict[str, Any] | None = None) -> str:
    """``Type: message`` of the first ``exception`` event, or of ``exception.*`` attributes on the span."""
    for event in events:
        if isinstance(event, dict) and event.get("name") == "exception":
            text = _exception(event.get("attributes") if isinstance(event.get("attributes"), dict) else {})
            if text:
                return text
    return _exception(attributes or {})


def _exception(attributes: dict[str, Any]) -> str:
    kind, message = (
        _text_value(attributes.get("exception.type")),
        _text_value(attributes.get("exception.message")),
    )
    return f"{kind}: {message}" if kind and message else (message or kind)


def build_span(
    *,
    span_id: str,
    parent_id: str | None,
    name: str,
    attributes: dict[str, Any],
    kind_hint: Any = "",
    events: list[dict[str, Any]] | None = None,
    error: str = "",
    **fields: Any,
) -> Span:
    """A ``Span`` from flat attributes; ``fields`` are passed through (start, end, raw)."""
    events = events or []
    kind = span_kind(attributes, kind_hint)
    span = Span(
        span_id=span_id, parent_id=parent_id or None, name=name or kind, kind=kind, error=error, **fields
    )
    span.agent = agent_name(attributes, kind=kind, span_name=name)
    if kind == "tool":
        span.tool_name = tool_name(attributes, name)
        span.tool_arguments = tool_arguments(attributes)
        span.input, span.output = span.tool_arguments, tool_result(attributes)
    else:
        span.input, span.output = input_value(attributes, events), output_value(attributes, events)
    span.input_tokens, span.output_tokens = token_counts(attributes)
    span.system_prompt = system_prompt(attributes, events)
    return span


def _first(attributes: dict[str, Any], keys: Iterable[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


def _first_int(attributes: dict[str, Any], keys: Iterable[str]) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, bool) or value in (None, ""):
            continue
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            continue
    return None


def _compact(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return json.dumps(value, ensure_ascii=False, default=str)


def _text_value(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
