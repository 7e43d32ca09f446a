"""ChatDev run logs (the ``WareHouse/<project>_<org>_<timestamp>.log`` file every ChatDev run writes).

Every entry starts with ``[YYYY-DD-MM HH:MM:SS INFO]`` (ChatDev writes the day before the month) and runs to the next
such line. Entries that matter::

    [2023-20-09 13:50:40 INFO] Chief Product Officer: **Chief Product Officer<->Chief Executive Officer on :
        DemandAnalysis, turn 0**                          (a role-play turn: speaker, partner, phase, turn)
    [2023-20-09 13:50:38 INFO] Chief Executive Officer: **[Start Chat]**     (the phase prompt that opens a chat)
    [2023-20-09 13:50:38 INFO] System: **[chatting]**     (phase parameters)
    [2023-20-09 13:50:40 INFO] **[Seminar Conclusion]**:  / **[Update Codes]** / **[Test Reports]**: / ...
    [2023-20-09 13:54:18 INFO] **[Human-Agent-Interaction]** / **[User Provided Comments]**   (human in the loop)

``**[Preprocessing]**`` holds the task and run id, ``**[OpenAI_Usage_Info Receive]**`` the tokens of the turn that
follows; both become metadata, not steps. Example: OpenBMB/ChatDev ``WareHouse/Gomoku_HumanAgentInteraction_*.log``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source
from .textlog import (
    AgentNames,
    Block,
    build_trace,
    count_matches,
    head_text,
    read_text,
    split_blocks,
    utc,
)

_HEADER = re.compile(r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?P<level>[A-Z]+)\] ?(?P<rest>[^\n]*)$", re.MULTILINE)
_TURN = re.compile(r"^\*\*(?P<a>[^*<>]+?)<->(?P<b>[^*<>]+?) on : (?P<phase>[^,*]+), turn (?P<turn>\d+)\*\*")
_ROLE = re.compile(r"^(?P<role>[A-Z][\w .'-]{0,60}?): (?P<rest>.*)$")
_EVENT = re.compile(r"^\*\*\[(?P<event>[^\]]+)\]\*\*:?\s*(?P<rest>.*)$")
_TASK = re.compile(r"\*\*task_prompt\*\*:\s*(.+)")
_PROJECT = re.compile(r"\*\*project_name\*\*:\s*(.+)")
_RUN_ID = re.compile(r"\*\*ChatDev Starts\*\* \((\d+)\)")
_USAGE = re.compile(r"^(prompt_tokens|completion_tokens):\s*(\d+)", re.MULTILINE)
_NOISE = ("flask app.py did not start for online log", "HTTP Request:")

# Environment events (no agent speaks them): kind and tool name.
_EVENTS = {
    "Seminar Conclusion": ("system", ""),
    "Update Codes": ("tool_result", "update_codes"),
    "Rewrite Codes": ("tool_result", "rewrite_codes"),
    "Test Reports": ("tool_result", "run_tests"),
    "Software Info": ("system", ""),
    "Execute Detail": ("system", ""),
    "Human-Agent-Interaction": ("system", ""),
    "User Provided Comments": ("human", ""),
    "Post Info": ("system", ""),
}
_ENVIRONMENT = "ChatDev"


class ChatDevLog:
    name = "text-chatdev"
    label = "ChatDev log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        entries = count_matches(_HEADER, text)
        if not entries:
            return 0.0
        if "**ChatDev Starts**" in text or re.search(r"<->[^*\n]+ on : \w+, turn \d+\*\*", text):
            return 0.95
        return 0.85 if entries >= 3 and "**[" in text else 0.3

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        _, blocks = split_blocks(text, _HEADER)
        names = AgentNames()
        steps: list[ParsedStep] = []
        metadata: dict[str, Any] = {}
        tokens: dict[str, int] = {}
        skipped = 0
        for block in blocks:
            rest = block.match["rest"].strip()
            event = _EVENT.match(rest)
            if event and event["event"] == "Preprocessing":
                metadata.update(_preprocessing(block.body))
            elif event and event["event"].startswith("OpenAI_Usage_Info"):
                if "Receive" in event["event"]:
                    tokens = {key: int(value) for key, value in _USAGE.findall(block.body)}
            elif rest.startswith(_NOISE):
                skipped += 1
            else:
                step = _step(block, rest, names)
                if step is None:
                    continue
                if tokens and step.kind == "message" and step.raw.get("phase"):
                    step.input_tokens, step.output_tokens = tokens.get("prompt_tokens"), tokens.get("completion_tokens")
                    tokens = {}
                steps.append(step)
        if skipped:
            metadata["noise_lines_skipped"] = skipped
        yield build_trace(source, fmt=self.name, label=self.label, steps=steps,
                          question=str(metadata.get("task_prompt", "")), external_id=str(metadata.get("run_id", "")),
                          metadata=metadata, warnings=warnings)


def _step(block: Block, rest: str, names: AgentNames) -> ParsedStep | None:
    started = utc(block.match["ts"], "%Y-%d-%m %H:%M:%S", "%Y-%m-%d %H:%M:%S")
    raw: dict[str, Any] = {"header": block.header, "line": block.line, "level": block.match["level"]}
    event = _EVENT.match(rest)
    if event:
        kind, tool = _EVENTS.get(event["event"], ("system", ""))
        speaker = "Human" if kind == "human" else _ENVIRONMENT
        raw["event"] = event["event"]
        content = "\n".join(part for part in (event["rest"], block.body) if part.strip())
        return ParsedStep(speaker=speaker, agent=names(speaker), kind=kind, content=content, tool_name=tool,
                          started_at=started, raw=raw)
    role = _ROLE.match(rest)
    if not role:
        content = "\n".join(part for part in (rest, block.body) if part.strip())
        if not content:
            return None
        return ParsedStep(speaker=_ENVIRONMENT, agent=names(_ENVIRONMENT), kind="system", content=content,
                          started_at=started, raw=raw)
    speaker, said = role["role"].strip(), role["rest"].strip()
    turn = _TURN.match(said)
    if turn:
        raw.update(phase=turn["phase"].strip(), turn=int(turn["turn"]))
        recipient = turn["b"].strip() if turn["a"].strip() == speaker else turn["a"].strip()
        return ParsedStep(speaker=speaker, agent=names(speaker), kind="message", content=block.body,
                          recipient=names(recipient), started_at=started, raw=raw)
    tag = _EVENT.match(said)
    if tag:
        raw["event"] = tag["event"]
    content = "\n".join(part for part in (said, block.body) if part.strip())
    if speaker == "System":  # ChatDev's own phase bookkeeping, logged under the role name "System"
        return ParsedStep(speaker=speaker, agent=names(_ENVIRONMENT), kind="system", content=content,
                          started_at=started, raw=raw)
    return ParsedStep(speaker=speaker, agent=names(speaker), kind="message", content=content, started_at=started,
                      raw=raw)


def _preprocessing(body: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, pattern in (("task_prompt", _TASK), ("project_name", _PROJECT), ("run_id", _RUN_ID)):
        match = pattern.search(body)
        if match:
            found[key] = match.group(1).strip()
    return found


FORMAT = ChatDevLog()
