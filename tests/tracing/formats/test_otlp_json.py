from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.otlp_json import FORMAT, traces_from_otlp_dict
from tracing.models import JobStatus, Step, Trace

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXAMPLE = SHARED / "traces" / "otlp" / "otel-proto-example-trace.json"
if not EXAMPLE.exists():  # a clone without shared/data: the copy kept in tests/
    EXAMPLE = FIXTURES / "otlp" / "otel-proto-example-trace.json"
# Two traces from a two-agent run in the OTel GenAI conventions (written for these tests, see the report).
MULTI = FIXTURES / "otlp" / "multi_agent_genai.json"
RUN_ID, SHORT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
MY_FIXTURES = {EXAMPLE.name, MULTI.name}


def parse_bytes(data: bytes, name: str = "export.json") -> list:
    return list(FORMAT.parse(Source.from_bytes(name, data)))


def parse_doc(document) -> list:
    return parse_bytes(json.dumps(document).encode())


def multi() -> dict:
    return json.loads(MULTI.read_text())


def by_id(traces: list) -> dict:
    return {t.external_id: t for t in traces}


def test_the_opentelemetry_proto_example_imports_as_one_trace_of_one_step():
    (trace,) = parse_bytes(EXAMPLE.read_bytes(), EXAMPLE.name)
    assert trace.external_id == "5b8efff798038103d269b633813fc60c"  # upper-case hex in the file
    assert trace.name == "I'm a server span"
    (step,) = trace.steps
    assert step.span_id == "eee19b7ec3c1b174"
    assert step.agent == "my.service"  # the resource's service.name: the span names no agent
    assert json.loads(step.content) == {
        "my.span.attr": "some value"
    }  # a leaf with attributes only shows them
    assert step.started_at == datetime(2018, 12, 13, 14, 51, tzinfo=UTC)
    assert step.ended_at == datetime(2018, 12, 13, 14, 51, 1, tzinfo=UTC)
    assert [a.name for a in trace.agents] == ["my.service"]
    assert trace.metadata["scopes"] == ["my.library"]
    assert any("eee19b7ec3c1b173" in w and "not in the file" in w for w in trace.warnings)


def test_a_file_with_two_trace_ids_gives_two_traces_with_parent_links():
    traces = by_id(parse_bytes(MULTI.read_bytes()))
    assert set(traces) == {RUN_ID, SHORT_ID}
    run = traces[RUN_ID]
    assert run.name == "invoke_agent Planner [4bf92f35]"
    assert [(s.kind, s.agent) for s in run.steps] == [
        ("message", "Planner"),
        ("llm_call", "Planner"),
        ("tool_call", "Planner"),
        ("tool_result", "Planner"),
        ("llm_call", "Planner"),
        ("llm_call", "Writer"),
    ]
    assert [s.parent for s in run.steps] == [None, 0, 0, 2, 0, 0]
    assert all(s.parent is None or s.parent < i for i, s in enumerate(run.steps))
    assert {a.name: a.system_prompt for a in run.agents} == {
        "Planner": "You are Planner. Use search_flights before quoting any flight. Hand the result to Writer.",
        "Writer": "You are Writer. Draft short, friendly emails.",
    }
    assert (
        run.question
        == "Find me a direct flight from Lisbon to Oslo on 14 June and draft a confirmation email."
    )
    assert len(traces[SHORT_ID].steps) == 2


def test_tool_spans_give_name_arguments_and_the_error_of_a_failed_status():
    run = by_id(parse_bytes(MULTI.read_bytes()))[RUN_ID]
    call, result = run.steps[2], run.steps[3]
    assert (call.tool_name, call.tool_arguments) == (
        "search_flights",
        {"origin": "LIS", "destination": "OSL", "date": "2024-06-14", "direct": True},
    )
    assert result.content == "ERROR: TimeoutError: flights API did not answer within 5 s"
    assert run.metadata["error_span_count"] == 1
    assert run.outcome == "unknown"  # the root span did not fail: the run went on after the tool error


def test_llm_spans_carry_tokens_and_the_models_answer():
    run = by_id(parse_bytes(MULTI.read_bytes()))[RUN_ID]
    first, second = run.steps[1], run.steps[4]
    assert (first.input_tokens, first.output_tokens) == (412, 38)
    assert first.content.startswith("-> search_flights(")
    assert second.content == "There is a direct flight TP1234 at 09:05 on 14 June. Handing over to Writer."


def test_a_failed_root_span_marks_the_run_failed_and_exception_events_count_without_status():
    document = multi()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["status"] = {"code": "STATUS_CODE_ERROR", "message": "run aborted"}
    spans[5]["events"] = [
        {
            "name": "exception",
            "attributes": [
                {"key": "exception.type", "value": {"stringValue": "ValueError"}},
                {"key": "exception.message", "value": {"stringValue": "bad draft"}},
            ],
        }
    ]
    run = by_id(parse_doc(document))[RUN_ID]
    assert run.outcome == "failed"
    assert run.steps[0].content.endswith("ERROR: run aborted")
    assert run.steps[5].content.endswith("ERROR: ValueError: bad draft")


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode() if hex_id else ""


def test_json_lines_with_base64_ids_merge_spans_of_one_trace_across_lines():
    document = multi()
    resource = document["resourceSpans"][0]
    scope, spans = resource["scopeSpans"][0]["scope"], resource["scopeSpans"][0]["spans"]
    lines = []
    for span in spans:  # one export request per span, as a batching exporter may well write them
        span = copy.deepcopy(span)
        for key in ("traceId", "spanId", "parentSpanId"):
            span[key] = _b64(span[key])
        lines.append(
            json.dumps(
                {
                    "resourceSpans": [
                        {"resource": resource["resource"], "scopeSpans": [{"scope": scope, "spans": [span]}]}
                    ]
                }
            )
        )
    from_lines = by_id(parse_bytes(("\n".join(lines) + "\n").encode(), "collector.jsonl"))
    from_json = by_id(parse_bytes(MULTI.read_bytes()))
    assert set(from_lines) == {RUN_ID, SHORT_ID}
    for trace_id, trace in from_json.items():
        assert [(s.kind, s.agent, s.parent, s.span_id, s.content) for s in from_lines[trace_id].steps] == [
            (s.kind, s.agent, s.parent, s.span_id, s.content) for s in trace.steps
        ]


def test_a_span_sent_twice_is_shown_once_in_its_last_version():
    document = multi()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    resent = copy.deepcopy(spans[3])
    for attribute in resent["attributes"]:
        if attribute["key"] == "gen_ai.output.messages":
            attribute["value"] = {
                "stringValue": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "No direct flight found."}]}]
                )
            }
    second = {
        "resourceSpans": [
            {"resource": document["resourceSpans"][0]["resource"], "scopeSpans": [{"spans": [resent]}]}
        ]
    }
    data = (json.dumps(document) + "\n" + json.dumps(second) + "\n").encode()
    run = by_id(parse_bytes(data, "resent.jsonl"))[RUN_ID]
    assert len(run.steps) == 6
    assert run.steps[4].content == "No direct flight found."
    assert any("repeated span" in w for w in run.warnings)


def test_protobuf_field_names_in_snake_case_are_read_too():
    text = MULTI.read_text()
    for camel, snake in [
        ("resourceSpans", "resource_spans"),
        ("scopeSpans", "scope_spans"),
        ("traceId", "trace_id"),
        ("spanId", "span_id"),
        ("parentSpanId", "parent_span_id"),
        ("stringValue", "string_value"),
        ("intValue", "int_value"),
        ("startTimeUnixNano", "start_time_unix_nano"),
    ]:
        text = text.replace(f'"{camel}"', f'"{snake}"')
    traces = by_id(parse_bytes(text.encode()))
    expected = by_id(parse_bytes(MULTI.read_bytes()))[RUN_ID]
    assert [s.kind for s in traces[RUN_ID].steps] == [s.kind for s in expected.steps]
    assert traces[RUN_ID].steps[1].input_tokens == 412


def test_the_receiver_entry_point_takes_a_decoded_export_request():
    traces = traces_from_otlp_dict(multi())
    assert {t.external_id for t in traces} == {RUN_ID, SHORT_ID}
    with pytest.raises(TraceFormatError):
        traces_from_otlp_dict([])


def test_a_span_entering_another_service_acts_for_that_service():
    document = multi()
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    short = [s for s in spans if s["traceId"] == SHORT_ID]
    child = short[1]
    child["attributes"] = [a for a in child["attributes"] if a["key"] != "gen_ai.agent.name"]
    document["resourceSpans"][0]["scopeSpans"][0]["spans"] = [short[0]]
    document["resourceSpans"].append(
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "geo-service"}}]},
            "scopeSpans": [{"spans": [child]}],
        }
    )
    (trace,) = parse_doc(document)
    assert [s.agent for s in trace.steps] == ["Planner", "geo-service"]


def test_phoenix_otlp_span_listing_is_read_as_one_resource():
    spans = multi()["resourceSpans"][0]["scopeSpans"][0]["spans"]
    listing = {
        "next_cursor": None,
        "data": [
            {
                "trace_id": s["traceId"],
                "span_id": s["spanId"],
                "parent_span_id": s["parentSpanId"],
                "name": s["name"],
                "start_time_unix_nano": int(s["startTimeUnixNano"]),
                "end_time_unix_nano": int(s["endTimeUnixNano"]),
                "attributes": s["attributes"],
                "events": s.get("events"),
                "status": s["status"],
            }
            for s in spans
        ],
    }
    source = Source.from_bytes("otlpv1.json", json.dumps(listing).encode())
    assert FORMAT.detect(source) >= 0.8
    traces = by_id(list(FORMAT.parse(source)))
    assert len(traces[RUN_ID].steps) == 6


@pytest.mark.parametrize(
    "document",
    [
        {"resourceSpans": "nope"},
        {
            "resourceSpans": [
                {"scopeSpans": [{"spans": [{"spanId": "00f067aa0ba902b7", "name": "no trace id"}]}]}
            ]
        },
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": RUN_ID, "name": "no span id"}]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": ["not a span"]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": None}]}]},
        {"resourceSpans": [{"resource": [], "scopeSpans": []}]},
        {"resourceSpans": []},
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": RUN_ID,
                                    "spanId": "00f067aa0ba902b7",
                                    "attributes": "x",
                                    "events": [3],
                                    "status": [],
                                    "startTimeUnixNano": "soon",
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        {"somethingElse": 1},
        [1, 2],
        "just a string",
    ],
)
def test_malformed_exports_raise_a_format_error_or_import(document):
    try:
        traces = parse_doc(document)
    except TraceFormatError as exc:
        assert str(exc)
    else:
        assert all(trace.steps for trace in traces)


def test_a_broken_line_in_json_lines_names_the_line():
    line = MULTI.read_text().replace("\n", "")
    with pytest.raises(TraceFormatError, match="line 2"):
        parse_bytes(f'{line}\n{{"resourceSpans": [\n'.encode(), "cut.jsonl")


def _other_files() -> list[Path]:
    shared = [p for p in SHARED.rglob("*") if p.is_file()] if SHARED.exists() else []
    others = [p for p in FIXTURES.rglob("*") if p.is_file() and p.parent.name != "otlp"]
    return sorted(p for p in shared + others if p.name not in MY_FIXTURES)


def test_detection_claims_otlp_files_and_nothing_else():
    for path in (EXAMPLE, MULTI):
        source = Source.from_bytes(path.name, path.read_bytes())
        assert FORMAT.detect(source) >= 0.8
        assert detect_format(Source.from_bytes(path.name, path.read_bytes())).name == "otlp-json"
    claimed = [p for p in _other_files() if FORMAT.detect(Source.from_bytes(p.name, p.read_bytes())) > 0.3]
    assert claimed == []


@pytest.mark.django_db
def test_an_otlp_file_imports_end_to_end_with_parents_and_tokens(project):
    (job,) = import_now(project, incoming_path(MULTI))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "otlp-json"
    traces = {t.external_id: t for t in Trace.objects.filter(pk__in=job.trace_ids)}
    assert set(traces) == {RUN_ID, SHORT_ID}
    run = traces[RUN_ID]
    assert run.step_count == 6
    steps = list(Step.objects.filter(trace=run).order_by("index"))
    assert [s.parent_index for s in steps] == [None, 0, 0, 2, 0, 0]
    assert steps[1].input_tokens == 412 and steps[3].tool_name == "search_flights"
    assert steps[2].span_id == "c1e2d3f4a5b6c7d8"


@pytest.mark.django_db
def test_the_proto_example_imports_end_to_end(project):
    (job,) = import_now(project, incoming_bytes("trace.json", EXAMPLE.read_bytes()))
    assert job.status == JobStatus.SUCCEEDED, job.error
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert (trace.step_count, trace.external_id) == (1, "5b8efff798038103d269b633813fc60c")
