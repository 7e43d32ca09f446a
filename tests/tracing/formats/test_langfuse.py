"""Langfuse trace exports from seven framework integrations, and the ChatML rendering that is not an export."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.langfuse import FORMAT as LANGFUSE
from tracing.models import Agent, JobStatus, Step, Trace

LANGFUSE_DIR = SHARED / "traces" / "langfuse" if SHARED.exists() else ROOT / "tests" / "fixtures" / "langfuse"
TRACE_FILES = sorted(LANGFUSE_DIR.glob("*.trace.json"))
CHATML = LANGFUSE_DIR / "crewai-2025-07-11.chatml.json"

# Facts read off the sample files: steps, agents in order of appearance, the start of the question.
EXPECTED = {
    "agno-2025-06-11": (7, ["Agent"], "What is currently trending on Twitter?"),
    "beeai-2025-08-01": (18, ["ReActAgent"], "I'm planning a trip to Barcelona, Spain."),
    "google-adk-2025-08-28": (6, ["hello_app", "hello_agent"], "hi"),
    "langgraph-python-2025-08-22": (10, ["LangGraph", "agent", "tools"], "Search the web for 'example'"),
    "microsoft-agent-2025-12-17": (
        5,
        ["171105b7-59dd-49c0-9677-0b95395aa46a"],
        "What's the weather in Tokyo?",
    ),
    "pydantic-ai-tools-2025-12-04": (
        11,
        ["run_joke_generator", "joke_agent", "evaluator_agent"],
        "Select and call THREE of the available tools",
    ),
}


def _stem(path: Path) -> str:
    return path.name.removesuffix(".trace.json")


def _source(path: Path) -> Source:
    return Source.from_bytes(path.name, path.read_bytes())


def _parse(path: Path):
    (trace,) = list(LANGFUSE.parse(_source(path)))
    return trace


def _file(stem: str) -> Path:
    return LANGFUSE_DIR / f"{stem}.trace.json"


def test_the_shared_langfuse_samples_are_all_here():
    if SHARED.exists():
        assert {_stem(p) for p in TRACE_FILES} == set(EXPECTED)
    assert CHATML.exists() and len(TRACE_FILES) >= 4


@pytest.mark.parametrize("path", TRACE_FILES, ids=_stem)
def test_every_langfuse_export_parses_into_one_trace_with_agents_steps_and_parent_links(path):
    document = json.loads(path.read_text())
    steps, agents, question = EXPECTED[_stem(path)]
    trace = _parse(path)
    assert trace.external_id == document["trace"]["id"]
    assert trace.name == _stem(path)
    assert len(trace.steps) == steps
    assert [a.name for a in trace.agents] == agents
    assert all(step.agent in agents for step in trace.steps)
    assert any(step.parent is not None for step in trace.steps)
    assert all(step.parent is None or step.parent < i for i, step in enumerate(trace.steps))
    assert {s.span_id for s in trace.steps} <= {o["id"] for o in document["observations"]}
    assert trace.question.startswith(question)


def test_google_adk_agents_come_from_bracketed_names_and_tools_hang_from_the_model_call():
    trace = _parse(_file("google-adk-2025-08-28"))
    assert trace.question == "hi"
    kinds = [(s.kind, s.agent, s.speaker) for s in trace.steps]
    assert kinds[:3] == [
        ("message", "hello_app", "invocation [hello_app]"),
        ("message", "hello_agent", "agent_run [hello_agent]"),
        ("llm_call", "hello_agent", "call_llm"),
    ]
    call = trace.steps[2]
    assert call.content == "-> say_hello({})" and (call.input_tokens, call.output_tokens) == (28, 3)
    tool = trace.steps[3]
    assert (tool.kind, tool.tool_name, tool.parent) == ("tool_call", "say_hello", 2)
    assert trace.steps[-1].content == "Hello Langfuse 👋!"
    assert trace.metadata["scores"][0]["name"] == "toxicity"


def test_langgraph_nodes_are_the_agents_and_a_langchain_tool_span_is_a_tool_call():
    trace = _parse(_file("langgraph-python-2025-08-22"))
    assert trace.question == "Search the web for 'example' and summarize."
    tool = next(s for s in trace.steps if s.kind == "tool_call")
    assert (tool.agent, tool.tool_name, tool.tool_arguments) == ("tools", "Web-Search", {"query": "example"})
    first_call = next(s for s in trace.steps if s.kind == "llm_call")
    assert first_call.agent == "agent" and first_call.content == '-> Web-Search({"query": "example"})'
    assert trace.steps[-1].speaker == "should_continue" and trace.steps[-1].content == "end"


def test_microsoft_agent_framework_names_its_agent_by_id_and_keeps_the_system_prompt():
    trace = _parse(_file("microsoft-agent-2025-12-17"))
    (agent,) = trace.agents
    assert agent.name == "171105b7-59dd-49c0-9677-0b95395aa46a"
    assert trace.question == "What's the weather in Tokyo?"
    result = next(s for s in trace.steps if s.kind == "tool_result")
    assert result.content.startswith("The weather in Tokyo, Japan is stormy")
    assert trace.steps[-1].content == "Current conditions in Tokyo, Japan: stormy, high around 23°C."


def test_pydantic_ai_agents_come_from_their_attributes_and_keep_their_prompts():
    trace = _parse(_file("pydantic-ai-tools-2025-12-04"))
    prompts = {a.name: a.system_prompt for a in trace.agents}
    assert prompts["joke_agent"].startswith("You are a creative joke writer")
    assert prompts["evaluator_agent"].startswith("You are a joke critic")
    tools = [s.tool_name for s in trace.steps if s.kind == "tool_call"]
    assert sorted(tools) == ["get_dad_joke_suggestion", "get_one_liner_suggestion", "get_pun_suggestion"]


def test_streaming_repeats_and_empty_events_become_no_steps():
    # BeeAI-style: one agent state repeated by successive update events, and a finish event with nothing in it.
    observations = [
        {
            "id": "root",
            "type": "AGENT",
            "name": "planner",
            "startTime": "2025-01-01T00:00:00Z",
            "input": "plan a trip",
        },
        {
            "id": "u1",
            "type": "SPAN",
            "name": "update-1",
            "parentObservationId": "root",
            "startTime": "2025-01-01T00:00:01Z",
            "metadata": json.dumps({"attributes": {"thought": "I will search"}}),
        },
        {
            "id": "u2",
            "type": "SPAN",
            "name": "update-2",
            "parentObservationId": "root",
            "startTime": "2025-01-01T00:00:02Z",
            "metadata": json.dumps({"attributes": {"thought": "I will search"}}),
        },
        {
            "id": "f1",
            "type": "GENERATION",
            "name": "finish",
            "parentObservationId": "root",
            "startTime": "2025-01-01T00:00:03Z",
        },
    ]
    document = {"trace": {"id": "t1", "name": "trip", "input": "plan a trip"}, "observations": observations}
    (trace,) = list(LANGFUSE.parse(Source.from_bytes("trip.json", json.dumps(document).encode())))
    assert [(s.span_id, s.agent, s.content) for s in trace.steps] == [
        ("root", "planner", "plan a trip"),
        ("u1", "planner", "I will search"),
    ]
    assert trace.steps[1].parent == 0


def test_an_error_observation_keeps_its_status_message_and_fails_a_root():
    document = json.loads(_file("microsoft-agent-2025-12-17").read_text())
    root = next(o for o in document["observations"] if not o["parentObservationId"])
    tool = next(o for o in document["observations"] if o["type"] == "TOOL")
    root["level"] = tool["level"] = "ERROR"
    tool["statusMessage"] = "TimeoutError: weather service"
    (trace,) = list(LANGFUSE.parse(Source.from_bytes("x.json", json.dumps(document).encode())))
    assert trace.outcome == "failed"
    result = next(s for s in trace.steps if s.kind == "tool_result")
    assert result.content.endswith("ERROR: TimeoutError: weather service")


def test_a_list_of_exports_and_the_api_trace_shape_give_one_trace_each():
    document = json.loads(_file("google-adk-2025-08-28").read_text())
    api_shape = {**copy.deepcopy(document["trace"]), "id": "second", "observations": document["observations"]}
    source = Source.from_bytes("two.json", json.dumps([document, api_shape]).encode())
    assert LANGFUSE.detect(source) >= 0.8
    traces = list(LANGFUSE.parse(source))
    assert [t.external_id for t in traces] == [document["trace"]["id"], "second"]
    assert [len(t.steps) for t in traces] == [6, 6]


def test_the_chatml_rendering_goes_to_its_own_format_and_the_trace_parser_refuses_it():
    source = _source(CHATML)
    assert detect_format(source).name == "langfuse-chatml"
    with pytest.raises(TraceFormatError, match="ChatML rendering of 3 observation"):
        list(LANGFUSE.parse(source))


def _malformed() -> list[object]:
    base = json.loads(_file("google-adk-2025-08-28").read_text())
    no_id = copy.deepcopy(base)
    del no_id["observations"][0]["id"]
    not_an_object = copy.deepcopy(base)
    not_an_object["observations"].append(["x"])
    empty = copy.deepcopy(base)
    empty["observations"] = []
    blank = copy.deepcopy(base)
    blank["observations"] = [{"id": "a", "type": "SPAN", "name": "nothing"}]
    ids_only = {"data": [{"id": "t", "name": "x", "observations": ["a", "b"]}]}
    return [
        {},
        [],
        ids_only,
        {"trace": "x", "observations": []},
        {"trace": {"id": "t"}, "observations": "no"},
        no_id,
        not_an_object,
        empty,
        blank,
        [base, "x"],
    ]


@pytest.mark.parametrize("document", _malformed(), ids=lambda d: str(d)[:40])
def test_malformed_langfuse_exports_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(LANGFUSE.parse(Source.from_bytes("x.json", json.dumps(document).encode())))


def test_odd_values_inside_observations_are_tolerated():
    document = json.loads(_file("google-adk-2025-08-28").read_text())
    for observation in document["observations"]:
        observation.update(metadata="{not json", usageDetails=["x"], startTime="yesterday", level=None)
    (trace,) = list(LANGFUSE.parse(Source.from_bytes("x.json", json.dumps(document).encode())))
    assert len(trace.steps) == 6


def _all_sample_files() -> list[Path]:
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))


def test_only_langfuse_files_score_high_with_the_langfuse_detector():
    for path in _all_sample_files():
        source = Source.from_bytes(path.name, path.read_bytes())
        score = LANGFUSE.detect(source)
        if "langfuse" in path.parts and path.name.endswith(".trace.json"):
            assert score >= 0.8 and detect_format(source).name == "langfuse", path
        elif "langfuse" not in path.parts:
            assert score <= 0.3, path


@pytest.mark.django_db
@pytest.mark.parametrize("path", TRACE_FILES, ids=_stem)
def test_every_langfuse_export_imports_with_its_agents_and_step_tree(project, path):
    steps, agents, _ = EXPECTED[_stem(path)]
    (job,) = import_now(project, incoming_path(path))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "langfuse"
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert trace.step_count == steps
    assert sorted(Agent.objects.filter(trace=trace).values_list("name", flat=True)) == sorted(agents)
    assert Step.objects.filter(trace=trace, parent_index__isnull=False).exists()
    assert not Step.objects.filter(trace=trace, agent__isnull=True).exists()


@pytest.mark.django_db
def test_the_chatml_rendering_imports_as_chat_with_its_unrenderable_parts_visible(project):
    (job,) = import_now(project, incoming_path(CHATML))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "langfuse-chatml"
    steps = list(Step.objects.filter(trace_id=job.trace_ids[0]).order_by("index").select_related("agent"))
    assert [s.kind for s in steps] == ["system", "human", "system", "llm_call", "system", "system"]
    assert steps[0].agent.name == "Software developer"
    assert "<!DOCTYPE html>" in steps[3].content
    assert "could not render this output" in steps[2].content
    assert Trace.objects.get(pk=job.trace_ids[0]).question.startswith("Current Task: Define the HTML")
