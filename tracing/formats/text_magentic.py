"""Magentic-One / AutoGen 0.4 AgentChat console output (``autogen_agentchat.ui.Console``), as plain text.

Each message is a block under a header line of ten dashes on both sides::

    ---------- TextMessage (user) ----------            (AutoGen >= 0.4.4: message type and source)
    ---------- MagenticOneOrchestrator ----------       (earlier 0.4 releases, and Magentic-One GAIA runs: source only)
    ---------- ToolCallRequestEvent (assistant) ----------
    [FunctionCall(id='call_…', arguments='{"city": "Paris"}', name='get_weather')]
    [Prompt tokens: 62, Completion tokens: 16]          (with ``output_stats=True``)
    ---------- Summary ----------                       (run statistics, not a message)

The first Magentic-One release (``autogen-magentic-one``) logged ``[2024-11-10T14:17:00.613740], Orchestrator
(thought):`` headers between lines of dashes; those speakers (``Orchestrator (-> WebSurfer)``) are split like
Who&When's. Examples: the AutoGen docs' Console transcripts and the MAST dataset's Magentic-One GAIA traces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source, normalise_speaker
from .textlog import (
    AgentNames,
    Block,
    build_trace,
    count_matches,
    head_text,
    is_human,
    kind_from_cues,
    outcome_from_tail,
    parse_json_loose,
    read_text,
    split_blocks,
    utc,
)

_HEADER = re.compile(
    r"^(?:-{4,} (?P<inner>\S[^\n]*?) -{4,}|\[(?P<ts>\d{4}-\d\d-\d\dT[\d:.]+)\], (?P<legacy>[^\n]+?):)[ \t]*$",
    re.MULTILINE,
)
_NEW_HEADER = re.compile(r"^-{4,} \S[^\n]*? -{4,}[ \t]*$", re.MULTILINE)
_TYPED_HEADER = re.compile(r"^-{4,} [A-Z]\w*(?:Message|Event) \([^()\n]*\) -{4,}[ \t]*$", re.MULTILINE)
_LEGACY_HEADER = re.compile(r"^\[\d{4}-\d\d-\d\dT[\d:.]+\], [^\n]+?:[ \t]*$", re.MULTILINE)
_TYPED = re.compile(r"^(?P<etype>[A-Z]\w*(?:Message|Event))\s*\((?P<source>[^()]*)\)$")
_TOKENS = re.compile(r"^\[Prompt tokens: (\d+), Completion tokens: (\d+)\]\s*$", re.MULTILINE)
_CALL = re.compile(
    r"FunctionCall\(id='(?P<id>[^']*)', arguments='(?P<args>(?:[^'\\]|\\.)*)', name='(?P<name>[^']*)'\)"
)
_RESULT_NAME = re.compile(r"name='(?P<name>[^']*)', call_id='[^']*'(?:, is_error=(?P<error>True|False))?")
_HANDOFF = re.compile(r"Transferred to (\w+)")
_SEPARATOR = re.compile(r"\n-{20,}[ \t]*$")  # the legacy log draws a line of dashes between messages
_HARNESS_FOOTER = re.compile(
    r"^(?:SCENARIO\.PY (?:COMPLETE|RUNTIME:[^\n]*)|RUN\.SH COMPLETE)[^\n]*$\n?", re.MULTILINE
)
_SYSTEM_EVENTS = {"UserInputRequestedEvent", "SelectSpeakerEvent", "SelectorEvent", "StopMessage"}


class MagenticConsole:
    name = "text-magentic"
    label = "Magentic-One / AutoGen 0.4 console log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        typed, plain, legacy = (count_matches(p, text) for p in (_TYPED_HEADER, _NEW_HEADER, _LEGACY_HEADER))
        if typed >= 2 or legacy >= 2 or (plain >= 2 and "MagenticOne" in text):
            return 0.92
        if plain >= 3:
            return 0.85
        return 0.6 if typed or legacy or plain >= 2 else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        footer = [line.strip() for line in _HARNESS_FOOTER.findall(text)]
        _, blocks = split_blocks(_HARNESS_FOOTER.sub("", text), _HEADER)
        names = AgentNames()
        steps: list[ParsedStep] = []
        metadata: dict[str, Any] = {}
        for block in blocks:
            if block.match["inner"] == "Summary":
                metadata["summary"] = _summary(block.body)
                continue
            step = _step(block, names)
            if step is None:
                continue
            steps.append(step)
        if footer:
            metadata["harness_footer"] = footer
        question = next((s.content for s in steps if s.kind == "human"), "")
        finish = str(metadata.get("summary", {}).get("Finish reason", ""))
        tail = finish + "\n" + (steps[-1].content if steps else "")
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


def _step(block: Block, names: AgentNames) -> ParsedStep | None:
    body = _SEPARATOR.sub("", block.body).rstrip()
    if block.match["legacy"]:
        return _legacy_step(block, body, names)
    inner = block.match["inner"].strip()
    typed = _TYPED.match(inner)
    event, speaker = (typed["etype"], typed["source"].strip()) if typed else ("", inner)
    if not body and not event:
        return None
    step = ParsedStep(
        speaker=speaker,
        agent=names(speaker) or None,
        kind="message",
        content=body,
        raw={"header": block.header, "line": block.line, "event": event or None},
    )
    tokens = _TOKENS.findall(body)
    if tokens:
        step.input_tokens = sum(int(p) for p, _ in tokens)
        step.output_tokens = sum(int(c) for _, c in tokens)
    _classify(step, event)
    return step


def _classify(step: ParsedStep, event: str) -> None:
    body = step.content
    if event == "ToolCallRequestEvent":
        calls = [(m["name"], parse_json_loose(m["args"].replace("\\'", "'"))) for m in _CALL.finditer(body)]
        step.kind = "tool_call"
        step.tool_name = ", ".join(name for name, _ in calls)
        if len(calls) == 1:
            step.tool_arguments = calls[0][1]
        elif calls:
            step.tool_arguments = [{"name": name, "arguments": args} for name, args in calls]
    elif event in (
        "ToolCallExecutionEvent",
        "ToolCallSummaryMessage",
        "MemoryQueryEvent",
        "CodeExecutionEvent",
    ):
        step.kind = "tool_result"
        results = list(_RESULT_NAME.finditer(body))
        step.tool_name = ", ".join(m["name"] for m in results) or (
            "memory" if event == "MemoryQueryEvent" else ""
        )
        if any(m["error"] == "True" for m in results):
            step.raw["is_error"] = True
    elif event == "ThoughtEvent":
        step.kind = "thought"
    elif event in _SYSTEM_EVENTS:
        step.kind = "system"
    elif event == "HandoffMessage":
        target = _HANDOFF.search(body)
        step.recipient = target.group(1) if target else ""
    elif _is_executor(step.speaker, body):
        step.kind, step.tool_name = "tool_result", "code_execution"
    else:
        step.kind = kind_from_cues(event, body, step.speaker)


def _is_executor(speaker: str, body: str) -> bool:
    """Code executors and Magentic-One's ComputerTerminal report script runs as plain text messages."""
    lowered = speaker.lower()
    return body.startswith("The script ran") or "terminal" in lowered or lowered.endswith("executor")


def _legacy_step(block: Block, body: str, names: AgentNames) -> ParsedStep | None:
    speaker = block.match["legacy"].strip()
    if not body:
        return None
    parts = normalise_speaker(speaker)
    agent = names(parts.agent)
    if parts.tag in ("thought", "termination condition"):
        kind = "thought"
    elif is_human(agent) or agent.lower() in ("userproxy", "user_proxy"):
        kind = "human"
    elif _is_executor(agent, body):
        kind = "tool_result"
    else:
        kind = kind_from_cues("", body, agent)
    return ParsedStep(
        speaker=speaker,
        agent=agent or None,
        kind=kind,
        content=body,
        recipient=parts.recipient,
        started_at=utc(block.match["ts"], "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"),
        raw={"header": block.header, "line": block.line},
    )


def _summary(body: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in body.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


FORMAT = MagenticConsole()
