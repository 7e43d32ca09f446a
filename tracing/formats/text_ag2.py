"""AG2 / AutoGen 0.2 console output, as plain text.

``ConversableAgent`` prints every message as ``sender (to recipient):``, a blank line, the content, and a line of 80
dashes. Between messages the console adds its own notices::

    Next speaker: Engineer                                   (group chats)
    >>>>>>>> USING AUTO REPLY...
    >>>>>>>> EXECUTING CODE BLOCK 0 (inferred language is python)...
    >>>>>>>> EXECUTING FUNCTION get_weather...               (then "Call ID:" / "Input arguments:")
    Replying as User_proxy. Provide feedback to chat_manager. Press enter to skip and use auto-reply, or type 'exit'
    to end the conversation: <what the person typed>
    >>>>>>>> TERMINATING RUN (<uuid>): Maximum turns (10) reached

Tool calls are printed as ``***** Suggested tool call (call_…): name *****`` / ``Arguments:`` blocks and their
results as ``***** Response from calling tool (call_…) *****``; code execution results start ``exitcode: 1
(execution failed)``. Examples: the AG2 docs and notebooks, and the console logs pasted in AG2/AutoGen issues.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .base import ParsedStep, ParsedTrace, Source
from .textlog import (
    AgentNames,
    build_trace,
    count_matches,
    head_text,
    is_human,
    kind_from_cues,
    outcome_from_tail,
    parse_json_loose,
    read_text,
    split_blocks,
    trim_blank_lines,
)

_HEADER = re.compile(r"^(?P<sender>[^\s()][^()\n]*?) \(to (?P<recipient>[^()\n]+)\):[ \t]*$", re.MULTILINE)
_RULE = re.compile(r"^-{40,}[ \t]*$", re.MULTILINE)
_MARKER = re.compile(r"^>{8} ", re.MULTILINE)
_CODE_BLOCK = re.compile(r">{8} EXECUTING CODE BLOCK (\d+) \(inferred language is ([^)]*)\)")
_FUNCTION = re.compile(r">{8} EXECUTING (?:FUNCTION|ASYNC FUNCTION) ([^\s.][^\n]*?)\.\.\.")
_NEXT_SPEAKER = re.compile(r"^Next speaker: (.+)$", re.MULTILINE)
_FEEDBACK = re.compile(
    r"Press enter to skip and use auto-reply, or type 'exit' to end the conversation:[ \t]*(.*)$",
    re.MULTILINE,
)
_TERMINATING = re.compile(r">{8} TERMINATING RUN \(([^)]*)\): ([^\n]+)")
_SUGGESTED = re.compile(
    r"\*{5} Suggested (?:tool|function) call(?: \((?P<id>[^)]*)\))?:? ?(?P<name>[^\s*]+) \*{5}\s*\n"
    r"Arguments:[ \t]*\n(?P<args>.*?)\n\*{5,}",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class _Notices:
    """What the console printed between two messages, applied to the message that follows."""

    code_language: str = ""
    functions: list[str] = field(default_factory=list)
    next_speaker: str = ""
    human_input: bool = False
    termination: str = ""

    @classmethod
    def read(cls, text: str) -> _Notices:
        notices = cls()
        code = _CODE_BLOCK.search(text)
        notices.code_language = code.group(2) if code else ""
        notices.functions = _FUNCTION.findall(text)
        speaker = _NEXT_SPEAKER.search(text)
        notices.next_speaker = speaker.group(1).strip() if speaker else ""
        feedback = _FEEDBACK.search(text)
        # Text typed at the prompt, with no auto-reply notice after it, means a person answered.
        notices.human_input = (
            bool(feedback and feedback.group(1).strip()) and "NO HUMAN INPUT RECEIVED" not in text
        )
        terminating = _TERMINATING.search(text)
        notices.termination = terminating.group(2).strip() if terminating else ""
        return notices


class AG2Console:
    name = "text-ag2"
    label = "AG2 / AutoGen 0.2 console log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        headers = count_matches(_HEADER, text)
        if not headers:
            return 0.0
        if count_matches(_RULE, text) or _MARKER.search(text):
            return 0.92
        return 0.8 if headers >= 2 else 0.6

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        preamble, blocks = split_blocks(text, _HEADER)
        names = AgentNames()
        steps: list[ParsedStep] = []
        notices = _Notices.read(preamble)
        termination = notices.termination
        empty = 0
        for block in blocks:
            body, between = _cut_at_rule(block.body)
            sender, recipient = block.match["sender"].strip(), block.match["recipient"].strip()
            if body:
                steps.append(
                    _step(
                        sender,
                        recipient,
                        body,
                        notices,
                        first=not steps,
                        names=names,
                        raw={"header": block.header, "line": block.line},
                    )
                )
            else:
                empty += (
                    1  # AG2 prints the header twice around tool responses; the empty copy carries nothing
                )
            if body or between.strip():
                notices = _Notices.read(between) if body else _merge(notices, _Notices.read(between))
            termination = notices.termination or termination
        metadata: dict[str, Any] = {"empty_headers_skipped": empty} if empty else {}
        if termination:
            metadata["termination"] = termination
        question = next((s.content for s in steps if s.kind == "human"), "")
        tail = termination + "\n" + (steps[-1].content if steps else "")
        yield build_trace(
            source,
            fmt=self.name,
            label=self.label,
            steps=steps,
            question=question,
            outcome=outcome_from_tail(tail),
            metadata=metadata,
            warnings=warnings,
        )


def _cut_at_rule(body: str) -> tuple[str, str]:
    """The message content and the console notices printed after its closing line of dashes."""
    rule = _RULE.search(body)
    if not rule:
        return trim_blank_lines(body), ""
    return trim_blank_lines(body[: rule.start()]), body[rule.end() :]


def _merge(first: _Notices, second: _Notices) -> _Notices:
    """Notices around an empty duplicate header still apply to the next real message."""
    return _Notices(
        code_language=second.code_language or first.code_language,
        functions=first.functions + second.functions,
        next_speaker=second.next_speaker or first.next_speaker,
        human_input=first.human_input or second.human_input,
        termination=second.termination or first.termination,
    )


def _step(
    sender: str,
    recipient: str,
    body: str,
    notices: _Notices,
    *,
    first: bool,
    names: AgentNames,
    raw: dict[str, Any],
) -> ParsedStep:
    step = ParsedStep(
        speaker=sender, agent=names(sender), kind="message", content=body, recipient=recipient, raw=raw
    )
    if notices.next_speaker:
        raw["next_speaker"] = notices.next_speaker
    calls = list(_SUGGESTED.finditer(body))
    if calls:
        step.kind = "tool_call"
        step.tool_name = ", ".join(m["name"] for m in calls)
        arguments = [parse_json_loose(m["args"]) for m in calls]
        step.tool_arguments = (
            arguments[0]
            if len(arguments) == 1
            else [{"name": m["name"], "arguments": a} for m, a in zip(calls, arguments)]
        )
    elif re.match(r"\*{5} Response from calling (?:tool|function)", body, re.IGNORECASE):
        step.kind, step.tool_name = "tool_result", ", ".join(notices.functions)
    elif body.startswith("exitcode:"):
        step.kind, step.tool_name = "tool_result", "code_execution"
        if notices.code_language:
            raw["code_language"] = notices.code_language
    elif notices.human_input:
        step.kind = "human"
    elif first and (
        is_human(sender) or any(w in sender.lower() for w in ("user", "human", "admin", "proxy"))
    ):
        step.kind = "human"  # the run opens with the task, sent on the person's behalf
    else:
        step.kind = kind_from_cues("", body, sender)
    return step


FORMAT = AG2Console()
