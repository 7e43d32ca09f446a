"""Chat transcripts in the OpenAI message shape, the lingua franca of agent logs and fine-tuning files.

A message is ``{role, name?, content, tool_calls?: [{id, type, function: {name, arguments}}], tool_call_id?}``;
``content`` is a string or a list of parts (``{type: "text", text}``, images, audio). Accepted files:

- a JSON list of messages, or an object ``{messages: [...], ...metadata}`` (one trace);
- a JSON list of such objects, or JSON Lines with one ``{messages: [...]}`` per line (one trace each: the OpenAI
  fine-tuning and batch files);
- JSON Lines with one message per line (one trace).

The agent of a message is its ``name`` when present, else its role. Assistant ``tool_calls`` become one ``tool_call``
step each; a ``tool`` message becomes a ``tool_result`` of the agent that made the call (matched by
``tool_call_id``), hanging from that call; ``system``/``developer`` messages become ``system`` steps and the system
prompt of the next assistant. Lists whose roles are speaker names (Magentic-One, ``Orchestrator (thought)``) and
Who&When's ``{history}`` belong to other formats: detection claims only the chat API's own role names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .base import ParsedAgent, ParsedStep, ParsedTrace, Source, TraceFormatError, json_text, normalise_speaker
from .jsonlines import peek, read_values

_CHAT_ROLES = {"system", "user", "assistant", "tool", "function", "developer"}
_HUMAN_NAMES = {"", "user", "human"}
_ID_KEYS = ("id", "conversation_id", "trace_id", "session_id", "custom_id")


class OpenAIChat:
    name = "openai-chat"
    label = "OpenAI chat messages"

    def detect(self, source: Source) -> float:
        if '"role"' not in source.head_text():
            return 0.0
        peeked = peek(source)
        if peeked is None:
            return 0.0
        value = peeked[0]
        if isinstance(value, list) and value and all(_is_conversation(v) for v in value[:20]):
            value = value[0]
        if _is_conversation(value):
            return _score(value["messages"])
        if isinstance(value, dict):
            value = [value] if peeked[1] else []  # JSON Lines: one message per line
        return _score(value) if isinstance(value, list) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        values, is_lines = read_values(source)
        stem = PurePosixPath(source.name.replace("\\", "/")).stem or "conversation"
        if (
            not is_lines
            and isinstance(values[0], list)
            and values[0]
            and all(_is_conversation(v) for v in values[0])
        ):
            values, is_lines = values[0], True  # a JSON list of conversations reads like JSON Lines of them
        if is_lines and all(_is_conversation(v) for v in values):
            several = len(values) > 1
            traces = [
                conversation_trace(
                    v["messages"], name=_name(v, f"{stem}/{i}" if several else stem), document=v
                )
                for i, v in enumerate(values, start=1)
            ]
        elif is_lines:
            if not all(isinstance(v, dict) and "role" in v for v in values):
                raise TraceFormatError(
                    "JSON Lines must hold either one message ({role, content}) or one conversation "
                    "({messages: [...]}) per line, not a mix"
                )
            traces = [conversation_trace(values, name=stem)]
        elif _is_conversation(values[0]):
            traces = [
                conversation_trace(values[0]["messages"], name=_name(values[0], stem), document=values[0])
            ]
        elif isinstance(values[0], list):
            traces = [conversation_trace(values[0], name=stem)]
        else:
            raise TraceFormatError("expected a list of chat messages or an object with a 'messages' list")
        yield from traces


def _is_conversation(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("messages"), list)


def _score(messages: list[Any]) -> float:
    sample = messages[:50]
    if not sample or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in sample):
        return 0.0
    if not all("content" in m or "tool_calls" in m or "function_call" in m for m in sample):
        return 0.0
    roles = {m["role"].strip().lower() for m in sample}
    # Speaker names as roles (Magentic-One logs, AgentRx) are another format's; claim only the chat API's roles.
    return 0.9 if roles <= _CHAT_ROLES else 0.3


def _name(document: dict[str, Any], default: str) -> str:
    for key in ("name", "title", *_ID_KEYS):
        if isinstance(document.get(key), (str, int)) and str(document[key]).strip():
            return str(document[key]).strip()
    return default


@dataclass
class _Call:
    agent: str
    step: int
    tool: str


@dataclass
class _Builder:
    steps: list[ParsedStep] = field(default_factory=list)
    agents: dict[str, ParsedAgent] = field(default_factory=dict)
    calls: dict[str, _Call] = field(default_factory=dict)  # tool_call_id -> who called it and where
    last_call: _Call | None = None  # the legacy ``function`` role has no call id: it answers the latest call
    waiting_prompts: list[str] = field(default_factory=list)  # system prompts for the next assistant to speak

    def add(self, step: ParsedStep) -> int:
        if step.agent and step.agent not in self.agents:
            self.agents[step.agent] = ParsedAgent(name=step.agent)
        self.steps.append(step)
        return len(self.steps) - 1


def conversation_trace(messages: Any, *, name: str, document: dict[str, Any] | None = None) -> ParsedTrace:
    """One trace from one list of chat messages; ``document`` is the object that held them (for metadata)."""
    if not isinstance(messages, list) or not messages:
        raise TraceFormatError("the conversation has no messages")
    builder = _Builder()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TraceFormatError(f"message {index} is not an object")
        role = message.get("role")
        if not isinstance(role, str) or not role.strip():
            raise TraceFormatError(f"message {index} has no role")
        _add_message(builder, role.strip(), message)
    if builder.waiting_prompts:  # no assistant ever answered: the prompt stays with whoever set it
        for step in builder.steps:
            if step.kind == "system" and not builder.agents[step.agent].system_prompt:
                builder.agents[step.agent].system_prompt = step.content
    document = document or {}
    return ParsedTrace(
        name=name,
        source_format=OpenAIChat.name,
        steps=builder.steps,
        agents=list(builder.agents.values()),
        external_id=next((str(document[k]) for k in _ID_KEYS if isinstance(document.get(k), (str, int))), ""),
        question=next((s.content for s in builder.steps if s.kind == "human"), ""),
        outcome=document.get("outcome") if document.get("outcome") in ("failed", "succeeded") else "unknown",
        metadata=_metadata(document, len(messages)),
    )


def _add_message(builder: _Builder, role: str, message: dict[str, Any]) -> None:
    lowered = role.lower()
    name = message.get("name").strip() if isinstance(message.get("name"), str) else ""
    content = _content(message.get("content"))
    if lowered in ("tool", "function"):
        _add_tool_result(builder, lowered, name, content, message)
        return
    speaker = normalise_speaker(name or role)
    common = {"speaker": name or role, "agent": speaker.agent, "recipient": speaker.recipient, "raw": message}
    if lowered in ("system", "developer"):
        builder.add(ParsedStep(kind="system", content=content, **common))
        builder.waiting_prompts.append(content)
        return
    if lowered in ("user", "human"):
        kind = (
            "human" if name.lower() in _HUMAN_NAMES else "message"
        )  # AutoGen sends other agents' turns as user
        builder.add(ParsedStep(kind=kind, content=content, **common))
        return
    _add_assistant(builder, speaker.tag, content, message, common)


def _add_assistant(
    builder: _Builder, tag: str, content: str, message: dict[str, Any], common: dict[str, Any]
) -> None:
    agent = common["agent"]
    if agent not in builder.agents:
        builder.agents[agent] = ParsedAgent(name=agent)
    if builder.waiting_prompts and not builder.agents[agent].system_prompt:
        builder.agents[agent].system_prompt = "\n\n".join(builder.waiting_prompts)
    builder.waiting_prompts = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip():
        builder.add(ParsedStep(kind="thought", content=reasoning, **common))
    calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    if isinstance(message.get("function_call"), dict):
        calls = [*calls, {"function": message["function_call"]}]
    parent = None
    if content or not calls:
        kind = "thought" if tag == "thought" else "message"
        parent = builder.add(ParsedStep(kind=kind, content=content, **common))
    for number, call in enumerate(calls):
        if not isinstance(call, dict):
            raise TraceFormatError(f"a tool call of {agent} is not an object")
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        tool = str(function.get("name") or "")
        arguments = function.get("arguments")
        step = builder.add(
            ParsedStep(
                kind="tool_call",
                content=json_text(arguments),
                tool_name=tool,
                tool_arguments=_decoded(arguments),
                parent=parent,
                span_id=str(call.get("id") or ""),
                **{**common, "raw": message if parent is None and not number else call},
            )
        )
        builder.last_call = _Call(agent=agent, step=step, tool=tool)
        if call.get("id"):
            builder.calls[str(call["id"])] = builder.last_call


def _add_tool_result(builder: _Builder, role: str, name: str, content: str, message: dict[str, Any]) -> None:
    call_id = str(message.get("tool_call_id") or "")
    call = builder.calls.get(call_id) if call_id else builder.last_call if role == "function" else None
    if call is None and call_id == "" and builder.last_call and role == "tool":
        call = builder.last_call  # old logs drop the id; the latest call is the best guess
    last_agent = next(
        (s.agent for s in reversed(builder.steps) if s.kind not in ("human", "system", "tool_result")), None
    )
    builder.add(
        ParsedStep(
            speaker=name or role,
            agent=call.agent if call else (last_agent or role),
            kind="tool_result",
            content=content,
            tool_name=(call.tool if call else "") or name,
            parent=call.step if call else None,
            span_id=call_id,
            raw=message,
        )
    )


def _content(value: Any) -> str:
    """A string, or the parts of a multimodal message as text (non-text parts as ``[image: url]`` and the like)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return json_text(value)
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            kind = str(part.get("type") or "")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("refusal"), str):
                texts.append(f"[refusal] {part['refusal']}")
            elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                url = str(part["image_url"].get("url") or "")
                texts.append(f"[image: {url if not url.startswith('data:') else 'inline data'}]")
            else:
                texts.append(f"[{kind or 'part'}]")
    return "\n".join(texts)


def _decoded(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments  # models do write broken JSON; keep what they wrote
    return arguments


def _metadata(document: dict[str, Any], count: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {"message_count": count}
    for key, value in document.items():
        if key != "messages" and isinstance(value, (str, int, float, bool)):
            metadata[key] = value
    if isinstance(document.get("metadata"), dict):
        metadata.update(document["metadata"])
    return metadata


FORMAT = OpenAIChat()
