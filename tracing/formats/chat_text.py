"""Readable text out of the many shapes chat messages take in span exports (a helper, not a format).

Span-based exports store what a model was asked and answered as strings of JSON, OpenAI completions
(``choices[0].message``), LangChain generations and messages (``generations``, ``additional_kwargs.tool_calls``), the
OTel GenAI ``parts`` lists (``{"type": "text" | "tool_call" | "tool_call_response", ...}``), Google's ``content.parts``
(``function_call``), or flat OpenInference attributes (``llm.output_messages.0.message.content``). ``readable`` turns
any of them into the text a person wants to read; anything it does not recognise comes back as JSON text, so nothing
is ever dropped. The original value always stays in the step's ``raw``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .base import TraceFormatError, check_json_depth, json_text

_EMBEDDED_DEPTH = 64  # JSON inside a string value: messages nest a few levels, never this many
_ROLE_KEYS = ("role", "type")  # LangChain messages say type "ai" / "human" / "tool" instead of role
_ASSISTANT = {"assistant", "ai", "model", "AIMessage", "AIMessageChunk"}
_SYSTEM = {"system", "developer"}
_USER = {"user", "human", "HumanMessage"}


def parse_jsonish(value: Any) -> Any:
    """A string holding JSON becomes the JSON value; exports often encode twice (a JSON string of JSON), so a
    decoded string that still looks like JSON is decoded again, at most three times in all."""
    for _ in range(3):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text[:1] not in ("{", "[", '"'):
            return value
        try:
            check_json_depth(text, _EMBEDDED_DEPTH)
            value = json.loads(text)
        except (ValueError, TraceFormatError):
            return value  # not JSON, or nested too deep to be a message: shown as the text it is
    return value


def readable(value: Any) -> str:
    """The text of a message, a list of messages, a completion or a node state; JSON text when unrecognised."""
    value = parse_jsonish(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        messages = [m for m in value if _is_message(m)]
        if messages and len(messages) == len(value):
            return _messages_text(messages)
        return json_text(value)
    if isinstance(value, dict):
        text = _dict_text(value)
        return text if text is not None else json_text(value)
    return json_text(value)


def _dict_text(value: dict[str, Any]) -> str | None:
    if isinstance(value.get("choices"), list) and value["choices"]:  # an OpenAI completion
        choice = value["choices"][0]
        if isinstance(choice, dict):
            if isinstance(choice.get("message"), dict):
                return _message_text(choice["message"])
            if isinstance(choice.get("text"), str):
                return choice["text"]
    generations = value.get("generations")
    if isinstance(generations, list) and generations:  # LangChain LLMResult: [[{text, message}]]
        first = generations[0][0] if isinstance(generations[0], list) and generations[0] else generations[0]
        if isinstance(first, dict):
            if isinstance(first.get("message"), dict):
                return _message_text(first["message"].get("kwargs", first["message"]))
            if isinstance(first.get("text"), str):
                return first["text"]
    if _is_message(value):
        return _message_text(value)
    if isinstance(value.get("messages"), list) and value["messages"]:  # a graph state: its newest message
        last = value["messages"][-1]
        return _message_text(last) if isinstance(last, dict) else readable(last)
    if isinstance(value.get("content"), dict):  # Google: {"content": {"parts": [...], "role": "model"}}
        return _message_text(value["content"])
    for key in ("output", "text", "answer", "result"):
        if len(value) <= 2 and isinstance(value.get(key), (str, dict, list)):
            return readable(value[key])
    return None


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and (
        "content" in value
        or "parts" in value
        or "tool_calls" in value
        or ("role" in value and "text" in value)
    )


def _role(message: dict[str, Any]) -> str:
    for key in _ROLE_KEYS:
        if isinstance(message.get(key), str):
            return message[key]
    return ""


def _messages_text(messages: list[dict[str, Any]]) -> str:
    if len(messages) == 1:
        return _message_text(messages[0])
    return "\n\n".join(f"[{_role(m) or 'message'}] {_message_text(m)}".rstrip() for m in messages)


def _message_text(message: dict[str, Any]) -> str:
    pieces = [content_text(message.get("content"))]
    if "parts" in message:
        pieces.append(content_text(message["parts"]))
    if isinstance(message.get("text"), str):
        pieces.append(message["text"])
    calls = message.get("tool_calls") or (message.get("additional_kwargs") or {}).get("tool_calls") or []
    if isinstance(calls, list):
        pieces.extend(_call_text(call) for call in calls)
    if isinstance(message.get("function_call"), dict):
        pieces.append(_call_text(message["function_call"]))
    return "\n".join(p for p in pieces if p).strip()


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return _message_text(content) if _is_message(content) else _part_text(content)
    if isinstance(content, list):
        return "\n".join(t for t in (_part_text(p) for p in content) if t)
    return json_text(content)


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return json_text(part)
    kind = part.get("type", "")
    if isinstance(part.get("text"), str):
        return part["text"]
    if kind == "text" and isinstance(part.get("content"), str):
        return part["content"]
    if kind in ("tool_call", "function_call", "tool_use") or "function_call" in part:
        return _call_text(part.get("function_call", part))
    if kind in ("tool_call_response", "tool_result") or "function_response" in part:
        response = part.get("response", part.get("content", part.get("function_response")))
        return f"<- {readable(response)}"
    if kind in ("image_url", "image"):
        return "[image]"
    return json_text(part)


def _call_text(call: Any) -> str:
    """``-> name({"arg": 1})``, whichever way the call is spelled."""
    if not isinstance(call, dict):
        return json_text(call)
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    name = function.get("name") or call.get("name") or "?"
    arguments = function.get("arguments", function.get("args", call.get("args", call.get("input"))))
    arguments = parse_jsonish(arguments)
    shown = (
        arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False, default=str)
    )
    return f"-> {name}({shown})"


def system_prompt(messages: Any) -> str:
    """The first system (or developer) message of a model's input, if it has one."""
    messages = parse_jsonish(messages)
    if isinstance(messages, dict):
        messages = messages.get("messages")
    if not isinstance(messages, list) or not messages:
        return ""
    first = messages[0]
    if isinstance(first, list) and first:  # LangChain batches: [[message, ...]]
        first = first[0]
    if isinstance(first, dict) and _role(first) in _SYSTEM | {"SystemMessage"}:
        return _message_text(first)
    return ""


def first_user_text(messages: Any) -> str:
    """The first thing a user said: in a message list, a ``{"messages": [...]}`` state, a user message, or a user
    message one level down (``{"new_message": {"role": "user", ...}}``); a plain string is returned as is."""
    value = parse_jsonish(messages)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if _is_message(value):
            return _message_text(value) if _role(value) in _USER else ""
        if isinstance(value.get("messages"), list):
            value = value["messages"]
        else:
            value = [v for v in value.values() if isinstance(v, dict)]
    if isinstance(value, list):
        for message in value:
            if isinstance(message, dict) and _is_message(message) and _role(message) in _USER:
                return _message_text(message)
    return ""


_OI_OUTPUT = re.compile(r"^llm\.output_messages\.(\d+)\.message\.(.+)$")


def openinference_output(attributes: dict[str, Any]) -> str:
    """What the model answered, from flat ``llm.output_messages.N.message.*`` attributes ("" when absent).

    Streamed answers arrive as hundreds of one-token messages (BeeAI), so contents are joined without separators.
    """
    messages: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        match = _OI_OUTPUT.match(key)
        if match:
            messages.setdefault(int(match[1]), {})[match[2]] = value
    pieces: list[str] = []
    for index in sorted(messages):
        fields = messages[index]
        text = fields.get("content")
        if not isinstance(text, str):
            text = "".join(str(v) for k, v in sorted(fields.items()) if k.endswith("message_content.text"))
        pieces.append(text)
        calls = sorted({k.split(".tool_call.")[0] for k in fields if ".tool_call." in k})
        for call in calls:
            name = fields.get(f"{call}.tool_call.function.name", "?")
            arguments = fields.get(f"{call}.tool_call.function.arguments", "")
            shown = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            pieces.append(f"\n-> {name}({shown})")
    return "".join(pieces).strip()


def as_int(value: Any) -> int | None:
    """Token counts arrive as numbers or strings of digits; anything else is unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None
