from __future__ import annotations

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError
from tracing.formats.otel_span_attributes import FORMAT
from tracing.models import JobStatus, Step

FOLDER = SHARED / "traces" / "openinference"
if not FOLDER.exists():
    FOLDER = ROOT / "tests" / "fixtures" / "openinference"
FILES = sorted(FOLDER.glob("*.json"))


@pytest.mark.django_db
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_a_lone_span_attribute_map_imports_as_a_one_span_trace(project, path):
    (job,) = import_now(project, incoming_path(path))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "otel-attributes"
    steps = list(Step.objects.filter(trace_id=job.trace_ids[0]).order_by("index"))
    assert steps and all(s.agent is not None for s in steps)


@pytest.mark.django_db
def test_the_tool_execution_span_becomes_a_call_and_its_result(project):
    path = next(p for p in FILES if "tool_execution" in p.name)
    (job,) = import_now(project, incoming_path(path))
    kinds = list(
        Step.objects.filter(trace_id=job.trace_ids[0]).order_by("index").values_list("kind", "tool_name")
    )
    assert kinds == [("tool_call", "get_weather"), ("tool_result", "get_weather")]


@pytest.mark.parametrize(
    "data",
    [b'{"a.b": 1}', b'{"openinference.span.kind": "LLM", "x": 1, "y": 2, "z": 3}', b'{"history": []}', b"[]"],
)
def test_other_objects_are_not_claimed(data):
    assert FORMAT.detect(Source.from_bytes("x.json", data)) == 0.0


def test_parse_refuses_a_non_attribute_object():
    with pytest.raises(TraceFormatError):
        list(FORMAT.parse(Source.from_bytes("x.json", b'{"a": 1}')))


@pytest.mark.django_db
def test_a_genai_agent_name_names_the_agent(project):
    data = (
        b'{"gen_ai.operation.name": "chat", "gen_ai.agent.name": "Planner", "gen_ai.output.messages": "[]"}'
    )
    (job,) = import_now(project, incoming_bytes("a.json", data))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert Step.objects.filter(trace_id=job.trace_ids[0], agent__name="Planner").exists()
