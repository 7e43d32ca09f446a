"""LangChain / LangGraph messages saved as JSON: what a LangGraph multi-agent graph returns as its ``messages`` state.

A message is the ``model_dump()`` of a LangChain message, ``{type: "human" | "ai" | "tool" | "system", content, name?,
id?, tool_calls?: [{name, args, id}], tool_call_id?, status?, usage_metadata?: {input_tokens, output_tokens}}``, or
the ``messages_to_dict`` form ``{type, data: {...}}``. Accepted files, one trace each: a JSON list of messages, a
graph's final state ``{messages: [...], ...}`` (``json.dumps`` of ``graph.invoke(...)`` with the messages dumped), or
JSON Lines of messages.

Multi-agent graphs (``langgraph-supervisor``, swarms, hand-written supervisors) name each AI message after the agent
that wrote it (``name``); without a name it is the ``assistant``'s. An AI message becomes a ``message`` step when it
says something and a ``tool_call`` step per call it makes; a call to a ``transfer_to_X`` / ``transfer_back_to_X``
hand-off tool is addressed to ``X``. A ``tool`` message is the ``tool_result`` of the agent that made the call it
answers (by ``tool_call_id``), hanging from that call; ``status: "error"`` is kept. Human messages are ``human``
steps, system messages ``system`` ones. ``usage_metadata`` gives the tokens of the message's first step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source, TraceFormatError, mostly
from .chat_text import as_int, content_text
from .jsonlines import peek, read_values
from .textlog import AgentNames, build_trace

_TYPES = {
    "human",
    "ai",
    "tool",
    "system",
    "AIMessageChunk",
    "HumanMessage",
    "AIMessage",
    "ToolMessage",
    "SystemMessage",
}
_CANONICAL = {
    "HumanMessage": "human",
    "AIMessage": "ai",
    "AIMessageChunk": "ai",
    "ToolMessage": "tool",
    "SystemMessage": "system",
}
_HANDOFF_PREFIXES = ("transfer_to_", "transfer_back_to_")
_ASSISTANT = "assistant"


class LangChainMessages:
    name = "langchain-messages"
    label = "LangChain / LangGraph messages (message list or graph state)"

    def detect(self, source: Source) -> float:
        if '"type"' not in source.head_text():
            return 0.0
        peeked = peek(source)
        if peeked is None:
            return 0.0
        value, is_lines = peeked
        if is_lines:
            return 0.9 if _message(value) is not None else 0.0
        return 0.93 if _messages(value) is not None else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        values, is_lines = read_values(source)
        messages = _messages(values if is_lines else values[0])
        if messages is None:
            raise TraceFormatError(
                "expected LangChain messages ({type: human|ai|tool|system, content}): a list, JSON Lines, or a "
                "graph state {messages: [...]}"
            )
        normalised = []
        for position, raw in enumerate(messages):
            message = _message(raw)
            if message is None:
                raise TraceFormatError(
                    f"message {position} is not a LangChain message {{type: human|ai|tool|system, content}}"
                )
            normalised.append(message)
        yield _trace(source, normalised)


def _message(value: Any) -> dict[str, Any] | None:
    """The message's fields with its canonical type, from either dump form; None when it is not one."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("data"), dict) and value.get("type") in _TYPES and "content" in value["data"]:
        value = {**value["data"], "type": value["type"]}
    kind = value.get("type")
    if kind not in _TYPES or "content" not in value:
        return None
    return {**value, "type": _CANONICAL.get(kind, kind)}


def _messages(document: Any) -> list[Any] | None:
    """The messages of a list or a state ``{messages}``, when they are mostly LangChain's (``base.mostly``)."""
    found = document.get("messages") if isinstance(document, dict) else document
    return found if mostly(found, lambda m: _message(m) is not None) else None


def _trace(source: Source, messages: list[dict[str, Any]]) -> ParsedTrace:
    names = AgentNames()
    steps: list[ParsedStep] = []
    calls: dict[str, int] = {}  # tool call id -> the step that made it
    for message in messages:
        kind = message["type"]
        text = content_text(message.get("content"))
        first = len(steps)
        if kind == "human":
            steps.append(_step(message, "user", names("user"), "human", text))
        elif kind == "system":
            steps.append(_step(message, "system", None, "system", text))
        elif kind == "tool":
            call = calls.get(str(message.get("tool_call_id")))
            agent = steps[call].agent if call is not None else None
            step = _step(message, str(message.get("name") or "tool"), agent, "tool_result", text)
            step.tool_name, step.parent = str(message.get("name") or ""), call
            if message.get("status") == "error":
                step.raw["is_error"] = True
            steps.append(step)
        else:
            agent = names(str(message.get("name") or _ASSISTANT))
            if text.strip():
                steps.append(_step(message, agent, agent, "message", text))
            for call in message.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                tool = str(call.get("name") or "")
                step = _step(message, agent, agent, "tool_call", f"{tool}({_args_text(call.get('args'))})")
                step.tool_name, step.tool_arguments = tool, call.get("args")
                step.recipient = next((tool[len(p) :] for p in _HANDOFF_PREFIXES if tool.startswith(p)), "")
                calls[str(call.get("id"))] = len(steps)
                steps.append(step)
            if len(steps) == first:  # an empty answer is still the agent's turn
                steps.append(_step(message, agent, agent, "message", ""))
        usage = message.get("usage_metadata")
        if isinstance(usage, dict) and len(steps) > first:
            steps[first].input_tokens = as_int(usage.get("input_tokens"))
            steps[first].output_tokens = as_int(usage.get("output_tokens"))
    question = next((s.content for s in steps if s.kind == "human"), "")
    return build_trace(
        source, fmt=LangChainMessages.name, label=LangChainMessages.label, steps=steps, question=question
    )


def _step(message: dict[str, Any], speaker: str, agent: str | None, kind: str, content: str) -> ParsedStep:
    return ParsedStep(
        speaker=speaker,
        agent=agent,
        kind=kind,
        content=content,
        span_id=str(message.get("id") or ""),
        raw={"type": message["type"]},
    )


def _args_text(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, default=str)


FORMAT = LangChainMessages()
