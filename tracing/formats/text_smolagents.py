"""smolagents console output (``agent.run(...)`` at the default verbosity), as a captured log.

smolagents' ``AgentLogger`` (``monitoring.py``) prints with Rich::

    ╭──────────────── New run - web_agent ────────────────╮     a run: its task (a managed agent's run names it)
    │ Who tutored Ada Lovelace in mathematics? …           │
    ╰─ LiteLLMModel - gpt-4o ─────────────────────────────╯
    ━━━━━━━━━━━━━━━━━━━━━━━━ Step 1 ━━━━━━━━━━━━━━━━━━━━━━━━     a step of the agent that runs
     ─ Executing parsed code: ─────────────────────────────      a CodeAgent's code (older: ╭─ Executing this code: ─╮)
    Execution logs: … / Out: … / Out - Final answer: …           what the code printed and returned
    ╭──────────────────────────────────────────────────────╮
    │ Calling tool: 'web_search' with arguments: {…}        │     a ToolCallingAgent's call
    ╰──────────────────────────────────────────────────────╯
    Observations: … / Final answer: …                            its result
    [Step 1: Duration 1.84 seconds| Input tokens: 1,121 | Output tokens: 31]

plus errors in red (``Error in code parsing``, ``Code execution failed …``, ``Error executing tool …``,
``Reached max steps.``) and plans (``Initial plan`` / ``Updated plan`` rules). A managed agent's run is nested in
its manager's step: it starts at its ``New run - NAME`` panel and ends with its final answer (or its step limit);
the manager's output follows.

Steps: the top run's task is a ``human`` step; a managed agent's task is a message of its manager to it; code and
tool calls are ``tool_call`` steps of the acting agent (the code as ``python_interpreter``'s input), what they printed
or returned its ``tool_result`` hanging from it, a final answer a ``message``, a plan a ``thought``, an error a
``system`` step of the agent. The footer's token counts are the agent's running totals: each step gets its own
share. ``Reached max steps.`` at the top level fails the run; otherwise the log does not say whether the answer was
right (``unknown``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .base import ParsedStep, ParsedTrace, Source
from .textlog import (
    AgentNames,
    build_trace,
    count_matches,
    dedent_body,
    head_text,
    panel_body,
    panel_title,
    read_text,
)

_STEP = re.compile(r"^━+ Step (?P<n>\d+) ━+$")
_PLANS = ("Initial plan", "Updated plan", "Plan")
_CODE_NEW = re.compile(r"^\s?─ Executing (?:parsed )?code:? ─+\s?$")
_CODE_OLD = re.compile(r"^╭─ Executing (?:this|parsed) code:? ─+╮$")
_RULE_END = re.compile(r"^\s?─{3,}\s?$")
_BOX_TOP = re.compile(r"^╭─+╮$")
_CALL = re.compile(r"^Calling tool: '(?P<name>[^']*)' with arguments: (?P<args>.*)$", re.DOTALL)
_FOOTER = re.compile(
    r"^\\?\[Step (?P<n>\d+): Duration (?P<d>[\d.]+) seconds(?:\| Input tokens: (?P<i>[\d,]+) \| "
    r"Output tokens: (?P<o>[\d,]+))?\\?\]$"
)
_RESULT_START = re.compile(
    r"^(?P<key>Execution logs|Observations|Out - Final answer|Final answer|Out):[ \t]?"
)
_ERROR = re.compile(
    r"^(?:Error in code parsing|Code execution failed|Error executing tool|Error in generating|Error while|"
    r"Error:|Reached max steps\.)"
)
_LINE_NUMBER = re.compile(r"^\s*\d+ ")
_MAIN = "main agent"


class SmolagentsConsoleLog:
    name = "text-smolagents"
    label = "smolagents console log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        runs = sum(1 for line in text.split("\n") if _new_run(line) is not None)
        steps = count_matches(re.compile(r"^━+ Step \d+ ━+$", re.MULTILINE), text)
        footers = count_matches(re.compile(r"^\\?\[Step \d+: Duration [\d.]+ seconds", re.MULTILINE), text)
        if runs and (steps or footers):
            return 0.95
        return 0.9 if steps and footers else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        run = _Run()
        run.read(text.split("\n"))
        failed = run.top_failure
        yield build_trace(
            source,
            fmt=self.name,
            label=self.label,
            steps=run.steps,
            question=run.question,
            outcome=("failed", failed) if failed else ("unknown", ""),
            metadata={"models": run.models} if run.models else {},
            warnings=warnings,
        )


def _new_run(line: str) -> tuple[str | None] | None:
    """``(agent name or None,)`` for a ``New run`` panel's top border, None for another line."""
    title = panel_title(line, "╭", "╮")
    if title is None or not (title == "New run" or title.startswith("New run - ")):
        return None
    return (title[len("New run - ") :].strip() or None,) if title != "New run" else (None,)


def _plan(line: str) -> str | None:
    """The title of a plan rule (``──── Initial plan ────``), None for another line."""
    line = line.rstrip()
    if not (line.startswith("─") and line.endswith("─")):
        return None
    title = line.strip("─ ")
    return title if title.startswith(_PLANS) else None


@dataclass
class _Agent:
    name: str
    tokens: tuple[int, int] = (0, 0)  # running totals the footers printed
    step_first: int | None = None  # the first step of its current smolagents step, which gets the tokens
    call: int | None = None  # its code or tool call whose output the next result lines are


def _dedent(lines: list[str]) -> str:
    return dedent_body("\n".join(line.rstrip() for line in lines)).strip("\n")


def _arguments(text: str) -> Any:
    """A tool call's arguments as printed (a Python dict repr or JSON): data when it reads as a literal."""
    stripped = text.strip()
    for reader in (json.loads, ast.literal_eval):
        try:
            return reader(stripped)
        except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
            continue
    return stripped


class _Run:
    def __init__(self) -> None:
        self.names = AgentNames()
        self.steps: list[ParsedStep] = []
        self.stack: list[_Agent] = []
        self.question = ""
        self.top_failure = ""
        self.models: list[str] = []
        self.pending_pop = False  # a managed agent's run ended: back to its manager after its footer

    @property
    def agent(self) -> _Agent:
        if not self.stack:
            self.stack.append(_Agent(self.names(_MAIN)))
        return self.stack[-1]

    def add(self, kind: str, content: str, *, agent: str | None = None, **extra: Any) -> int:
        name = agent if agent is not None else self.agent.name
        self.steps.append(ParsedStep(speaker=name, agent=name, kind=kind, content=content, **extra))
        index = len(self.steps) - 1
        if self.stack and self.agent.step_first is None and kind != "human":
            self.agent.step_first = index
        return index

    def read(self, lines: list[str]) -> None:
        i = 0
        while i < len(lines):
            i = self.line(lines, i)

    def line(self, lines: list[str], i: int) -> int:
        line = lines[i].rstrip()
        if self.pending_pop and line.strip() and not _FOOTER.match(line.strip()):
            self.stack.pop()
            self.pending_pop = False
        if (run := _new_run(line)) is not None:
            body, after = panel_body(lines, i + 1)
            self.new_run(run[0], body, lines[after - 1] if after - 1 < len(lines) else "")
            return after
        if _STEP.match(line):
            self.agent.step_first = None
            return i + 1
        if _CODE_NEW.match(line):
            j = i + 1
            while j < len(lines) and not _RULE_END.match(lines[j]):
                j += 1
            self.code(_dedent(lines[i + 1 : j]))
            return j + 1
        if _CODE_OLD.match(line):
            body, after = panel_body(lines, i + 1)
            self.code(_dedent([_LINE_NUMBER.sub("", b, count=1) for b in body.split("\n")]))
            return after
        if _BOX_TOP.match(line):
            body, after = panel_body(lines, i + 1)
            text = " ".join(part.strip() for part in body.split("\n") if part.strip())
            found = _CALL.match(text)
            if found is not None:
                self.tool_call(found["name"], found["args"])
            return after
        if (title := _plan(line)) is not None:
            j = self.until_marker(lines, i + 1)
            self.add("thought", _dedent(lines[i + 1 : j]) or title)
            return j
        if (found := _FOOTER.match(line.strip())) is not None:
            self.footer(found)
            return i + 1
        if (found := _RESULT_START.match(line)) is not None:
            j = self.until_marker(lines, i + 1, results=True)
            value = "\n".join([line[found.end() :], *lines[i + 1 : j]]).strip("\n").rstrip()
            self.result(found["key"], value)
            return j
        if _ERROR.match(line):
            j = self.until_marker(lines, i + 1)
            self.error("\n".join(lines[i:j]).strip())
            return j
        return i + 1

    def until_marker(self, lines: list[str], i: int, results: bool = False) -> int:
        """The index of the next line that starts something else (a result line too, unless inside results)."""
        while i < len(lines):
            line = lines[i].rstrip()
            if (
                _new_run(line) is not None
                or _STEP.match(line)
                or _CODE_NEW.match(line)
                or _CODE_OLD.match(line)
                or _BOX_TOP.match(line)
                or _FOOTER.match(line.strip())
                or _ERROR.match(line)
                or (_RESULT_START.match(line) and (not results or not line.startswith("Execution logs")))
            ):
                return i
            i += 1
        return i

    # --- what each marker means ------------------------------------------------------------------------------------

    def new_run(self, name: str | None, task: str, bottom: str) -> None:
        model = panel_title(bottom, "╰", "╯")
        if model and model not in self.models:
            self.models.append(model)
        if name is None and not self.stack:
            self.question = task
            self.steps.append(
                ParsedStep(speaker="user", agent=None, kind="human", content=task, recipient=_MAIN)
            )
            self.stack.append(_Agent(self.names(_MAIN)))
            return
        manager = self.agent.name
        agent = self.names(name or _MAIN)
        self.add("message", task, agent=manager, recipient=agent)
        self.stack.append(_Agent(agent))

    def code(self, code: str) -> None:
        self.agent.call = self.add(
            "tool_call", code, tool_name="python_interpreter", tool_arguments={"code": code}
        )

    def tool_call(self, name: str, args: str) -> None:
        arguments = _arguments(args)
        if name == "final_answer":
            self.agent.call = None
            return  # the "Final answer:" line that follows is the answer
        self.agent.call = self.add("tool_call", f"{name}({args})", tool_name=name, tool_arguments=arguments)

    def result(self, key: str, value: str) -> None:
        agent = self.agent
        if key in ("Final answer", "Out - Final answer"):
            # The answer: for a CodeAgent, what its ``final_answer(...)`` code returned, hanging from that code.
            self.add("message", value, parent=agent.call if key == "Out - Final answer" else None)
            agent.call = None
            self.end_managed_run()
            return
        last = self.steps[-1] if self.steps else None
        if (
            agent.call is not None
            and last is not None
            and last.kind == "tool_result"
            and last.parent == agent.call
        ):
            last.content += f"\n{key}: {value}" if key == "Out" else f"\n{value}"
            return
        if key == "Out" and value == "None" and agent.call is None:
            return
        tool = self.steps[agent.call].tool_name if agent.call is not None else ""
        content = value if key != "Out" else f"Out: {value}"
        self.add("tool_result", content, tool_name=tool, parent=agent.call)

    def error(self, text: str) -> None:
        self.add("system", text)
        if text.startswith("Reached max steps"):
            if len(self.stack) > 1:
                self.end_managed_run()
            else:
                self.top_failure = "Reached max steps."

    def footer(self, found: re.Match[str]) -> None:
        agent = self.agent
        if self.pending_pop:
            self.stack.pop()
            self.pending_pop = False
        if found["i"] is not None:
            totals = (int(found["i"].replace(",", "")), int(found["o"].replace(",", "")))
            first = agent.step_first
            if first is not None and first < len(self.steps):
                step = self.steps[first]
                step.input_tokens = max(0, totals[0] - agent.tokens[0])
                step.output_tokens = max(0, totals[1] - agent.tokens[1])
            agent.tokens = totals
        agent.step_first = None

    def end_managed_run(self) -> None:
        """A managed agent's run ends with its answer (or its step limit); its footer is still its own, so it leaves
        the stack at the next line that is not that footer."""
        if len(self.stack) > 1:
            self.pending_pop = True


FORMAT = SmolagentsConsoleLog()
