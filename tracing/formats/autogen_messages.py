"""AutoGen AgentChat (0.4 and later) messages saved as JSON: what ``team.run()`` returns, streamed or saved.

A message is ``{source, type, content, models_usage?, metadata?, created_at?}`` where ``type`` is the class
(``TextMessage``, ``ToolCallRequestEvent``, ``ToolCallExecutionEvent``, ``HandoffMessage``, ``ThoughtEvent``, …).
Accepted files, one trace each:

- a ``TaskResult`` (``result.model_dump_json()``): ``{messages: [...], stop_reason}``;
- a JSON list of messages, or JSON Lines of them (``run_stream()`` logged one per line; a ``TaskResult`` line at the
  end, as the stream yields one last, is the whole run and wins);
- a team's saved state (``team.save_state()``): ``{type: "TeamState", agent_states: {...}}``, whose group chat
  manager keeps the run's ``message_thread``.

Steps follow the console rendering's reader (``text_magentic``): a ``ToolCallRequestEvent`` is a ``tool_call`` (its
calls' names and parsed arguments), a ``ToolCallExecutionEvent`` a ``tool_result`` hanging from the call it answers
(by ``call_id``; ``is_error`` is kept), a ``ToolCallSummaryMessage``, memory query or code execution a
``tool_result``, a ``ThoughtEvent`` a ``thought``, speaker selection, input requests and ``StopMessage`` ``system``
steps, a ``HandoffMessage`` a message to its ``target``, the user's messages ``human``. Streaming chunks are left out
(the whole message follows them). ``models_usage`` gives tokens, ``created_at`` the time, ``stop_reason`` the outcome
cue (``TERMINATE`` succeeded, a failure notice failed, anything else unknown).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .base import ParsedStep, ParsedTrace, Source, TraceFormatError, json_text, mostly
from .chat_text import as_int
from .jsonlines import peek, read_values
from .textlog import AgentNames, build_trace, is_human, outcome_from_tail, parse_json_loose

_SKIPPED = {"ModelClientStreamingChunkEvent"}
_SYSTEM = {"UserInputRequestedEvent", "SelectSpeakerEvent", "SelectorEvent", "StopMessage"}
_RESULTS = {"ToolCallSummaryMessage", "MemoryQueryEvent", "CodeExecutionEvent"}


class AutoGenMessages:
    name = "autogen-messages"
    label = "AutoGen AgentChat messages (TaskResult, message list, saved team state)"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if '"source"' not in head and '"TeamState"' not in head:
            return 0.0
        peeked = peek(source)
        if peeked is None:
            return 0.0
        value, is_lines = peeked
        if is_lines:
            return 0.9 if _is_message(value) or _is_task_result(value) else 0.0
        return 0.95 if _messages(value) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        values, is_lines = read_values(source)
        document: Any = values if is_lines else values[0]
        if is_lines:
            results = [v for v in values if _is_task_result(v)]
            document = (
                results[-1] if results else [v for v in values if isinstance(v, dict) and "messages" not in v]
            )
        messages = _messages(document)
        if messages is None:
            raise TraceFormatError(
                "expected AutoGen messages ({source, type, content}): a TaskResult {messages, stop_reason}, a "
                "list or JSON Lines of messages, or a saved TeamState"
            )
        for position, message in enumerate(messages):
            if not _is_message(message):
                raise TraceFormatError(
                    f"message {position} is not an AutoGen message {{source, type, content}}"
                )
        stop = document.get("stop_reason") if isinstance(document, dict) else None
        yield _trace(source, messages, stop if isinstance(stop, str) else "")


def _is_message(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("source"), str)
        and isinstance(value.get("type"), str)
        and "content" in value
    )


def _is_task_result(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("messages"), list) and "stop_reason" in value


def _messages(document: Any) -> list[Any] | None:
    """The run's messages in ``document`` (see the module's list of files), or None."""
    if isinstance(document, dict) and isinstance(document.get("messages"), list):
        found: Any = document["messages"]
    elif isinstance(document, dict) and document.get("type") == "TeamState":
        found = _thread(document.get("agent_states"))
    else:
        found = document
    return found if mostly(found, _is_message) else None


def _thread(states: Any) -> list[Any] | None:
    """The longest ``message_thread`` among a saved team's agent states: the group chat manager's."""
    if not isinstance(states, dict):
        return None
    threads = [
        state["message_thread"]
        for state in states.values()
        if isinstance(state, dict) and isinstance(state.get("message_thread"), list)
    ]
    return max(threads, key=len) if threads else None


def _text(content: Any) -> str:
    """A message's content as text: multimodal parts keep their text, an image is ``[image]``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, (str, dict)) for part in content):
        if all(isinstance(part, str) or "data" in part or part.get("type") == "image" for part in content):
            return "\n".join(part if isinstance(part, str) else "[image]" for part in content)
    return json_text(content)


def _trace(source: Source, messages: list[dict[str, Any]], stop_reason: str) -> ParsedTrace:
    names = AgentNames()
    steps: list[ParsedStep] = []
    calls: dict[str, int] = {}  # call id -> the step that made it
    for message in messages:
        kind_of = message["type"]
        if kind_of in _SKIPPED:
            continue
        speaker = message["source"]
        agent = names(speaker) or None
        step = ParsedStep(
            speaker=speaker,
            agent=agent,
            kind="message",
            content=_text(message.get("content")),
            started_at=_time(message.get("created_at")),
            raw={"type": kind_of},
        )
        usage = message.get("models_usage")
        if isinstance(usage, dict):
            step.input_tokens = as_int(usage.get("prompt_tokens"))
            step.output_tokens = as_int(usage.get("completion_tokens"))
        _classify(step, message, calls, len(steps))
        steps.append(step)
    question = next((s.content for s in steps if s.kind == "human"), "")
    tail = stop_reason + "\n" + (steps[-1].content if steps else "")
    metadata = {"stop_reason": stop_reason} if stop_reason else {}
    return build_trace(
        source,
        fmt=AutoGenMessages.name,
        label=AutoGenMessages.label,
        steps=steps,
        question=question,
        outcome=outcome_from_tail(tail),
        metadata=metadata,
    )


def _classify(step: ParsedStep, message: dict[str, Any], calls: dict[str, int], index: int) -> None:
    kind_of, content = message["type"], message.get("content")
    if kind_of == "ToolCallRequestEvent" and isinstance(content, list):
        made = [c for c in content if isinstance(c, dict)]
        step.kind = "tool_call"
        step.tool_name = ", ".join(str(c.get("name", "")) for c in made)
        arguments = [parse_json_loose(str(c.get("arguments", ""))) for c in made]
        step.tool_arguments = (
            arguments[0]
            if len(made) == 1
            else [{"name": c.get("name"), "arguments": a} for c, a in zip(made, arguments, strict=True)]
        )
        step.content = "\n".join(f"{c.get('name', '')}({c.get('arguments', '')})" for c in made)
        for call in made:
            calls[str(call.get("id", ""))] = index
    elif kind_of == "ToolCallExecutionEvent" and isinstance(content, list):
        results = [r for r in content if isinstance(r, dict)]
        step.kind = "tool_result"
        step.tool_name = ", ".join(str(r.get("name", "")) for r in results)
        step.content = "\n".join(json_text(r.get("content")) for r in results)
        answered = [calls[str(r.get("call_id"))] for r in results if str(r.get("call_id")) in calls]
        step.parent = answered[0] if answered else None
        if any(r.get("is_error") is True for r in results):
            step.raw["is_error"] = True
    elif kind_of in _RESULTS:
        step.kind = "tool_result"
        step.tool_name = "memory" if kind_of == "MemoryQueryEvent" else ""
    elif kind_of == "CodeGenerationEvent":
        step.kind, step.tool_name = "tool_call", "code_execution"
    elif kind_of == "ThoughtEvent":
        step.kind = "thought"
    elif kind_of in _SYSTEM:
        step.kind = "system"
    elif kind_of == "HandoffMessage":
        step.recipient = str(message.get("target") or "")
    elif is_human(step.speaker):
        step.kind = "human"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # AutoGen writes UTC


FORMAT = AutoGenMessages()
