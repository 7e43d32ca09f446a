"""LLM calls as a conversation: the messages an LLM step sent and received, whatever shape its source stored them in.

The viewer shows an ``llm_call`` step as chat (system, user, assistant, tool call, tool result) instead of the raw
JSON its integration logged. Shapes read, from the step's ``raw`` (kept as imported):

- Langfuse observations: ``input``/``output`` as JSON text (or Python ``repr`` text, which pydantic-ai logs) holding
  OpenAI chat messages, ``{"messages": [...]}``, OpenAI completions (``choices[].message``), OpenAI Responses
  (``input``/``output`` items with ``input_text``/``output_text``/``function_call``), LangChain messages
  (``type: human/ai/tool`` with ``additional_kwargs.tool_calls``), OTel GenAI ``parts`` and Gemini ``contents``;
- OpenInference spans (TRAIL, Phoenix, OTLP): flat ``llm.input_messages.N.message.role/content`` attributes.

Anything else gives no messages, and the viewer shows the step's text as before. Nothing here is trusted: the
template escapes every string.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_MESSAGES = 200  # a page shows at most this many messages of one call; the raw JSON toggle has the rest

_ROLES = {
    "human": "user",
    "ai": "assistant",
    "model": "assistant",
    "function": "tool",
    "developer": "system",
    "aimessage": "assistant",
    "humanmessage": "user",
    "systemmessage": "system",
    "toolmessage": "tool",
}


@dataclass
class ToolCall:
    name: str
    arguments: str


@dataclass
class Message:
    role: str  # system, user, assistant, tool (a tool's result), tooldef (a tool offered to the model)
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str = ""
    direction: str = "in"  # "in": sent to the model, "out": its answer


def chat_of(raw: Any) -> list[Message]:
    """The conversation of one LLM step (input messages, then the answer), or [] when ``raw`` holds none."""
    if not isinstance(raw, dict):
        return []
    attributes = raw.get("span_attributes") or raw.get("attributes")
    if isinstance(attributes, dict) and any(k.startswith("llm.input_messages.") for k in attributes):
        return _openinference(attributes)
    if "input" not in raw and "output" not in raw:
        return []
    messages = [*_messages(_decode(raw.get("input")), "in"), *_messages(_decode(raw.get("output")), "out")]
    return messages[:MAX_MESSAGES]


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or text[0] not in "[{":
        return value
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)  # pydantic-ai logs Python reprs; literal_eval evaluates no code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def _messages(value: Any, direction: str) -> list[Message]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [Message(role="user" if direction == "in" else "assistant", text=value, direction=direction)]
    if isinstance(value, dict):
        for key in ("messages", "contents", "output", "choices", "input"):
            if isinstance(value.get(key), list):
                found = _system_instruction(value) + _messages(value[key], direction)
                if found:
                    return found
        if isinstance(value.get("content"), dict):  # Gemini: {"content": {"parts", "role"}}
            return _messages(value["content"], direction)
        message = _message(value, direction)
        return [message] if message else []
    if isinstance(value, list):
        found = []
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("message"), dict):  # completions' choices
                item = item["message"]
            message = _message(item, direction)
            if message:
                found.append(message)
        return found
    return []


def _system_instruction(value: dict) -> list[Message]:
    config = value.get("config")
    text = config.get("system_instruction") if isinstance(config, dict) else None
    return [Message(role="system", text=_text(text))] if text else []


_AGNO = re.compile(r"role='(?P<role>\w+)' content=(?P<q>['\"])(?P<content>.*?)(?P=q) name=", re.S)


def _message(item: Any, direction: str) -> Message | None:
    if isinstance(item, str):
        if match := _AGNO.match(item):  # agno logs its Message objects' reprs
            return Message(
                role=_role(match["role"], direction),
                text=match["content"].replace("\\n", "\n"),
                direction=direction,
            )
        return Message(role="user" if direction == "in" else "assistant", text=item, direction=direction)
    if not isinstance(item, dict):
        return None
    kind = str(item.get("type") or "")
    if kind in ("function_call", "tool_call"):  # Responses API item
        return Message(role="assistant", tool_calls=[_tool_call(item)], direction=direction)
    if kind in ("function_call_output", "tool_call_output"):
        return Message(
            role="tool",
            text=_text(item.get("output")),
            tool_call_id=str(item.get("call_id") or ""),
            direction=direction,
        )
    content = item.get("content")
    if isinstance(content, dict) and content.get("type") == "function" and "function" in content:
        # LangChain logs the tools it offers the model as role "tool" messages: a definition, not a result.
        return Message(role="tooldef", text=_text(content["function"]), direction=direction)
    role = _role(item.get("role") or kind, direction)
    message = Message(
        role=role,
        text=_text(item.get("content") if "content" in item else item.get("text")),
        tool_call_id=str(item.get("tool_call_id") or ""),
        direction=direction,
    )
    calls = item.get("tool_calls") or (item.get("additional_kwargs") or {}).get("tool_calls") or []
    message.tool_calls = [_tool_call(c) for c in calls if isinstance(c, dict)]
    for part in item.get("parts") or []:
        _add_part(message, part)
    if not (message.text or message.tool_calls):
        return None
    return message


def _add_part(message: Message, part: Any) -> None:
    if not isinstance(part, dict):
        message.text += _text(part)
        return
    kind = part.get("type")
    if kind == "tool_call" or "function_call" in part:
        message.tool_calls.append(_tool_call(part.get("function_call") or part))
    elif kind == "tool_call_response" or "function_response" in part:
        message.role = "tool"
        message.text += _text(part.get("response") or part.get("result") or part.get("function_response"))
    else:
        message.text += _text(part.get("content") or part.get("text") or "")


def _tool_call(call: dict) -> ToolCall:
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments", function.get("args", call.get("input", "")))
    if isinstance(arguments, str):
        decoded = _decode(arguments)
        arguments = decoded if not isinstance(decoded, str) else arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, indent=2, ensure_ascii=False)
    return ToolCall(name=str(function.get("name") or call.get("name") or "tool"), arguments=text)


def _role(role: Any, direction: str) -> str:
    role = str(role or "").lower()
    role = _ROLES.get(role, role)
    if role in ("system", "user", "assistant", "tool"):
        return role
    return "assistant" if direction == "out" else "user"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: [{"type": "text"|"input_text"|"output_text", "text": ...}]
        return "\n".join(
            _text(
                p.get("text", p.get("content"))
                if isinstance(p, dict) and ("text" in p or "content" in p)
                else p
            )
            for p in value
        )
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _openinference(attributes: dict) -> list[Message]:
    messages: list[Message] = []
    for prefix, direction in (("llm.input_messages.", "in"), ("llm.output_messages.", "out")):
        numbered: dict[int, dict[str, Any]] = {}
        for key, value in attributes.items():
            if key.startswith(prefix):
                number, _, rest = key[len(prefix) :].partition(".")
                if number.isascii() and number.isdigit():
                    numbered.setdefault(int(number), {})[rest] = value
        for _, fields in sorted(numbered.items()):
            message = Message(
                role=_role(fields.get("message.role"), direction),
                text=_text(fields.get("message.content")),
                direction=direction,
            )
            names = sorted(
                k for k in fields if k.startswith("message.tool_calls.") and k.endswith("function.name")
            )
            for name_key in names:
                base = name_key[: -len("function.name")]
                message.tool_calls.append(
                    ToolCall(
                        name=str(fields[name_key]), arguments=_text(fields.get(base + "function.arguments"))
                    )
                )
            if message.text or message.tool_calls:
                messages.append(message)
    return messages[:MAX_MESSAGES]
