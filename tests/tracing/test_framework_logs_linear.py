"""The CrewAI and smolagents readers take time linear in what they are given: hostile lines of ~200 KB (long panel
borders, repeated separators) are detected and parsed at once. No timing assertions: a backtracking pattern would
run for minutes on these, so their finishing within the suite's normal time is the proof (as in
``test_format_regex_linear.py``)."""

from __future__ import annotations

import pytest

from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.crewai_log import FORMAT as CREWAI_LOG
from tracing.formats.text_crewai import FORMAT as CREWAI_CONSOLE
from tracing.formats.text_smolagents import FORMAT as SMOL

SIZE = 200_000


def _source(text: str, name: str = "run.log") -> Source:
    return Source.from_bytes(name, text.encode())


def _parse_or_refuse(fmt, text: str):
    try:
        return list(fmt.parse(_source(text)))
    except TraceFormatError:
        return []


@pytest.mark.parametrize(
    "text",
    [
        # A crew log line of separators with no status at its end, and one with nothing but them.
        '2025-03-10 14:02:11: agent="' + '", task="' * (SIZE // 9) + "\n",
        '2025-03-10 14:02:11: task_name="a", task="' + '", agent="x' * (SIZE // 11) + '", status="started"\n',
    ],
)
def test_crewai_log_lines_of_separators(text):
    CREWAI_LOG.detect(_source(text))
    traces = _parse_or_refuse(CREWAI_LOG, text)
    assert all(t.steps for t in traces)


@pytest.mark.parametrize(
    "line",
    [
        "╭" + "─" * SIZE,  # a border that never closes
        "╭─ 🤖 Agent Started " + "─ " * (SIZE // 2) + "x",
        "╭─ New run - " + "─ " * (SIZE // 2) + "╮x",
        "─ Plan" + "─x" * (SIZE // 2),
        "╰─ " + "─ " * (SIZE // 2),
        "━" * SIZE,
    ],
)
def test_console_readers_on_long_borders(line):
    text = "# Agent: A\n## Task: t\n" + line + "\n" + line + "\n"
    for fmt in (CREWAI_CONSOLE, SMOL):
        fmt.detect(_source(text))
        _parse_or_refuse(fmt, text)
    detect_format(_source(text))


def test_a_huge_panel_and_a_huge_step_parse_whole():
    body = "│  Agent: A" + " " * 10 + "│\n" + "│  Task: " + "x" * SIZE + " │\n"
    panel = "╭──── 🤖 Agent Started ────╮\n" + body + "╰─────────────╯\n"
    (trace,) = CREWAI_CONSOLE.parse(_source(panel))
    assert len(trace.steps[0].content) == SIZE
    run = "╭──── New run ────╮\n│ do it │\n╰─ M ─╯\n━━━ Step 1 ━━━\nObservations: " + "y" * SIZE + "\n"
    run += "[Step 1: Duration 1.00 seconds| Input tokens: 1 | Output tokens: 1]\n"
    (trace,) = SMOL.parse(_source(run))
    assert trace.steps[-1].content == "y" * SIZE
