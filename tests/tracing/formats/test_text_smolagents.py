"""smolagents console output. ``smolagents/managed_web_agent.log`` is rendered with Rich exactly as smolagents'
``AgentLogger`` prints (the same ``Panel``, ``Rule`` and ``Text`` calls of ``monitoring.py`` and ``agents.py``, at a
width of 100 columns): a manager CodeAgent delegating to a managed ToolCallingAgent, whose wrong founding year the
manager then computes with."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_path
from tracing.formats import Source, detect_format
from tracing.formats.text_smolagents import FORMAT as SMOL
from tracing.models import JobStatus, Step, Trace

LOG = ROOT / "tests" / "fixtures" / "smolagents" / "managed_web_agent.log"
MAIN = "main agent"

# An older release's rendering (code in a rounded panel with line numbers), as smolagents' own guide shows it.
OLD = """╭──────────────────────────────────── New run ─────────────────────────────────────╮
│                                                                                  │
│ Which text-to-video model is the most downloaded on the Hub?                     │
│                                                                                  │
╰─ HfApiModel - Qwen/Qwen2.5-Coder-32B-Instruct ───────────────────────────────────╯
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ Step 0 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━
╭─ Executing this code: ───────────────────────────────────────────────────────────╮
│   1 model_name = model_download_tool(task="text-to-video")                        │
│   2 print(model_name)                                                             │
╰──────────────────────────────────────────────────────────────────────────────────╯
Execution logs:
ByteDance/AnimateDiff-Lightning

Out: None
[Step 0: Duration 0.27 seconds| Input tokens: 2,069 | Output tokens: 60]
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ Step 1 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━
╭─ Executing this code: ───────────────────────────────────────────────────────────╮
│   1 final_answer("ByteDance/AnimateDiff-Lightning")                               │
╰──────────────────────────────────────────────────────────────────────────────────╯
Out - Final answer: ByteDance/AnimateDiff-Lightning
[Step 1: Duration 0.10 seconds| Input tokens: 4,288 | Output tokens: 148]
"""


def _parse(text_or_path):
    data = text_or_path.read_bytes() if hasattr(text_or_path, "read_bytes") else text_or_path.encode()
    source = Source.from_bytes("run.log", data)
    assert detect_format(source).name == "text-smolagents"
    (trace,) = SMOL.parse(source)
    return trace


def test_a_managed_agents_run_nests_in_its_managers_step():
    trace = _parse(LOG)
    assert [(s.kind, s.agent, s.recipient, s.tool_name, s.parent) for s in trace.steps] == [
        ("human", None, MAIN, "", None),
        ("tool_call", MAIN, "", "python_interpreter", None),
        ("message", MAIN, "web_agent", "", None),
        ("tool_call", "web_agent", "", "web_search", None),
        ("tool_result", "web_agent", "", "web_search", 3),
        ("message", "web_agent", "", "", None),
        ("tool_result", MAIN, "", "python_interpreter", 1),
        ("tool_call", MAIN, "", "python_interpreter", None),
        ("message", MAIN, "", "", 7),
    ]
    code, delegation, search, found, answer, output = (trace.steps[i] for i in (1, 2, 3, 4, 5, 6))
    assert code.content.startswith('tutor = web_agent(task="Who tutored Ada Lovelace')
    assert code.tool_arguments == {"code": code.content}
    assert delegation.content.startswith("You're a helpful agent named 'web_agent'.")
    assert search.tool_arguments == {"query": "Ada Lovelace mathematics tutor university"}
    assert found.content.startswith("## Search Results\n[Augustus De Morgan - Wikipedia]")
    # The console wrapped the answer at its width; the words are all there, in order.
    assert " ".join(answer.content.split()).endswith(
        "at the University of London (King's College), founded 1829."
    )
    assert output.content.startswith("Here is the final answer from your managed agent 'web_agent':")
    assert output.content.endswith("Out: None")
    assert trace.steps[-1].content == "8"
    # The footers print each agent's running totals; every step gets its own share.
    assert [(s.input_tokens, s.output_tokens) for s in (code, search, answer, trace.steps[7])] == [
        (2210, 96),
        (1121, 31),
        (1277, 46),
        (2420, 75),
    ]
    assert trace.question.startswith("How many years passed between the founding of the university")
    assert [a.name for a in trace.agents] == [MAIN, "web_agent"]
    assert trace.metadata["models"] == ["LiteLLMModel - gpt-4o"]
    assert trace.outcome == "unknown"


def test_an_older_release_with_numbered_code_panels():
    trace = _parse(OLD)
    assert [(s.kind, s.parent) for s in trace.steps] == [
        ("human", None),
        ("tool_call", None),
        ("tool_result", 1),
        ("tool_call", None),
        ("message", 3),
    ]
    assert (
        trace.steps[1].content == 'model_name = model_download_tool(task="text-to-video")\nprint(model_name)'
    )
    assert trace.steps[2].content == "ByteDance/AnimateDiff-Lightning\nOut: None"
    assert trace.steps[-1].content == "ByteDance/AnimateDiff-Lightning"
    assert (trace.steps[3].input_tokens, trace.steps[3].output_tokens) == (4288 - 2069, 148 - 60)


def test_errors_plans_and_the_step_limit():
    text = OLD.replace(
        "Execution logs:\nByteDance/AnimateDiff-Lightning\n\nOut: None\n",
        "Code execution failed at line 'model_name = model_download_tool(task=\"text-to-video\")' due to: "
        "HTTPError: 429 Too Many Requests\n",
    )
    text = text.replace("━━━ Step 0 ━━━", "━━━ Step 0 ━━━", 1)
    plan = "──────────────────── Initial plan ────────────────────\n1. Ask the Hub.\n2. Answer.\n"
    text = text.replace(
        "━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ Step 0",
        plan + "━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ Step 0",
        1,
    )
    cut = text.index("━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ Step 1")
    trace = _parse(text[:cut] + "Reached max steps.\n")
    kinds = [(s.kind, s.agent) for s in trace.steps]
    assert kinds == [
        ("human", None),
        ("thought", MAIN),
        ("tool_call", MAIN),
        ("system", MAIN),
        ("system", MAIN),
    ]
    assert trace.steps[1].content == "1. Ask the Hub.\n2. Answer."
    assert "HTTPError: 429 Too Many Requests" in trace.steps[3].content
    assert trace.outcome == "failed"
    assert trace.metadata["outcome_cue"] == "Reached max steps."


@pytest.mark.parametrize(
    "text",
    [
        "━━━━━━━━━━ Step 1 ━━━━━━━━━━\nno footer, no run\n",
        "╭──── New run ────╮\n│ a task │\n╰─────────────────╯\nnothing else\n",
    ],
)
def test_look_alikes_are_not_claimed(text):
    assert SMOL.detect(Source.from_bytes("x.log", text.encode())) == 0.0


def test_no_other_log_or_sample_is_claimed():
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".log", ".txt")]
    files += [p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.suffix in (".log", ".txt")]
    for path in sorted(set(files)):
        if path != LOG:
            assert SMOL.detect(Source.from_bytes(path.name, path.read_bytes())) == 0.0, path


@pytest.mark.django_db
def test_a_console_log_imports_with_its_nesting(project):
    (job,) = import_now(project, incoming_path(LOG, "smolagents/managed_web_agent.log"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "text-smolagents"
    trace = Trace.objects.get(project=project)
    assert trace.step_count == 9
    found = Step.objects.get(trace=trace, index=4)
    assert (found.kind, found.agent.name, found.parent_index) == ("tool_result", "web_agent", 3)
