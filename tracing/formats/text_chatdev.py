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

The copies released with the MAST dataset drop the ``[time INFO]`` prefix: an entry then starts at a line that is a
``**[Event]**`` tag or ``Role: **…**`` (``Chief Executive Officer: **[Start Chat]**``, ``Programmer: **Programmer<->
Code Reviewer on : Coding, turn 1**``). Speakers are always the roles named there; ChatDev's own bookkeeping
(``System: **[chatting]**``, seminar conclusions, code updates) belongs to no agent. Each ``[chatting]`` table opens a
phase of the Chat Chain: its phase and two roles go to ``metadata["chat_chain"]`` and the phase onto each turn.
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

_HEADER = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?P<level>[A-Z]+)\] ?(?P<rest>[^\n]*)$", re.MULTILINE
)
# The MAST copies: no time prefix, so only a bold event tag or a role's bold turn line may open an entry.
_BARE_HEADER = re.compile(
    r"^(?P<ts>)(?P<level>)(?P<rest>(?:[A-Z][\w .'-]{0,60}?: )?\*\*"
    r"(?:\[[^\]\n]{1,60}\]|[^*<>\n]{1,60}?<->[^*<>\n]{1,60}? on : [^,*\n]{1,60}, turn \d+)\*\*[^\n]*)$",
    re.MULTILINE,
)
_PARAMETER = re.compile(r"^\| \*\*(?P<key>\w+)\*\* \| (?P<value>[^|\n]*?) \|$", re.MULTILINE)
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
_ENVIRONMENT = "ChatDev"  # the speaker string of ChatDev's own entries; they belong to no agent


class ChatDevLog:
    name = "text-chatdev"
    label = "ChatDev log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        marked = "**ChatDev Starts**" in text or re.search(r"<->[^*\n]+ on : \w+, turn \d+\*\*", text)
        entries = count_matches(_HEADER, text)
        if not entries:
            return 0.9 if marked and count_matches(_BARE_HEADER, text) >= 2 else 0.0
        if marked:
            return 0.95
        return 0.85 if entries >= 3 and "**[" in text else 0.3

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        header = _HEADER if count_matches(_HEADER, text, limit=3) >= 3 else _BARE_HEADER
        _, blocks = split_blocks(text, header)
        state = _Run()
        for block in blocks:
            state.read(block)
        if state.skipped:
            state.metadata["noise_lines_skipped"] = state.skipped
        if state.chain:
            state.metadata["chat_chain"] = state.chain
        yield build_trace(
            source,
            fmt=self.name,
            label=self.label,
            steps=state.steps,
            question=str(state.metadata.get("task_prompt", "")),
            external_id=str(state.metadata.get("run_id", "")),
            metadata=state.metadata,
            warnings=warnings,
        )


class _Run:
    """What reading one log has found so far: steps, metadata, the Chat Chain and its current phase."""

    def __init__(self) -> None:
        self.names = AgentNames()
        self.steps: list[ParsedStep] = []
        self.metadata: dict[str, Any] = {}
        self.chain: list[dict[str, str]] = []
        self.tokens: dict[str, int] = {}
        self.skipped = 0

    @property
    def phase(self) -> dict[str, str]:
        return self.chain[-1] if self.chain else {}

    def read(self, block: Block) -> None:
        rest = block.match["rest"].strip()
        event = _EVENT.match(rest)
        if event and event["event"] == "Preprocessing":
            self.metadata.update(_preprocessing(block.body))
        elif event and event["event"].startswith("OpenAI_Usage_Info"):
            if "Receive" in event["event"]:
                self.tokens = {key: int(value) for key, value in _USAGE.findall(block.body)}
        elif rest.startswith(_NOISE):
            self.skipped += 1
        else:
            self._chain_link(rest, block.body)
            step = _step(block, rest, self.names, self.phase)
            if step is None:
                return
            if self.tokens and step.kind == "message" and step.raw.get("turn") is not None:
                step.input_tokens, step.output_tokens = (
                    self.tokens.get("prompt_tokens"),
                    self.tokens.get("completion_tokens"),
                )
                self.tokens = {}
            self.steps.append(step)

    def _chain_link(self, rest: str, body: str) -> None:
        """``System: **[chatting]**`` opens a phase: its parameter table names the phase and its two roles."""
        if not rest.startswith("System: **[chatting]**"):
            return
        params = {m["key"]: m["value"].strip() for m in _PARAMETER.finditer(body)}
        if params.get("phase_name"):
            self.chain.append(
                {
                    "phase": params["phase_name"],
                    "assistant": params.get("assistant_role_name", ""),
                    "user": params.get("user_role_name", ""),
                }
            )


def _step(block: Block, rest: str, names: AgentNames, phase: dict[str, str]) -> ParsedStep | None:
    started = utc(block.match["ts"], "%Y-%d-%m %H:%M:%S", "%Y-%m-%d %H:%M:%S")
    raw: dict[str, Any] = {"header": block.header, "line": block.line, "level": block.match["level"]}
    if phase:
        raw["phase"] = phase["phase"]
    event = _EVENT.match(rest)
    if event:
        kind, tool = _EVENTS.get(event["event"], ("system", ""))
        raw["event"] = event["event"]
        content = "\n".join(part for part in (event["rest"], block.body) if part.strip())
        if kind == "human":
            return ParsedStep(
                speaker="Human", agent=names("Human"), kind=kind, content=content, started_at=started, raw=raw
            )
        return ParsedStep(
            speaker=_ENVIRONMENT,
            agent=None,
            kind=kind,
            content=content,
            tool_name=tool,
            started_at=started,
            raw=raw,
        )
    role = _ROLE.match(rest)
    if not role:
        content = "\n".join(part for part in (rest, block.body) if part.strip())
        if not content:
            return None
        return ParsedStep(
            speaker=_ENVIRONMENT, agent=None, kind="system", content=content, started_at=started, raw=raw
        )
    return _role_step(role["role"].strip(), role["rest"].strip(), block, names, phase, started, raw)


def _role_step(
    speaker: str,
    said: str,
    block: Block,
    names: AgentNames,
    phase: dict[str, str],
    started: Any,
    raw: dict[str, Any],
) -> ParsedStep:
    turn = _TURN.match(said)
    if turn:
        raw.update(phase=turn["phase"].strip(), turn=int(turn["turn"]))
        recipient = turn["b"].strip() if turn["a"].strip() == speaker else turn["a"].strip()
        return ParsedStep(
            speaker=speaker,
            agent=names(speaker),
            kind="message",
            content=block.body,
            recipient=names(recipient),
            started_at=started,
            raw=raw,
        )
    tag = _EVENT.match(said)
    if tag:
        raw["event"] = tag["event"]
    content = "\n".join(part for part in (said, block.body) if part.strip())
    if speaker == "System":  # ChatDev's own phase bookkeeping, logged under the role name "System"
        return ParsedStep(
            speaker=speaker, agent=None, kind="system", content=content, started_at=started, raw=raw
        )
    partner = phase.get("assistant") if speaker == phase.get("user") else phase.get("user", "")
    return ParsedStep(
        speaker=speaker,
        agent=names(speaker),
        kind="message",
        content=content,
        recipient=names(partner) if partner and partner != speaker else "",
        started_at=started,
        raw=raw,
    )


def _preprocessing(body: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, pattern in (("task_prompt", _TASK), ("project_name", _PROJECT), ("run_id", _RUN_ID)):
        match = pattern.search(body)
        if match:
            found[key] = match.group(1).strip()
    return found


FORMAT = ChatDevLog()
