"""MetaGPT console logs (loguru lines ``time | LEVEL | module:function:line - message`` plus raw LLM output).

A role's turn opens with its action line and runs until the next one; the LLM's streamed output sits between them
as plain lines::

    2024-03-11 15:02:11.455 | INFO     | metagpt.roles.role:_act:391 - Alice(Product Manager): to do WritePRD(WritePRD)
    2023-08-06 17:20:03.623 | INFO     | metagpt.roles.role:_act:166 - Alice(Product Manager): ready to WritePRD
    2024-03-11 15:02:41.207 | INFO     | metagpt.utils.cost_manager:update_cost:57 - Total running cost: $0.021 | …,
        prompt_tokens: 1021, completion_tokens: 489
    2024-03-11 15:04:21.530 | ERROR    | metagpt.utils.common:log_it:554 - Finished call to '…_aask_v1' after …

The agent is the role's profile (``Product Manager``); the persona name (``Alice``) stays in the speaker. Runs of
WARNING/ERROR lines (with their tracebacks) become system steps of the role that was acting. The task comes from
``New requirement detected: …`` or the Human message MetaGPT publishes at DEBUG level. Examples: the MetaGPT README
and docs transcripts, and the logs pasted in MetaGPT issues.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source
from .textlog import (
    LOGURU_LINE,
    AgentNames,
    build_trace,
    head_text,
    read_text,
    trim_blank_lines,
    utc,
)

_ACTION = re.compile(r"^(?P<name>[\w .-]+?)\((?P<profile>[^()]+)\): (?:to do|ready to) (?P<action>\w+)")
_COST = re.compile(r"prompt_tokens: (\d+), completion_tokens: (\d+)")
_REQUIREMENT = re.compile(r"New requirement detected: (.+)")
_PUBLISH = re.compile(r"publish_message: (\{.*\})")
_TOOL_ACTIONS = re.compile(r"^(?:Run|Execute)\w*")
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|\bException occurs\b|NoMoneyException|Insufficient funds"
)


class MetaGPTLog:
    name = "text-metagpt"
    label = "MetaGPT log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        lines = [m for m in LOGURU_LINE.finditer(text)][:200]
        ours = sum(1 for m in lines if m["module"].startswith("metagpt"))
        if not ours:
            return 0.0
        return 0.95 if any(_ACTION.match(m["msg"]) for m in lines) else 0.85

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        lines = list(LOGURU_LINE.finditer(text))
        names = AgentNames()
        steps: list[ParsedStep] = []
        question, preamble = "", []
        current: ParsedStep | None = None
        for i, line in enumerate(lines):
            end = lines[i + 1].start() if i + 1 < len(lines) else len(text)
            entry = text[line.start() : end].rstrip("\n")
            msg = line["msg"]
            question = question or _task(msg)
            action = _ACTION.match(msg)
            if action:
                current = _turn(line, action, names)
                steps.append(current)
                current.content = trim_blank_lines(text[line.end() : end])
            elif line["level"] in ("WARNING", "ERROR", "CRITICAL"):
                _add_problem(steps, current, line, entry, names)
            elif current is None:
                preamble.append(entry)
            else:
                _cost(current, msg)
                extra = trim_blank_lines(text[line.end() : end])
                current.content = "\n".join(p for p in (current.content, msg, extra) if p)
        human = _human_step(text)
        if human:
            steps.insert(0, human)
            question = question or human.content
        metadata: dict[str, Any] = {"preamble": "\n".join(preamble)} if preamble else {}
        yield build_trace(
            source,
            fmt=self.name,
            label=self.label,
            steps=steps,
            question=question,
            outcome=_outcome(text),
            metadata=metadata,
            warnings=warnings,
        )


def _turn(line: re.Match[str], action: re.Match[str], names: AgentNames) -> ParsedStep:
    speaker = f"{action['name'].strip()}({action['profile'].strip()})"
    name = action["action"]
    kind = "tool_result" if _TOOL_ACTIONS.match(name) else "message"
    return ParsedStep(
        speaker=speaker,
        agent=names(action["profile"]),
        kind=kind,
        content="",
        tool_name=name if kind == "tool_result" else "",
        started_at=_time(line),
        raw={"header": line.group(0), "action": name, "persona": action["name"].strip()},
    )


def _add_problem(
    steps: list[ParsedStep], current: ParsedStep | None, line: re.Match[str], entry: str, names: AgentNames
) -> None:
    """Consecutive warnings and errors (tracebacks included) make one system step of the acting role."""
    last = steps[-1] if steps else None
    if last is not None and last.kind == "system" and last.raw.get("problem"):
        last.content += "\n" + entry
        return
    agent = current.agent if current else names("MetaGPT")
    steps.append(
        ParsedStep(
            speaker=line["module"],
            agent=agent,
            kind="system",
            content=entry,
            started_at=_time(line),
            raw={"header": line.group(0), "problem": True},
        )
    )


def _cost(step: ParsedStep, msg: str) -> None:
    cost = _COST.search(msg)
    if cost and "update_cost" not in step.raw:
        step.input_tokens, step.output_tokens = int(cost.group(1)), int(cost.group(2))
        step.raw["update_cost"] = True


def _task(msg: str) -> str:
    found = _REQUIREMENT.search(msg)
    return found.group(1).strip() if found else ""


def _human_step(text: str) -> ParsedStep | None:
    """MetaGPT publishes the person's requirement as a Human message; it shows at DEBUG level only."""
    for line in LOGURU_LINE.finditer(text):
        published = _PUBLISH.search(line["msg"])
        if not published:
            continue
        try:
            message = json.loads(published.group(1))
        except ValueError:
            continue
        if isinstance(message, dict) and str(message.get("role", "")).lower() in ("human", "user"):
            return ParsedStep(
                speaker=str(message["role"]),
                agent="Human",
                kind="human",
                content=str(message.get("content", "")),
                started_at=_time(line),
                raw={"header": line.group(0)},
            )
    return None


def _outcome(text: str) -> tuple[str, str]:
    """A run that ends in a traceback or MetaGPT's "Exception occurs" notice crashed: the log says it failed."""
    tail = text[-3000:]
    found = _FAILURE.search(tail)
    return ("failed", found.group(0)) if found else ("unknown", "")


def _time(line: re.Match[str]) -> Any:
    return utc(line["ts"], "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")


FORMAT = MetaGPTLog()
