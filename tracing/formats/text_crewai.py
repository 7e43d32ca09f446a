"""CrewAI's verbose console output (``Crew(verbose=True)`` / ``Agent(verbose=True)``), as a captured log.

Two renderings, both read:

- Rich panels (current releases, ``crewai.utilities.events.utils.console_formatter``)::

      ╭──────────────────── 🤖 Agent Started ────────────────────╮
      │  Agent: Senior Data Researcher                            │
      │  Task: Conduct a thorough research about AI LLMs.         │
      ╰───────────────────────────────────────────────────────────╯

  ``🤖 Agent Started`` (agent, task), ``🔧 Agent Tool Execution`` (agent, thought, tool) followed by the ``Tool Input``
  and ``Tool Output`` panels, ``✅ Agent Final Answer`` (agent, answer); panels whose title says an error or a failure
  (``Task Failure``, ``Crew Failure``, ``Tool Error``, …) fail the run. The crew and task trees drawn between panels are
  progress, not steps.
- Markdown headers (releases of late 2024)::

      # Agent: Senior Data Researcher
      ## Task: Conduct a thorough research about AI LLMs.
      ## Thought: … / ## Using tool: … / ## Tool Input: … / ## Tool Output: … / ## Final Answer: …

Steps: the task handed to an agent is a ``human`` step (the crew's author wrote it; the agent is its recipient), a
thought a ``thought``, a tool use a ``tool_call`` (the input parsed as JSON when it is) and its output a
``tool_result`` hanging from it, a final answer a ``message``. The log does not say whether the crew's answer was right:
the outcome is ``unknown`` unless a failure panel says the run failed. Panel lines wrapped by the console stay as
separate lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source
from .crewai_log import task_handoff
from .textlog import (
    AgentNames,
    build_trace,
    count_matches,
    head_text,
    panel_body,
    panel_title,
    parse_json_loose,
    read_text,
)

_PANEL_TITLES = re.compile(
    r"^╭─+ ?(?:🤖 Agent Started|🔧 Agent Tool Execution|✅ Agent Final Answer) ?─", re.MULTILINE
)
_AGENT_HEADER = re.compile(r"^# Agent: (?P<agent>.+)$", re.MULTILINE)
_SECTIONS = ("Task", "Thought", "Using tool", "Tool Input", "Tool Output", "Final Answer")
_SECTION = re.compile(rf"^## (?P<name>{'|'.join(_SECTIONS)}):[ \t]*", re.MULTILINE)
_FIELD = re.compile(r"^(?P<name>Agent|Task|Thought|Using Tool|Final Answer):[ \t]*", re.MULTILINE)
_FAILURE_TITLE = re.compile(r"\b(?:error|failed|failure)\b", re.IGNORECASE)


class CrewAIConsoleLog:
    name = "text-crewai"
    label = "CrewAI console log (verbose)"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        if _PANEL_TITLES.search(text):
            return 0.95
        if _AGENT_HEADER.search(text) and count_matches(_SECTION, text, limit=2):
            return 0.95
        return 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        run = _Run()
        if _PANEL_TITLES.search(text):
            for title, body in _panels(text):
                run.panel(title, body)
        else:
            run.headers(text)
        outcome = ("failed", run.failure) if run.failure else ("unknown", "")
        yield build_trace(
            source,
            fmt=self.name,
            label=self.label,
            steps=run.steps,
            question=run.question,
            outcome=outcome,
            warnings=warnings,
        )


def _panels(text: str) -> Iterator[tuple[str, str]]:
    """Every Rich panel of the log: its title and its text, the border and the padding taken off."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        title = panel_title(lines[i], "╭", "╮")
        if title is None:
            i += 1
            continue
        body, i = panel_body(lines, i + 1)
        yield title, body


def _fields(body: str) -> dict[str, str]:
    """``Agent: …``, ``Task: …``, ``Thought: …``, ``Using Tool: …``, ``Final Answer: …`` of a panel's text."""
    found = list(_FIELD.finditer(body))
    return {
        m["name"]: body[m.end() : found[k + 1].start() if k + 1 < len(found) else len(body)].strip()
        for k, m in enumerate(found)
    }


def _arguments(text: str) -> Any:
    """A tool's input: JSON when it is, also when printed as a JSON string holding JSON (``"{\\"q\\": 1}"``)."""
    value = parse_json_loose(text)
    if isinstance(value, str) and value.startswith('"'):
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        return parse_json_loose(inner) if isinstance(inner, str) else inner
    return value


class _Run:
    def __init__(self) -> None:
        self.names = AgentNames()
        self.steps: list[ParsedStep] = []
        self.agent = ""
        self.question = ""
        self.failure = ""
        self.call: int | None = None  # index of the tool call waiting for its input and output

    def add(self, speaker: str, agent: str | None, kind: str, content: str, **extra: Any) -> ParsedStep:
        step = ParsedStep(speaker=speaker, agent=agent, kind=kind, content=content, **extra)
        self.steps.append(step)
        return step

    def task(self, agent: str, description: str) -> None:
        self.question = self.question or description
        self.steps.append(task_handoff(agent, description))

    def tool(self, agent: str, thought: str, tool: str) -> None:
        if thought:
            self.add(agent, agent, "thought", thought)
        self.add(agent, agent, "tool_call", f"Using tool: {tool}", tool_name=tool)
        self.call = len(self.steps) - 1

    def tool_input(self, text: str) -> None:
        if self.call is not None:
            call = self.steps[self.call]
            call.tool_arguments = _arguments(text)
            call.content += "\n" + text

    def tool_output(self, text: str) -> None:
        call = self.steps[self.call] if self.call is not None else None
        agent = call.agent if call else (self.agent or None)
        self.add(
            agent or "tool",
            agent,
            "tool_result",
            text,
            tool_name=call.tool_name if call else "",
            parent=self.call,
        )
        self.call = None

    def answer(self, agent: str, text: str) -> None:
        self.add(agent, agent, "message", text)
        self.call = None

    # --- Rich panels -------------------------------------------------------------------------------------------------

    def panel(self, title: str, body: str) -> None:
        fields = _fields(body)
        agent = self.names(fields["Agent"].split("\n")[0]) if fields.get("Agent") else self.agent
        if "Agent Started" in title:
            self.agent = agent
            self.task(agent, fields.get("Task", ""))
        elif "Agent Tool Execution" in title:
            self.agent = agent
            self.tool(agent, fields.get("Thought", ""), fields.get("Using Tool", ""))
        elif title == "Tool Input":
            self.tool_input(body)
        elif title == "Tool Output":
            self.tool_output(body)
        elif "Agent Final Answer" in title:
            self.agent = agent
            self.answer(agent, fields.get("Final Answer", body))
        elif _FAILURE_TITLE.search(title):
            self.failure = self.failure or title
            self.add(self.agent or "crew", self.agent or None, "system", f"{title}\n{body}".strip())

    # --- Markdown headers --------------------------------------------------------------------------------------------

    def headers(self, text: str) -> None:
        blocks = list(_AGENT_HEADER.finditer(text))
        for k, block in enumerate(blocks):
            agent = self.names(block["agent"].strip())
            self.agent = agent
            end = blocks[k + 1].start() if k + 1 < len(blocks) else len(text)
            body = text[block.end() : end]
            sections = list(_SECTION.finditer(body))
            thought = ""
            for j, section in enumerate(sections):
                value = body[section.end() : sections[j + 1].start() if j + 1 < len(sections) else len(body)]
                value = value.strip("\n").strip()
                name = section["name"]
                if name == "Task":
                    self.task(agent, value)
                elif name == "Thought":
                    thought = value
                elif name == "Using tool":
                    self.tool(agent, thought, value)
                    thought = ""
                elif name == "Tool Input":
                    self.tool_input(value)
                elif name == "Tool Output":
                    self.tool_output(value)
                elif name == "Final Answer":
                    if thought:
                        self.add(agent, agent, "thought", thought)
                        thought = ""
                    self.answer(agent, value)
            if thought:
                self.add(agent, agent, "thought", thought)


FORMAT = CrewAIConsoleLog()
