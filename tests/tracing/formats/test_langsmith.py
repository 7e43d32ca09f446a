"""LangSmith runs: the SDK's {post, patch} ingest payload and plain run lists."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.langsmith import FORMAT as LANGSMITH
from tracing.models import Agent, JobStatus, Step, Trace

LANGSMITH_DIR = (
    SHARED / "traces" / "langsmith" if SHARED.exists() else ROOT / "tests" / "fixtures" / "langsmith"
)
PAYLOAD = LANGSMITH_DIR / "langsmith_js_wrap_openai_default.json"
RUN_ID = "dc34609e-3eeb-459d-bc2a-6fedb01d2e6e"


def _source(document: object, name: str = "runs.json") -> Source:
    return Source.from_bytes(name, json.dumps(document).encode())


def _run(
    run_id: str, name: str, run_type: str, trace_id: str, parent: str | None, second: int, **extra
) -> dict:
    return {
        "id": run_id,
        "name": name,
        "run_type": run_type,
        "trace_id": trace_id,
        "parent_run_id": parent,
        "start_time": f"2024-10-13T07:05:{second:02d}.000000",
        "end_time": f"2024-10-13T07:05:{second:02d}.500000",
        **extra,
    }


def _agent_runs() -> list[dict]:
    """Two traces of a LangGraph-style run list: a graph with two nodes, and a failed one-run trace."""
    return [
        _run(
            "g",
            "LangGraph",
            "chain",
            "t1",
            None,
            1,
            inputs={"messages": [{"role": "user", "content": "2+2?"}]},
            outputs={"messages": [{"role": "assistant", "content": "5"}]},
        ),
        _run(
            "n1",
            "researcher",
            "chain",
            "t1",
            "g",
            2,
            inputs={"messages": []},
            outputs={"messages": []},
            extra={"metadata": {"langgraph_node": "researcher"}},
        ),
        _run(
            "m1",
            "ChatOpenAI",
            "llm",
            "t1",
            "n1",
            3,
            inputs={
                "messages": [
                    {"role": "system", "content": "You research."},
                    {"role": "user", "content": "2+2?"},
                ]
            },
            outputs={
                "generations": [
                    [
                        {
                            "text": "",
                            "message": {
                                "content": "",
                                "additional_kwargs": {
                                    "tool_calls": [
                                        {"function": {"name": "calc", "arguments": '{"expr": "2+2"}'}}
                                    ]
                                },
                            },
                        }
                    ]
                ],
                "llm_output": {"token_usage": {"prompt_tokens": 12, "completion_tokens": 4}},
            },
            extra={"metadata": {"langgraph_node": "researcher"}},
        ),
        _run(
            "c1", "calc", "tool", "t1", "m1", 4, inputs={"input": '{"expr": "2+2"}'}, outputs={"output": "5"}
        ),
        _run(
            "w1",
            "writer",
            "chain",
            "t1",
            "g",
            5,
            inputs={"messages": []},
            outputs={"messages": [{"role": "assistant", "content": "The answer is 5."}]},
            extra={"metadata": {"langgraph_node": "writer"}},
        ),
        _run(
            "x",
            "broken",
            "chain",
            "t2",
            None,
            6,
            inputs={"question": "why?"},
            outputs=None,
            error="ValueError: no",
        ),
    ]


def test_the_ingest_payload_gives_one_trace_with_the_patch_merged_in():
    source = Source.from_bytes(PAYLOAD.name, PAYLOAD.read_bytes())
    assert detect_format(source).name == "langsmith"
    (trace,) = list(LANGSMITH.parse(source))
    assert (trace.external_id, trace.name, trace.question) == (
        RUN_ID,
        "langsmith_js_wrap_openai_default",
        "howdy",
    )
    (step,) = trace.steps
    assert (step.kind, step.agent, step.speaker, step.span_id) == (
        "llm_call",
        "ChatOpenAI",
        "ChatOpenAI",
        RUN_ID,
    )
    assert step.content == "Howdy! How can I assist you today?"  # from the patch's outputs
    assert (step.input_tokens, step.output_tokens) == (9, 9)
    assert step.started_at.isoformat() == "2024-10-13T07:05:37.170000+00:00"
    assert step.ended_at.isoformat() == "2024-10-13T07:05:38.285000+00:00"  # from the patch's end_time
    assert [a.name for a in trace.agents] == ["ChatOpenAI"]
    assert trace.metadata["models"] == ["gpt-4o-mini"] and trace.metadata["sdk"] == "langsmith-js 0.1.65"


def test_a_run_list_with_two_trace_ids_gives_two_traces_with_agents_and_parent_links():
    traces = list(LANGSMITH.parse(_source(_agent_runs())))
    assert [t.external_id for t in traces] == ["t1", "t2"]
    graph, broken = traces
    assert [a.name for a in graph.agents] == ["LangGraph", "researcher", "writer"]
    assert [(s.kind, s.agent, s.parent) for s in graph.steps] == [
        ("message", "LangGraph", None),
        ("message", "researcher", 0),
        ("llm_call", "researcher", 1),
        ("tool_call", "researcher", 2),
        ("tool_result", "researcher", 3),
        ("message", "writer", 0),
    ]
    call = graph.steps[2]
    assert call.content == '-> calc({"expr": "2+2"})' and (call.input_tokens, call.output_tokens) == (12, 4)
    assert graph.agents[1].system_prompt == "You research."
    assert graph.steps[3].tool_arguments == {"expr": "2+2"}
    assert graph.question == "2+2?" and graph.outcome == "unknown"
    assert (broken.outcome, broken.question, broken.steps[0].content) == (
        "failed",
        "why?",
        "ERROR: ValueError: no",
    )


def test_the_tree_and_trace_come_from_dotted_order_when_ids_are_missing():
    root_order = "20241013T070501000000Zaaa"
    runs = {
        "post": [
            {
                "id": "aaa",
                "name": "app",
                "run_type": "chain",
                "dotted_order": root_order,
                "inputs": {"input": "hi"},
                "start_time": 1728803101000,
            },
            {
                "id": "bbb",
                "name": "search",
                "run_type": "tool",
                "dotted_order": f"{root_order}.20241013T070502000000Zbbb",
                "inputs": {"input": "hi"},
                "start_time": 1728803102000,
            },
        ],
        "patch": [
            {
                "dotted_order": f"{root_order}.20241013T070502000000Zbbb",
                "outputs": {"output": "found"},
                "end_time": 1728803103000,
            },
            {
                "id": "ccc",
                "name": "late",
                "run_type": "llm",
                "trace_id": "aaa",
                "parent_run_id": "aaa",
                "outputs": {"output": "x"},
            },
        ],
    }
    (trace,) = list(LANGSMITH.parse(_source(runs)))
    assert trace.external_id == "aaa"
    assert [(s.kind, s.speaker, s.parent) for s in trace.steps] == [
        ("message", "app", None),
        ("tool_call", "search", 0),
        ("tool_result", "search", 1),
        ("llm_call", "late", 0),
    ]
    assert trace.steps[2].content == "found"
    assert trace.warnings == ["patch for run ccc has no posted run; it is imported as a run of its own"]


def test_runs_nesting_their_children_in_child_runs_are_flattened():
    child = _run("c", "lookup", "tool", "r", None, 2, inputs={"input": "q"}, outputs={"output": "a"})
    root = _run(
        "r",
        "Agent",
        "chain",
        "r",
        None,
        1,
        inputs={"input": "q"},
        outputs={"output": "a"},
        child_runs=[child],
    )
    (trace,) = list(LANGSMITH.parse(_source(root)))
    assert [(s.kind, s.parent) for s in trace.steps] == [
        ("message", None),
        ("tool_call", 0),
        ("tool_result", 1),
    ]


def _malformed() -> list[object]:
    payload = json.loads(PAYLOAD.read_text())
    no_ids = copy.deepcopy(payload)
    del no_ids["post"][0]["id"], no_ids["post"][0]["dotted_order"]
    not_runs = copy.deepcopy(payload)
    not_runs["post"].append("run")
    return [
        {},
        "runs",
        {"post": "x"},
        {"post": [], "patch": []},
        no_ids,
        not_runs,
        [1, 2],
        {"run_type": "chain", "id": "a", "child_runs": "x"},
        [{"id": "a", "run_type": "chain"}],
    ]


@pytest.mark.parametrize("document", _malformed(), ids=lambda d: str(d)[:40])
def test_malformed_langsmith_files_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(LANGSMITH.parse(_source(document)))


def test_odd_values_inside_runs_are_tolerated():
    runs = _agent_runs()
    runs[2]["outputs"] = {"usage_metadata": "x", "choices": [None]}
    runs[1]["extra"] = "x"
    runs[3]["start_time"] = "soon"
    traces = list(LANGSMITH.parse(_source(runs)))
    assert len(traces[0].steps) == 6


def _all_sample_files() -> list[Path]:
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))


def test_only_langsmith_files_score_high_with_the_langsmith_detector():
    for path in _all_sample_files():
        score = LANGSMITH.detect(Source.from_bytes(path.name, path.read_bytes()))
        if "langsmith" in path.parts:
            assert score >= 0.8, path
        else:
            assert score <= 0.3, path
    assert LANGSMITH.detect(_source(_agent_runs())) >= 0.8


@pytest.mark.django_db
def test_the_ingest_payload_imports_as_one_trace(project):
    (job,) = import_now(project, incoming_path(PAYLOAD))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "langsmith"
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert (trace.external_id, trace.step_count) == (RUN_ID, 1)
    step = Step.objects.get(trace=trace)
    assert (step.span_id, step.agent.name, step.output_tokens) == (RUN_ID, "ChatOpenAI", 9)


@pytest.mark.django_db
def test_a_run_list_imports_one_trace_per_trace_id_with_the_step_tree(project):
    (job,) = import_now(project, incoming_bytes("runs.json", json.dumps(_agent_runs()).encode()))
    assert job.status == JobStatus.SUCCEEDED, job.error
    traces = list(Trace.objects.filter(pk__in=job.trace_ids).order_by("ordinal"))
    assert [(t.external_id, t.step_count, t.outcome) for t in traces] == [
        ("t1", 6, "unknown"),
        ("t2", 1, "failed"),
    ]
    parents = list(
        Step.objects.filter(trace=traces[0]).order_by("index").values_list("parent_index", flat=True)
    )
    assert parents == [None, 0, 1, 2, 3, 0]
    assert set(Agent.objects.filter(trace=traces[0]).values_list("name", flat=True)) == {
        "LangGraph",
        "researcher",
        "writer",
    }
