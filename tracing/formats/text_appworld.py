"""AppWorld multi-agent (supervisor + one agent per app) run logs, as released with the MAST traces.

A run opens with a task banner and the instruction, then bare header lines, indented by nesting depth::

    ******************** Task 1/1 (3d9a636_2) ********************
    <the task instruction>
    Response from Supervisor Agent          the supervisor's code (e.g. send_message(app_name='spotify', …))
    Code Execution Output                   what running it printed
    Entering spotify Agent message loop
        Message to spotify Agent            first: the supervisor's request; later: output of the app agent's code
        Response from spotify Agent         the app agent's code
    Exiting spotify Agent message loop
        Reply from spotify Agent to Supervisor
    Response from send_message API          the reply as the supervisor's code receives it
    Evaluation                              JSON: success, passes, failures

Several tasks in one file give one trace each. Examples: parsers of the MAST AppWorld traces in public repositories
(``parse_appworld`` adapters that list this header vocabulary); the task banner id becomes the external id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source, TraceFormatError
from .textlog import (
    AgentNames,
    Block,
    build_trace,
    count_matches,
    dedent_body,
    head_text,
    read_text,
    split_blocks,
)

_HEADER = re.compile(
    r"^[ \t]*(?:Response from send_message API|Response from (?P<resp>[^\n]+?) Agent"
    r"|Message to (?P<msg>[^\n]+?) Agent|Reply from (?P<reply>[^\n]+?) Agent to (?P<reply_to>[^\n]+?)"
    r"|Code Execution Output|Entering (?P<enter>[^\n]+?) Agent message loop"
    r"|Exiting (?P<exit>[^\n]+?) Agent message loop|Evaluation)[ \t]*$",
    re.MULTILINE,
)
_BANNER = re.compile(
    r"^[ \t]*\*{5,}\s*Task (?P<n>\d+)/(?P<of>\d+) \((?P<id>[^)\n]*)\)\s*\*{5,}[ \t]*$", re.MULTILINE
)
_API_CALL = re.compile(r"\bapis\.(\w+)\.(\w+)\(")
_SEND = re.compile(r"\bsend_message\(")
_SUPERVISOR = "Supervisor"


class AppWorldLog:
    name = "text-appworld"
    label = "AppWorld supervisor log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        responses = count_matches(
            re.compile(r"^[ \t]*Response from \S[^\n]* Agent[ \t]*$", re.MULTILINE), text
        )
        others = count_matches(
            re.compile(r"^[ \t]*(?:Code Execution Output|Message to \S[^\n]* Agent)[ \t]*$", re.MULTILINE),
            text,
        )
        if responses and others:
            return 0.95 if _BANNER.search(text) else 0.9
        return 0.6 if responses + others >= 2 else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        banners = list(_BANNER.finditer(text))
        if not banners:
            yield _trace(source, self, text, None, warnings)
            return
        traces, empty = [], []
        for i, banner in enumerate(banners):
            end = banners[i + 1].start() if i + 1 < len(banners) else len(text)
            try:
                traces.append(_trace(source, self, text[banner.end() : end], banner, []))
            except TraceFormatError:
                empty.append(
                    banner["id"].strip()
                )  # a task that crashed before any turn: the others still count
        if not traces:
            raise TraceFormatError(f"none of the {len(banners)} task(s) in this AppWorld log has any turns")
        traces[0].warnings = warnings + [f"task {task} has no turns and was skipped" for task in empty]
        if len(banners) > 1:
            for trace in traces:
                trace.name = f"{trace.name}/{trace.external_id or trace.metadata.get('task_number')}"
        yield from traces


class _Loop:
    """Message loops nest: who is answering whom at the current depth."""

    def __init__(self) -> None:
        self.apps: list[str] = []
        self.messages: dict[str, int] = {}


def _trace(
    source: Source, fmt: AppWorldLog, text: str, banner: re.Match[str] | None, warnings: list[str]
) -> ParsedTrace:
    preamble, blocks = split_blocks(text, _HEADER)
    names, loop = AgentNames(), _Loop()
    steps: list[ParsedStep] = []
    metadata: dict[str, Any] = {}
    if banner:
        metadata.update(task_number=int(banner["n"]), task_count=int(banner["of"]))
    for block in blocks:
        if block.header == "Evaluation":
            metadata["evaluation"] = _evaluation(block.body)
            continue
        step = _step(block, dedent_body(block.body).strip("\n"), loop, names, first=not steps)
        if step is not None:
            steps.append(step)
    evaluation = metadata.get("evaluation")
    outcome = ("unknown", "")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("success"), bool):
        outcome = (
            ("succeeded", "evaluation success: true")
            if evaluation["success"]
            else ("failed", "evaluation success: false")
        )
    return build_trace(
        source,
        fmt=fmt.name,
        label=fmt.label,
        steps=steps,
        question=preamble.strip(),
        outcome=outcome,
        external_id=banner["id"].strip() if banner else "",
        metadata=metadata,
        warnings=warnings,
    )


def _step(block: Block, body: str, loop: _Loop, names: AgentNames, *, first: bool) -> ParsedStep | None:
    m, header = block.match, block.header
    if m["enter"]:
        loop.apps.append(names(m["enter"].strip()))
        loop.messages[loop.apps[-1]] = 0
        return None
    if m["exit"]:
        if loop.apps:
            loop.apps.pop()
        return None
    if not body.strip():
        return None
    raw = {"header": header, "line": block.line}
    caller = loop.apps[-1] if loop.apps else names(_SUPERVISOR)
    if m["resp"]:
        agent = names(m["resp"].strip())
        kind, tool = _code_kind(body)
        return ParsedStep(
            speaker=f"{m['resp'].strip()} Agent",
            agent=agent,
            kind=kind,
            content=body,
            tool_name=tool,
            raw=raw,
        )
    if m["reply"]:
        return ParsedStep(
            speaker=f"{m['reply'].strip()} Agent",
            agent=names(m["reply"].strip()),
            kind="message",
            content=body,
            recipient=names(m["reply_to"].strip()),
            raw=raw,
        )
    if m["msg"]:
        target = names(m["msg"].strip())
        if target == names(_SUPERVISOR):
            # Outside any app loop, the first message to the supervisor is the task itself.
            kind = "human" if first else "tool_result"
            return ParsedStep(
                speaker=header,
                agent=target if kind == "tool_result" else "User",
                kind=kind,
                content=body,
                raw=raw,
            )
        count = loop.messages.get(target, 0)
        loop.messages[target] = count + 1
        if count == 0:  # the request that opens the app agent's loop comes from the supervisor
            return ParsedStep(
                speaker=header,
                agent=names(_SUPERVISOR),
                kind="message",
                content=body,
                recipient=target,
                raw=raw,
            )
        return ParsedStep(
            speaker=header,
            agent=target,
            kind="tool_result",
            content=body,
            tool_name="code_execution",
            raw=raw,
        )
    if header == "Response from send_message API":
        return ParsedStep(
            speaker=header, agent=caller, kind="tool_result", content=body, tool_name="send_message", raw=raw
        )
    return ParsedStep(
        speaker=header, agent=caller, kind="tool_result", content=body, tool_name="code_execution", raw=raw
    )


def _code_kind(body: str) -> tuple[str, str]:
    """An agent's response is code; calls to AppWorld APIs or send_message make it a tool call."""
    api = _API_CALL.search(body)
    if _SEND.search(body) and (not api or _SEND.search(body).start() < api.start()):
        return "tool_call", "send_message"
    if api:
        return "tool_call", f"{api.group(1)}.{api.group(2)}"
    return "message", ""


def _evaluation(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.strip()


FORMAT = AppWorldLog()
