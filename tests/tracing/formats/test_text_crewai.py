"""CrewAI's verbose console output: the Markdown-header rendering (``textlogs/crewai.log``) and the Rich panels of
current releases (``crewai/verbose_panels.log``, rendered with Rich's ``Panel`` exactly as CrewAI's
``ConsoleFormatter`` builds them: the same titles, ``Agent: …`` / ``Task: …`` / ``Thought: …`` / ``Using Tool: …`` /
``Final Answer:`` lines and padding, at a width of 100 columns)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, import_now, incoming_path
from tracing.formats import Source, detect_format
from tracing.formats.text_crewai import FORMAT as CREWAI
from tracing.models import JobStatus, Step, Trace

HEADERS = ROOT / "tests" / "fixtures" / "textlogs" / "crewai.log"
PANELS = ROOT / "tests" / "fixtures" / "crewai" / "verbose_panels.log"
RESEARCHER, ANALYST = "AI LLMs Senior Data Researcher", "AI LLMs Reporting Analyst"


def _trace(path):
    source = Source.from_bytes(path.name, path.read_bytes())
    assert detect_format(source).name == "text-crewai"
    (trace,) = CREWAI.parse(source)
    return trace


def test_panels_become_task_handoffs_thoughts_tool_calls_results_and_answers():
    trace = _trace(PANELS)
    assert [(s.kind, s.agent, s.recipient) for s in trace.steps] == [
        ("human", None, RESEARCHER),
        ("thought", RESEARCHER, ""),
        ("tool_call", RESEARCHER, ""),
        ("tool_result", RESEARCHER, ""),
        ("message", RESEARCHER, ""),
        ("human", None, ANALYST),
        ("message", ANALYST, ""),
    ]
    task, thought, call, result, answer = trace.steps[:5]
    # The console wrapped the task at the panel's width; the words are all there, in order.
    assert " ".join(task.content.split()) == (
        "Conduct a thorough research about AI LLMs. Make sure you find any interesting and relevant information "
        "given the current year is 2025."
    )
    assert trace.question == task.content
    assert thought.content == "I need the latest news about large language models released this year."
    assert call.tool_name == "Search the internet with Serper"
    assert call.tool_arguments == {"search_query": "AI LLM news 2025"}
    assert (result.tool_name, result.parent) == ("Search the internet with Serper", 2)
    assert result.content.startswith("Search results: Title: GPT-5 launch\nLink: https://example.com/gpt5")
    # A Markdown heading inside an answer stays in the answer (no invented speaker).
    assert answer.content.endswith("# Notes\nSources were checked.")
    assert trace.steps[-1].content.startswith("# AI LLMs in 2025\n\n## GPT-5")
    assert [a.name for a in trace.agents] == [RESEARCHER, ANALYST]
    assert trace.outcome == "unknown"


def test_markdown_headers_become_the_same_kinds_of_steps():
    trace = _trace(HEADERS)
    kinds = [s.kind for s in trace.steps]
    assert kinds[:8] == [
        "human",
        "thought",
        "tool_call",
        "tool_result",
        "thought",
        "tool_call",
        "tool_result",
        "message",
    ]
    call = trace.steps[2]
    # Printed as a JSON string holding JSON: read as the arguments themselves.
    assert call.tool_arguments == {"search_query": "most cited retrieval-augmented generation papers 2023"}
    assert trace.steps[3].parent == 2
    assert "429 Client Error: Too Many Requests" in trace.steps[6].content
    assert trace.question.startswith("Find the three most cited papers on retrieval-augmented generation")
    assert all(s.agent is None for s in trace.steps if s.kind == "human")


def test_a_failure_panel_fails_the_run_with_a_system_step_of_the_acting_agent():
    text = PANELS.read_text()
    cut = text.index("╭", text.index("Reporting Analyst") - 400)
    failure = (
        "╭──────────────── Task Failure ────────────────╮\n"
        "│                                               │\n"
        "│  Task Failed                                  │\n"
        "│  Name: 1a2b3c4d-report                        │\n"
        "│  Agent: AI LLMs Reporting Analyst             │\n"
        "│                                               │\n"
        "╰───────────────────────────────────────────────╯\n"
    )
    (trace,) = CREWAI.parse(Source.from_bytes("failed.log", (text[:cut] + failure).encode()))
    assert trace.outcome == "failed"
    assert trace.metadata["outcome_cue"] == "Task Failure"
    last = trace.steps[-1]
    assert (last.kind, last.agent) == ("system", RESEARCHER)
    assert "Task Failed" in last.content


@pytest.mark.parametrize(
    "text",
    [
        "# Agent: only a heading\nno sections follow\n",
        "## Task: a section without an agent header\n",
        "╭── Some Other Panel ──╮\n│ text │\n╰──────╯\n",
    ],
)
def test_look_alikes_are_not_claimed(text):
    assert CREWAI.detect(Source.from_bytes("x.log", text.encode())) == 0.0


@pytest.mark.django_db
def test_a_captured_console_log_imports_through_the_upload_path(project):
    (job,) = import_now(project, incoming_path(PANELS, "crewai/verbose_panels.log"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "text-crewai"
    trace = Trace.objects.get(project=project)
    assert trace.step_count == 7
    result = Step.objects.get(trace=trace, index=3)
    assert (result.kind, result.agent.name, result.parent_index) == ("tool_result", RESEARCHER, 2)
