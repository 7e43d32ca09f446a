from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.openai_chat import FORMAT
from tracing.models import Agent, JobStatus, Step, Trace

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# A triage -> billing hand-off in the OpenAI Chat Completions message shape (written for these tests).
CHAT = FIXTURES / "openai_chat" / "refund_handoff.json"


def document() -> dict:
    return json.loads(CHAT.read_text())


def parse_bytes(data: bytes, name: str = "chat.json") -> list:
    return list(FORMAT.parse(Source.from_bytes(name, data)))


def parse_doc(value, name: str = "chat.json") -> list:
    return parse_bytes(json.dumps(value).encode(), name)


def jsonl(values: list) -> bytes:
    return ("\n".join(json.dumps(v) for v in values) + "\n").encode()


def test_the_sample_conversation_gives_one_step_per_message_and_tool_call():
    (trace,) = parse_bytes(CHAT.read_bytes(), CHAT.name)
    assert [(s.kind, s.agent) for s in trace.steps] == [
        ("system", "system"),
        ("human", "user"),
        ("message", "Triage"),
        ("tool_call", "Triage"),
        ("tool_result", "Triage"),
        ("tool_call", "Triage"),
        ("tool_result", "Triage"),
        ("message", "Billing"),
        ("tool_call", "Billing"),
        ("tool_call", "Billing"),
        ("tool_result", "Billing"),
        ("tool_result", "Billing"),
        ("human", "user"),
        ("message", "Billing"),
    ]
    assert trace.external_id == "conv_7f3a9c21"
    assert trace.outcome == "failed"
    assert trace.question == "My order #A-1042 arrived broken. I want my money back."
    assert trace.metadata["framework"] == "openai-agents" and trace.metadata["message_count"] == 11


def test_tool_results_belong_to_the_caller_and_hang_from_their_call():
    (trace,) = parse_bytes(CHAT.read_bytes())
    steps = trace.steps
    assert (steps[3].tool_name, steps[3].tool_arguments, steps[3].parent) == (
        "get_order",
        {"order_id": "A-1042"},
        2,
    )
    assert (steps[4].tool_name, steps[4].parent, steps[4].speaker) == ("get_order", 3, "tool")
    # Two calls in one message, answered in order: each result finds its own call by tool_call_id.
    assert (steps[10].tool_name, steps[10].parent) == ("issue_refund", 8)
    assert (steps[11].tool_name, steps[11].parent) == ("send_email", 9)
    assert steps[10].content.startswith("Error: order A-1042 was paid with a gift card")
    assert steps[5].parent is None  # a message with only a tool call has no text step to hang from


def test_broken_json_arguments_are_kept_as_written():
    (trace,) = parse_bytes(CHAT.read_bytes())
    assert trace.steps[9].tool_arguments == '{"to": "customer", "template": "refund_issued"'
    assert trace.steps[9].content == '{"to": "customer", "template": "refund_issued"'


def test_the_system_prompt_goes_to_the_next_assistant_and_content_parts_become_text():
    (trace,) = parse_bytes(CHAT.read_bytes())
    prompts = {a.name: a.system_prompt for a in trace.agents}
    assert (
        prompts["Triage"]
        == "You are Triage. Route billing questions to Billing. Never promise refunds yourself."
    )
    assert prompts["Billing"] == ""
    assert trace.steps[7].content == "I can refund the 89.90 to your credit card right away."
    assert trace.steps[12].content.endswith("[image: https://example.com/screenshot.png]")


def test_a_bare_list_and_message_per_line_json_lines_read_the_same():
    (expected,) = parse_bytes(CHAT.read_bytes())
    messages = document()["messages"]
    for name, data in [("list.json", json.dumps(messages).encode()), ("messages.jsonl", jsonl(messages))]:
        source = Source.from_bytes(name, data)
        assert FORMAT.detect(source) >= 0.8, name
        (trace,) = FORMAT.parse(source)
        assert [(s.kind, s.agent, s.parent, s.content) for s in trace.steps] == [
            (s.kind, s.agent, s.parent, s.content) for s in expected.steps
        ], name
        assert trace.name == Path(name).stem


def test_one_conversation_per_line_gives_one_trace_per_line():
    first = document()
    second = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    for name, data in [
        ("batch.jsonl", jsonl([first, second])),
        ("batch.json", json.dumps([first, second]).encode()),
    ]:
        source = Source.from_bytes(name, data)
        assert FORMAT.detect(source) >= 0.8
        traces = list(FORMAT.parse(source))
        assert [t.name for t in traces] == ["conv_7f3a9c21", "batch/2"]
        assert [len(t.steps) for t in traces] == [14, 2]


def test_names_on_user_messages_are_agents_not_humans_and_legacy_function_calls_are_read():
    messages = [
        {"role": "system", "content": "You are Coder."},
        {"role": "user", "name": "Planner", "content": "Write the parser."},
        {
            "role": "assistant",
            "name": "Coder",
            "content": "",
            "function_call": {"name": "run", "arguments": "{}"},
        },
        {"role": "function", "name": "run", "content": "exit 1"},
        {
            "role": "assistant",
            "content": "Done.",
            "reasoning_content": "The test failed but I will say done.",
        },
    ]
    (trace,) = parse_doc(messages)
    assert [(s.kind, s.agent) for s in trace.steps] == [
        ("system", "system"),
        ("message", "Planner"),
        ("tool_call", "Coder"),
        ("tool_result", "Coder"),
        ("thought", "assistant"),
        ("message", "assistant"),
    ]
    assert trace.steps[3].parent == 2 and trace.steps[3].tool_name == "run"
    assert {a.name: a.system_prompt for a in trace.agents}["Coder"] == "You are Coder."


def test_a_system_prompt_no_assistant_answers_stays_with_its_speaker():
    (trace,) = parse_doc([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert {a.name: a.system_prompt for a in trace.agents} == {"system": "Be brief.", "user": ""}


@pytest.mark.parametrize(
    "value",
    [
        [],
        {"messages": []},
        {"messages": "hello"},
        [{"role": "user", "content": "ok"}, "not a message"],
        [{"content": "no role"}],
        [{"role": 5, "content": "role is a number"}],
        [{"role": "assistant", "content": None, "tool_calls": ["not a call"]}],
        [{"role": "assistant", "content": {"odd": "object"}, "tool_calls": [{"function": None}]}],
        [{"role": "tool", "content": "result without any call"}],
        {"history": [{"role": "user", "content": "Who&When"}]},
        "text",
        7,
    ],
)
def test_malformed_conversations_raise_a_format_error_or_import(value):
    try:
        traces = parse_doc(value)
    except TraceFormatError as exc:
        assert str(exc)
    else:
        assert all(trace.steps and all(s.agent for s in trace.steps) for trace in traces)


def test_mixed_json_lines_are_refused():
    with pytest.raises(TraceFormatError, match="not a mix"):
        parse_bytes(jsonl([{"messages": []}, {"role": "user", "content": "x"}]), "mixed.jsonl")


def test_speaker_name_roles_score_low_and_chat_roles_high():
    magentic = [{"role": "human", "content": "q"}, {"role": "Orchestrator (thought)", "content": "plan"}]
    assert FORMAT.detect(Source.from_bytes("m.json", json.dumps(magentic).encode())) <= 0.4
    assert FORMAT.detect(Source.from_bytes("w.json", json.dumps({"history": magentic}).encode())) == 0.0
    chat = [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"}]
    assert FORMAT.detect(Source.from_bytes("c.json", json.dumps(chat).encode())) >= 0.8


def _other_files() -> list[Path]:
    shared = [p for p in SHARED.rglob("*") if p.is_file()] if SHARED.exists() else []
    others = [p for p in FIXTURES.rglob("*") if p.is_file() and p.parent.name != "openai_chat"]
    return sorted(shared + others)


def test_detection_claims_chat_files_and_nothing_else():
    assert detect_format(Source.from_bytes(CHAT.name, CHAT.read_bytes())).name == "openai-chat"
    claimed = [p for p in _other_files() if FORMAT.detect(Source.from_bytes(p.name, p.read_bytes())) > 0.3]
    assert claimed == []


@pytest.mark.django_db
def test_a_chat_file_imports_end_to_end(project):
    (job,) = import_now(project, incoming_path(CHAT))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "openai-chat"
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert (trace.step_count, trace.external_id, trace.outcome) == (14, "conv_7f3a9c21", "failed")
    assert Agent.objects.get(trace=trace, name="Triage").system_prompt.startswith("You are Triage.")
    result = Step.objects.get(trace=trace, index=10)
    assert (result.kind, result.agent.name, result.parent_index) == ("tool_result", "Billing", 8)


@pytest.mark.django_db
def test_a_chat_jsonl_batch_imports_one_trace_per_line(project):
    second = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    (job,) = import_now(project, incoming_bytes("batch.jsonl", jsonl([document(), second])))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "openai-chat"
    assert len(job.trace_ids) == 2
