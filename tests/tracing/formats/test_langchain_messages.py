"""LangChain / LangGraph messages saved as JSON. The fixture is the ``messages`` state of a ``langgraph-supervisor``
run (the package's own FAANG-headcount example, each message as ``model_dump()`` writes it), in which the research
expert copies Google's headcount from its search result as 18,126 instead of 181,269."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.autogen_messages import FORMAT as AUTOGEN
from tracing.formats.langchain_messages import FORMAT as LANGCHAIN
from tracing.formats.openai_chat import FORMAT as OPENAI_CHAT
from tracing.models import JobStatus, Step, Trace

STATE = ROOT / "tests" / "fixtures" / "langgraph" / "supervisor_messages.json"
MESSAGES = json.loads(STATE.read_text())["messages"]


def _source(data: object, name: str = "run.json", lines: bool = False) -> Source:
    text = "\n".join(json.dumps(v) for v in data) + "\n" if lines else json.dumps(data, indent=2)
    return Source.from_bytes(name, text.encode())


def _parse(source: Source):
    assert detect_format(source).name == "langchain-messages"
    (trace,) = LANGCHAIN.parse(source)
    return trace


def _shape(trace) -> list[tuple]:
    return [(s.kind, s.agent, s.recipient, s.tool_name, s.parent) for s in trace.steps]


def test_a_supervisor_graphs_messages_become_agents_handoffs_calls_and_results():
    trace = _parse(Source.from_bytes(STATE.name, STATE.read_bytes()))
    shape = _shape(trace)
    assert shape[:10] == [
        ("human", "user", "", "", None),
        ("tool_call", "supervisor", "research_expert", "transfer_to_research_expert", None),
        ("tool_result", "supervisor", "", "transfer_to_research_expert", 1),
        ("tool_call", "research_expert", "", "web_search", None),
        ("tool_result", "research_expert", "", "web_search", 3),
        ("message", "research_expert", "", "", None),
        ("tool_call", "research_expert", "supervisor", "transfer_back_to_supervisor", None),
        ("tool_result", "research_expert", "", "transfer_back_to_supervisor", 6),
        ("tool_call", "supervisor", "math_expert", "transfer_to_math_expert", None),
        ("tool_result", "supervisor", "", "transfer_to_math_expert", 8),
    ]
    # Four parallel calls in one message, each result under its own call.
    assert shape[10:18] == [("tool_call", "math_expert", "", "add", None)] * 4 + [
        ("tool_result", "math_expert", "", "add", parent) for parent in (10, 11, 12, 13)
    ]
    assert shape[-1] == ("message", "supervisor", "", "", None)
    assert trace.steps[3].tool_arguments == {"query": "FAANG headcount 2024"}
    assert "Google 18,126" in trace.steps[5].content
    assert (trace.steps[5].input_tokens, trace.steps[5].output_tokens) == (402, 61)
    assert trace.steps[10].input_tokens == 512 and trace.steps[11].input_tokens is None
    assert [a.name for a in trace.agents] == ["user", "supervisor", "research_expert", "math_expert"]
    assert trace.question == "what's the combined headcount of the FAANG companies in 2024?"
    assert trace.outcome == "unknown"


def test_lists_json_lines_and_the_messages_to_dict_form_read_the_same():
    expected = _shape(_parse(_source({"messages": MESSAGES})))
    assert _shape(_parse(_source(MESSAGES))) == expected
    assert _shape(_parse(_source(MESSAGES, "run.jsonl", lines=True))) == expected
    as_dicts = [{"type": m["type"], "data": {k: v for k, v in m.items() if k != "type"}} for m in MESSAGES]
    assert _shape(_parse(_source(as_dicts))) == expected


def test_unnamed_ai_messages_are_the_assistants_and_errors_are_kept():
    messages = [
        {"type": "system", "content": "You are terse."},
        {"type": "human", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {
            "type": "ai",
            "content": "",
            "tool_calls": [{"name": "weather", "args": {"city": "Oslo"}, "id": "w1"}],
        },
        {"type": "tool", "content": "Error: 503", "name": "weather", "tool_call_id": "w1", "status": "error"},
        {"type": "ai", "content": "It is sunny."},
    ]
    trace = _parse(_source(messages))
    assert [(s.kind, s.agent) for s in trace.steps] == [
        ("system", None),
        ("human", "user"),
        ("tool_call", "assistant"),
        ("tool_result", "assistant"),
        ("message", "assistant"),
    ]
    assert trace.steps[1].content == "Weather in Oslo?"
    assert trace.steps[3].raw["is_error"] is True


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"messages": [MESSAGES[0], {"type": "ai"}]}, "message 1 is not a LangChain message"),
        ([MESSAGES[0], MESSAGES[1], {"role": "user", "content": "x"}], "message 2"),
    ],
)
def test_a_foreign_message_is_refused_by_its_position(document, reason):
    with pytest.raises(TraceFormatError, match=reason):
        list(LANGCHAIN.parse(_source(document)))


def test_detection_claims_langchain_messages_and_nothing_else():
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    files += [p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.suffix in (".json", ".jsonl")]
    for path in sorted(set(files)):
        source = Source.from_bytes(path.name, path.read_bytes())
        if path == STATE:
            assert (LANGCHAIN.detect(source), OPENAI_CHAT.detect(source), AUTOGEN.detect(source)) == (
                0.93,
                0,
                0,
            )
        else:
            assert LANGCHAIN.detect(source) == 0.0, path


@pytest.mark.django_db
def test_an_uploaded_state_imports_with_its_agents(project):
    (job,) = import_now(project, incoming_path(STATE))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "langchain-messages"
    trace = Trace.objects.get(project=project)
    assert trace.step_count == 22
    answer = Step.objects.get(trace=trace, index=5)
    assert (answer.kind, answer.agent.name) == ("message", "research_expert")
    result = Step.objects.get(trace=trace, index=14)
    assert (result.kind, result.agent.name, result.parent_index) == ("tool_result", "math_expert", 10)


@pytest.mark.django_db
def test_a_broken_message_list_fails_alone(project):
    bad = json.dumps([MESSAGES[0], MESSAGES[1], {"type": "ai"}]).encode()
    jobs = import_now(
        project, incoming_bytes("good.json", json.dumps(MESSAGES).encode()), incoming_bytes("bad.json", bad)
    )
    by_name = {j.filename: j for j in jobs}
    assert by_name["good.json"].status == JobStatus.SUCCEEDED
    assert "message 2 is not a LangChain message" in by_name["bad.json"].error
    assert list(Trace.objects.filter(project=project).values_list("name", flat=True)) == ["good"]
