"""OpenManus console logs (``python main.py`` / ``run_flow.py``): loguru lines from the ``app.*`` modules.

Each agent step is announced and then narrated with emoji-marked lines; a message may continue on the lines after it::

    2025-03-27 22:13:22.390 | INFO     | app.agent.base:run:140 - Executing step 1/20
    … | INFO     | app.llm:update_token_count:250 - Token usage: Input=1862, Completion=27, …
    … | INFO     | app.agent.toolcall:think:84 - ✨ Manus's thoughts: <text>
    … | INFO     | app.agent.toolcall:think:85 - 🛠️ Manus selected 1 tools to use
    … | INFO     | app.agent.toolcall:think:89 - 🧰 Tools being prepared: ['browser_use']
    … | INFO     | app.agent.toolcall:think:92 - 🔧 Tool arguments: {"action":"web_search", …}
    … | INFO     | app.agent.toolcall:act:153 - 🎯 Tool 'browser_use' completed its mission! Result: <output>
    … | INFO     | app.flow.planning:_create_initial_plan:181 - Plan creation result: …   (run_flow.py plans)

Thoughts, tool calls and tool results become steps of the agent named in the ✨/🛠️ lines; plan lines become steps
of ``PlanningFlow``; other warnings and errors become system steps; remaining INFO chatter is skipped. The
``terminate`` tool's ``status`` argument is the run's own verdict. Examples: OpenManus console output pasted in
public repositories (e.g. ``openmanus_output.md``, a ``run_flow.py`` session log).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .base import ParsedStep, ParsedTrace, Source
from .textlog import (
    LOGURU_LINE,
    AgentNames,
    build_trace,
    count_matches,
    head_text,
    parse_json_loose,
    read_text,
    utc,
)

_THOUGHTS = re.compile(r"^✨ (?P<agent>.+?)'s thoughts:\s?(?P<text>.*)$", re.DOTALL)
_SELECTED = re.compile(r"^🛠️ ?(?P<agent>.+?) selected (?P<n>\d+) tools to use")
_PREPARED = re.compile(r"^🧰 Tools being prepared: \[(?P<names>[^\]]*)\]")
_ARGUMENTS = re.compile(r"^🔧 Tool arguments: (?P<args>.*)$", re.DOTALL)
_RESULT = re.compile(r"^🎯 Tool '(?P<tool>[^']+)' completed its mission! Result: ?(?P<text>.*)$", re.DOTALL)
_STEP = re.compile(r"^Executing step (\d+)/(\d+)")
_TOKENS = re.compile(r"^Token usage: Input=(\d+), Completion=(\d+)")
_PLAN = re.compile(r"^(?:Plan creation result:|Marked step \d+ as completed)")
_PLAN_ID = re.compile(r"\bplan_\d+\b")
# The prompt is echoed after "Enter your prompt:" unless it was piped in (then a log line follows on that line).
_PROMPT = re.compile(
    r"^(?:Enter your prompt:|.*Read prompt from task\.txt:) ?(?!\d{4}-\d\d-\d\d )(?P<prompt>\S.*)$",
    re.MULTILINE,
)
_TERMINATE_STATUS = re.compile(r"\"status\"\s*:\s*\"(\w+)\"")
_QUIET_WARNINGS = ("Processing your request",)
_PLANNER = "PlanningFlow"


class OpenManusLog:
    name = "text-openmanus"
    label = "OpenManus log"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None:
            return 0.0
        ours = sum(1 for m in list(LOGURU_LINE.finditer(text))[:200] if m["module"].startswith("app."))
        cues = count_matches(
            re.compile(r"✨ .+?'s thoughts:|🛠️ ?.+? selected \d+ tools to use|🎯 Tool '"), text
        )
        if cues and ours:
            return 0.95
        if ours >= 2 and ("app.agent." in text or "app.flow." in text):
            return 0.85
        return 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        yield _parse(source, self)


class _Run:
    """Reads the log line by line, remembering which agent acts and which tool call is pending."""

    def __init__(self) -> None:
        self.names = AgentNames()
        self.steps: list[ParsedStep] = []
        self.agent = "Manus"
        self.step_no = ""
        self.tokens: tuple[int, int] | None = None
        self.call: ParsedStep | None = None
        self.skipped = 0
        self.verdict = ""

    def add(
        self, speaker: str, agent: str, kind: str, content: str, line: re.Match[str], **extra: Any
    ) -> ParsedStep:
        step = ParsedStep(
            speaker=speaker,
            agent=self.names(agent),
            kind=kind,
            content=content,
            started_at=utc(line["ts"], "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"),
            raw={"header": line.group(0)[:300], "agent_step": self.step_no or None},
            **extra,
        )
        if self.tokens and kind in ("thought", "tool_call", "message"):
            step.input_tokens, step.output_tokens = self.tokens
            self.tokens = None
        self.steps.append(step)
        return step

    def read(self, line: re.Match[str], msg: str) -> None:
        for handler in (self._bookkeeping, self._thought, self._tools, self._result, self._plan):
            if handler(line, msg):
                return
        if line["level"] in ("WARNING", "ERROR", "CRITICAL") and not msg.startswith(_QUIET_WARNINGS):
            owner = _PLANNER if line["module"].startswith("app.flow") else self.agent
            self.add(line["module"], owner, "system", msg, line)
        else:
            self.skipped += 1

    def _bookkeeping(self, line: re.Match[str], msg: str) -> bool:
        step, tokens = _STEP.match(msg), _TOKENS.match(msg)
        if step:
            self.step_no = f"{step.group(1)}/{step.group(2)}"
        elif tokens:
            self.tokens = (int(tokens.group(1)), int(tokens.group(2)))
        return bool(step or tokens)

    def _thought(self, line: re.Match[str], msg: str) -> bool:
        found = _THOUGHTS.match(msg)
        if found:
            self.agent = found["agent"].strip()
            if found["text"].strip():
                self.add(self.agent, self.agent, "thought", found["text"].strip(), line)
        return bool(found)

    def _tools(self, line: re.Match[str], msg: str) -> bool:
        selected, prepared, arguments = _SELECTED.match(msg), _PREPARED.match(msg), _ARGUMENTS.match(msg)
        if selected:
            self.agent = selected["agent"].strip()
            self.call = None
            if int(selected["n"]):
                self.call = self.add(self.agent, self.agent, "tool_call", msg, line)
        elif prepared and self.call is not None:
            self.call.tool_name = ", ".join(n.strip().strip("'\"") for n in prepared["names"].split(","))
            self.call.content += "\n" + msg
        elif arguments and self.call is not None:
            self.call.tool_arguments = parse_json_loose(arguments["args"])
            self.call.content += "\n" + msg
            if self.call.tool_name == "terminate":
                status = _TERMINATE_STATUS.search(arguments["args"])
                self.verdict = status.group(1).lower() if status else self.verdict
        return bool(selected or prepared or arguments)

    def _result(self, line: re.Match[str], msg: str) -> bool:
        found = _RESULT.match(msg)
        if found:
            self.add(
                self.agent, self.agent, "tool_result", found["text"].strip(), line, tool_name=found["tool"]
            )
        return bool(found)

    def _plan(self, line: re.Match[str], msg: str) -> bool:
        if not (line["module"].startswith("app.flow") and _PLAN.match(msg)):
            return False
        kind = "message" if msg.startswith("Plan creation result") else "system"
        self.add(line["module"], _PLANNER, kind, msg, line)
        return True


def _parse(source: Source, fmt: OpenManusLog) -> ParsedTrace:
    text, warnings = read_text(source)
    lines = list(LOGURU_LINE.finditer(text))
    run = _Run()
    prompt = _PROMPT.search(text[: lines[0].start()] if lines else text) or _PROMPT.search(text)
    if prompt and lines:
        first = lines[0]
        run.steps.append(
            ParsedStep(
                speaker="User",
                agent=run.names("User"),
                kind="human",
                content=prompt["prompt"].strip(),
                raw={"header": prompt.group(0)[:300]},
                started_at=utc(first["ts"], "%Y-%m-%d %H:%M:%S.%f"),
            )
        )
    for i, line in enumerate(lines):
        end = lines[i + 1].start() if i + 1 < len(lines) else len(text)
        run.read(line, text[line.start("msg") : end].strip())
    metadata: dict[str, Any] = {"info_lines_skipped": run.skipped} if run.skipped else {}
    plan = _PLAN_ID.search(text)
    outcome = ("unknown", "")
    if run.verdict in ("success", "failure", "failed"):
        outcome = ("succeeded" if run.verdict == "success" else "failed", f"terminate status: {run.verdict}")
    elif "Terminated: Reached max steps" in text:
        outcome = ("failed", "Terminated: Reached max steps")
    return build_trace(
        source,
        fmt=fmt.name,
        label=fmt.label,
        steps=run.steps,
        question=prompt["prompt"].strip() if prompt else "",
        outcome=outcome,
        external_id=plan.group(0) if plan else "",
        metadata=metadata,
        warnings=warnings,
    )


FORMAT = OpenManusLog()
