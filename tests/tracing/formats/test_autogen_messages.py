"""AutoGen AgentChat messages saved as JSON: a TaskResult, a message list, JSON Lines from ``run_stream()`` and a
saved team state. The fixture is a TaskResult in the shape ``TaskResult.model_dump_json()`` writes (AutoGen 0.5+:
``created_at`` on every message), of a Swarm run whose weather agent invents a forecast after its tool failed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.autogen_messages import FORMAT as AUTOGEN
from tracing.formats.openai_chat import FORMAT as OPENAI_CHAT
from tracing.models import JobStatus, Step, Trace

RESULT = ROOT / "tests" / "fixtures" / "autogen" / "travel_task_result.json"
DOCUMENT = json.loads(RESULT.read_text())
MESSAGES = DOCUMENT["messages"]


def _source(data: object, name: str = "run.json", lines: bool = False) -> Source:
    if lines:
        text = "\n".join(json.dumps(v) for v in data) + "\n"
    else:
        text = json.dumps(data, indent=2)
    return Source.from_bytes(name, text.encode())


def _parse(source: Source):
    assert detect_format(source).name == "autogen-messages"
    (trace,) = AUTOGEN.parse(source)
    return trace


def _shape(trace) -> list[tuple]:
    return [(s.kind, s.agent, s.recipient, s.tool_name, s.parent) for s in trace.steps]


def test_a_task_result_becomes_one_trace_with_calls_results_handoffs_and_thoughts():
    trace = _parse(Source.from_bytes(RESULT.name, RESULT.read_bytes()))
    assert trace.name == "travel_task_result"
    assert _shape(trace) == [
        ("human", "user", "", "", None),
        ("thought", "planner_agent", "", "", None),
        ("message", "planner_agent", "weather_agent", "", None),
        ("tool_call", "weather_agent", "", "get_forecast", None),
        ("tool_result", "weather_agent", "", "get_forecast", 3),
        ("message", "weather_agent", "", "", None),
        ("message", "weather_agent", "planner_agent", "", None),
        ("message", "planner_agent", "", "", None),
    ]
    call, result = trace.steps[3], trace.steps[4]
    assert call.tool_arguments == {"city": "Lisbon", "days": 2}
    assert call.content == 'get_forecast({"city": "Lisbon", "days": 2})'
    assert result.content == "Error: forecast service timed out after 5 s"
    assert result.raw["is_error"] is True
    # The streamed chunk ("Lis") is left out: the whole message follows it.
    assert all(s.content != "Lis" for s in trace.steps)
    assert (call.input_tokens, call.output_tokens) == (233, 21)
    assert trace.steps[0].started_at == datetime(2025, 5, 12, 9, 14, 2, 118204, tzinfo=UTC)
    assert trace.question == "Plan a 2-day trip to Lisbon for next weekend and tell me the forecast."
    assert [a.name for a in trace.agents] == ["user", "planner_agent", "weather_agent"]
    assert trace.metadata["stop_reason"] == "Text 'TERMINATE' mentioned"
    assert (
        trace.outcome == "succeeded"
    )  # the run ended as it was told to; whether its answer was right is not said


def test_a_message_list_and_streamed_json_lines_read_as_the_task_result_does():
    expected = _shape(_parse(_source(DOCUMENT)))
    assert _shape(_parse(_source(MESSAGES))) == expected
    assert _shape(_parse(_source(MESSAGES, "stream.jsonl", lines=True))) == expected
    # run_stream() yields the TaskResult last: it is the whole run, and its stop reason comes with it.
    streamed = _parse(_source([*MESSAGES[:3], DOCUMENT], "stream.jsonl", lines=True))
    assert _shape(streamed) == expected
    assert streamed.metadata["stop_reason"] == DOCUMENT["stop_reason"]


def test_a_saved_team_state_reads_the_group_chat_managers_thread():
    state = {
        "type": "TeamState",
        "version": "1.0.0",
        "agent_states": {
            "planner_agent": {
                "type": "ChatAgentContainerState",
                "agent_state": {"llm_context": {"messages": []}},
            },
            "SwarmGroupChatManager": {
                "type": "SwarmManagerState",
                "message_thread": MESSAGES,
                "current_turn": 8,
                "current_speaker": "planner_agent",
            },
        },
    }
    trace = _parse(_source(state, "team_state.json"))
    assert _shape(trace) == _shape(_parse(_source(DOCUMENT)))


def test_multimodal_and_structured_contents_become_text():
    messages = [
        {
            "source": "user",
            "type": "MultiModalMessage",
            "content": ["Describe this chart.", {"data": "iVBORw0KGgo="}],
        },
        {"source": "analyst", "type": "StructuredMessage", "content": {"trend": "up", "confidence": 0.7}},
        {"source": "analyst", "type": "StopMessage", "content": "Maximum number of turns 2 reached."},
    ]
    trace = _parse(_source(messages))
    assert [s.content for s in trace.steps[:2]] == [
        "Describe this chart.\n[image]",
        json.dumps({"trend": "up", "confidence": 0.7}, ensure_ascii=False, indent=2),
    ]
    assert [s.kind for s in trace.steps] == ["human", "message", "system"]
    assert trace.outcome == "failed"  # a turn limit reached is a failure notice


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (
            {"messages": [MESSAGES[0], {"source": "x"}], "stop_reason": None},
            "message 1 is not an AutoGen message",
        ),
        ([MESSAGES[0], MESSAGES[1], 7], "message 2"),
    ],
)
def test_a_file_with_a_foreign_message_is_refused_naming_it(document, reason):
    with pytest.raises(TraceFormatError, match=reason):
        list(AUTOGEN.parse(_source(document)))


def test_detection_claims_only_autogen_messages():
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")]
    files += [p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.suffix in (".json", ".jsonl")]
    for path in sorted(set(files)):
        source = Source.from_bytes(path.name, path.read_bytes())
        if path == RESULT:
            assert AUTOGEN.detect(source) == 0.95
            assert OPENAI_CHAT.detect(source) == 0.0
        else:
            assert AUTOGEN.detect(source) == 0.0, path
    # OpenAI-shaped chats have roles, not sources and types.
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert AUTOGEN.detect(_source(chat)) == 0.0


@pytest.mark.django_db
def test_an_uploaded_task_result_imports_with_its_tool_result_under_its_call(project):
    (job,) = import_now(project, incoming_path(RESULT))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "autogen-messages"
    trace = Trace.objects.get(project=project)
    assert (trace.step_count, trace.outcome) == (8, "succeeded")
    result = Step.objects.get(trace=trace, index=4)
    assert (result.kind, result.agent.name, result.parent_index) == ("tool_result", "weather_agent", 3)
    assert Step.objects.get(trace=trace, index=3).tool_arguments == {"city": "Lisbon", "days": 2}


@pytest.mark.django_db
def test_a_broken_message_list_fails_alone(project):
    good = json.dumps(MESSAGES).encode()
    bad = json.dumps([MESSAGES[0], MESSAGES[1], {"source": "a", "type": "TextMessage"}]).encode()
    jobs = import_now(project, incoming_bytes("good.json", good), incoming_bytes("bad.json", bad))
    by_name = {j.filename: j for j in jobs}
    assert by_name["good.json"].status == JobStatus.SUCCEEDED
    assert by_name["bad.json"].status == JobStatus.FAILED
    assert "message 2 is not an AutoGen message" in by_name["bad.json"].error
    assert list(Trace.objects.filter(project=project).values_list("name", flat=True)) == ["good"]
