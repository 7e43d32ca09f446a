from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.otel_attributes import nested
from tracing.formats.phoenix import FORMAT
from tracing.models import Agent, JobStatus, Step, Trace

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# The Phoenix REST span shape (GET /v1/projects/{id}/spans); no public export was at hand, see the report.
SPANS = FIXTURES / "phoenix" / "multi_agent_spans.json"
RUN_ID, SHORT_ID = "6e0c63257de34c92bf9efcd03927272e", "9a4f1c2e8b7d4a6f8e3c2b1a0d9f8e7c"


def spans() -> list[dict]:
    return json.loads(SPANS.read_text())


def parse_bytes(data: bytes, name: str = "spans.json") -> list:
    return list(FORMAT.parse(Source.from_bytes(name, data)))


def parse_doc(document) -> list:
    return parse_bytes(json.dumps(document).encode())


def by_id(traces: list) -> dict:
    return {t.external_id: t for t in traces}


def shape(trace) -> list[tuple]:
    return [
        (s.kind, s.agent, s.parent, s.span_id, s.content, s.tool_name, s.input_tokens) for s in trace.steps
    ]


def test_the_sample_export_gives_one_trace_per_trace_id():
    traces = by_id(parse_bytes(SPANS.read_bytes()))
    assert set(traces) == {RUN_ID, SHORT_ID}
    assert traces[RUN_ID].name == "TripCrew.kickoff [6e0c6325]"
    assert len(traces[SHORT_ID].steps) == 3


def test_agent_llm_and_tool_spans_become_steps_of_their_agents_with_parent_links():
    run = by_id(parse_bytes(SPANS.read_bytes()))[RUN_ID]
    assert [(s.kind, s.agent, s.speaker) for s in run.steps] == [
        ("message", "TripCrew.kickoff", "TripCrew.kickoff"),
        ("message", "Researcher", "Researcher._execute_core"),
        ("llm_call", "Researcher", "ChatCompletion"),
        ("tool_call", "Researcher", "web_search"),
        ("tool_result", "Researcher", "web_search"),
        ("llm_call", "Researcher", "ChatCompletion"),
        ("message", "Writer", "Writer._execute_core"),
        ("llm_call", "Writer", "ChatCompletion"),
    ]
    assert [s.parent for s in run.steps] == [None, 0, 1, 1, 3, 1, 0, 6]
    assert run.steps[2].span_id == "2c3d4e5f60718293"
    assert run.steps[0].started_at == datetime(2025, 3, 4, 9, 15, tzinfo=UTC)


def test_the_failed_tool_span_carries_its_status_message_and_arguments():
    run = by_id(parse_bytes(SPANS.read_bytes()))[RUN_ID]
    call, result = run.steps[3], run.steps[4]
    assert call.tool_arguments == {"query": "Porto museums open Monday ticket prices"}
    assert result.content.startswith("ERROR: HTTPError: 429 Client Error")
    assert run.metadata["error_span_count"] == 1


def test_llm_spans_give_tokens_answers_and_system_prompts():
    run = by_id(parse_bytes(SPANS.read_bytes()))[RUN_ID]
    assert (run.steps[2].input_tokens, run.steps[2].output_tokens) == (318, 27)
    assert run.steps[2].content == '-> web_search({"query": "Porto museums open Monday ticket prices"})'
    assert run.steps[5].content == "Serralves (open Mon, 22 EUR) and Soares dos Reis (open Mon, 5 EUR)."
    prompts = {a.name: a.system_prompt for a in run.agents}
    assert prompts["Researcher"].startswith("You are Researcher.")
    assert prompts["Writer"] == "You are Writer. Turn research notes into short, lively travel copy."


def test_json_lines_and_the_rest_answer_and_the_cli_shape_read_the_same():
    expected = {k: shape(t) for k, t in by_id(parse_bytes(SPANS.read_bytes())).items()}
    records = spans()
    jsonl = ("\n".join(json.dumps(r) for r in records) + "\n").encode()
    rest = {"data": records, "next_cursor": None}
    cli = [
        {
            "traceId": trace_id,
            "status": "OK",
            "spans": [r for r in records if r["context"]["trace_id"] == trace_id],
        }
        for trace_id in (RUN_ID, SHORT_ID)
    ]
    for name, data in [
        ("spans.jsonl", jsonl),
        ("rest.json", json.dumps(rest).encode()),
        ("px.json", json.dumps(cli).encode()),
        ("one.json", json.dumps(cli[0]).encode()),
    ]:
        source = Source.from_bytes(name, data)
        assert FORMAT.detect(source) >= 0.8, name
        got = {k: shape(t) for k, t in by_id(list(FORMAT.parse(source))).items()}
        assert got == {k: v for k, v in expected.items() if k in got}, name


def test_nested_attributes_and_dataframe_rows_read_like_flat_ones():
    expected = shape(by_id(parse_bytes(SPANS.read_bytes()))[RUN_ID])
    nested_records, rows = [], []
    for record in spans():
        if record["context"]["trace_id"] != RUN_ID:
            continue
        flat = record["attributes"]
        tree = {key: nested(flat, key) for key in {k.split(".")[0] for k in flat}}
        nested_records.append({**record, "attributes": tree})
        row = {k: v for k, v in record.items() if k not in ("context", "attributes")}
        row.update({"context.trace_id": RUN_ID, "context.span_id": record["context"]["span_id"]})
        # get_spans_dataframe() keeps message lists whole: [{"message.role": …, "message.content": …}]
        for key in ("llm.input_messages", "llm.output_messages"):
            messages = nested(flat, key)
            if messages:
                row[f"attributes.{key}"] = [
                    {f"message.{k}": v for k, v in m["message"].items()} for m in messages
                ]
        row.update(
            {
                f"attributes.{k}": v
                for k, v in flat.items()
                if not k.startswith(("llm.input_messages", "llm.output_messages"))
            }
        )
        rows.append(row)
    assert shape(parse_doc(nested_records)[0]) == expected
    assert shape(parse_doc(rows)[0]) == expected


def test_opentelemetry_sdk_span_json_with_0x_ids_is_read():
    record = {
        "name": "web_search",
        "context": {"trace_id": "0x" + RUN_ID, "span_id": "0x3d4e5f6071829304", "trace_state": "[]"},
        "kind": "SpanKind.INTERNAL",
        "parent_id": None,
        "start_time": "2025-03-04T09:15:03.300000Z",
        "end_time": "2025-03-04T09:15:13.300000Z",
        "status": {"status_code": "ERROR", "description": "429"},
        "attributes": {"tool.name": "web_search", "input.value": '{"query": "x"}'},
        "events": [],
        "links": [],
        "resource": {"attributes": {}},
    }
    (trace,) = parse_doc([record])
    assert trace.external_id == RUN_ID
    assert [(s.kind, s.span_id) for s in trace.steps] == [
        ("tool_call", "3d4e5f6071829304"),
        ("tool_result", "3d4e5f6071829304"),
    ]
    assert trace.steps[1].content == "ERROR: 429"


@pytest.mark.parametrize(
    "document",
    [
        [{"name": "no context"}],
        [{"context": {"trace_id": RUN_ID, "span_id": ""}, "name": "empty id"}],
        [{"context": {"trace_id": RUN_ID, "span_id": "1"}, "attributes": "flat?"}],
        [{"context": {"trace_id": RUN_ID, "span_id": "1"}, "events": {"name": "x"}}],
        [
            {
                "context": {"trace_id": RUN_ID, "span_id": "1"},
                "attributes": None,
                "events": None,
                "start_time": 5,
            }
        ],
        {"data": [1, 2]},
        {"spans": [{"trace_id": RUN_ID, "span_id": "1"}]},  # TRAIL-like spans: no context
        [],
        [[]],
        "text",
        42,
    ],
)
def test_malformed_exports_raise_a_format_error_or_import(document):
    try:
        traces = parse_doc(document)
    except TraceFormatError as exc:
        assert str(exc)
    else:
        assert all(trace.steps for trace in traces)


def _other_files() -> list[Path]:
    shared = [p for p in SHARED.rglob("*") if p.is_file()] if SHARED.exists() else []
    others = [p for p in FIXTURES.rglob("*") if p.is_file() and p.parent.name != "phoenix"]
    return sorted(shared + others)


def test_detection_claims_phoenix_files_and_nothing_else():
    assert FORMAT.detect(Source.from_bytes(SPANS.name, SPANS.read_bytes())) >= 0.8
    assert detect_format(Source.from_bytes(SPANS.name, SPANS.read_bytes())).name == "phoenix"
    claimed = [p for p in _other_files() if FORMAT.detect(Source.from_bytes(p.name, p.read_bytes())) > 0.3]
    assert claimed == []


@pytest.mark.django_db
def test_a_phoenix_export_imports_end_to_end(project):
    (job,) = import_now(project, incoming_path(SPANS))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "phoenix"
    traces = {t.external_id: t for t in Trace.objects.filter(pk__in=job.trace_ids)}
    assert set(traces) == {RUN_ID, SHORT_ID}
    run = traces[RUN_ID]
    assert run.step_count == 8
    assert set(Agent.objects.filter(trace=run).values_list("name", flat=True)) == {
        "TripCrew.kickoff",
        "Researcher",
        "Writer",
    }
    steps = list(Step.objects.filter(trace=run).order_by("index"))
    assert [s.parent_index for s in steps] == [None, 0, 1, 1, 3, 1, 0, 6]
    assert steps[4].kind == "tool_result" and "429" in steps[4].content


@pytest.mark.django_db
def test_phoenix_json_lines_import_end_to_end(project):
    data = ("\n".join(json.dumps(r) for r in spans()) + "\n").encode()
    (job,) = import_now(project, incoming_bytes("spans.jsonl", data))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "phoenix"
    assert len(job.trace_ids) == 2


# --- span lists under named keys ---------------------------------------------------------------------------------

NAMED = FIXTURES / "phoenix" / "named_groups.json"


def test_span_lists_under_named_keys_give_one_trace_group_per_key_named_after_it():
    source = Source.from_bytes(NAMED.name, NAMED.read_bytes())
    assert detect_format(source).name == "phoenix"
    traces = list(FORMAT.parse(source))
    assert [(t.name, t.external_id, t.metadata["group"]) for t in traces] == [
        ("accepted_prompt_edit", RUN_ID, "accepted_prompt_edit"),
        ("rejected_prompt_edit", SHORT_ID, "rejected_prompt_edit"),
    ]
    # Grouping changes names only: the steps are those of the same spans read from a plain list.
    plain = by_id(parse_bytes(SPANS.read_bytes()))
    assert [shape(t) for t in traces] == [shape(plain[RUN_ID]), shape(plain[SHORT_ID])]


def test_a_key_holding_two_traces_names_each_after_the_key_and_its_trace_id():
    (trace_a, trace_b) = parse_doc({"both_runs": spans()})
    assert {trace_a.name, trace_b.name} == {f"both_runs [{RUN_ID[:8]}]", f"both_runs [{SHORT_ID[:8]}]"}


def test_named_keys_that_hold_no_spans_are_not_phoenix():
    assert FORMAT.detect(Source.from_bytes("x.json", json.dumps({"a": [{"b": 1}], "c": []}).encode())) == 0.0
    with pytest.raises(TraceFormatError):
        parse_doc({"a": [{"name": "not a span"}]})


@pytest.mark.django_db
def test_a_named_keys_file_imports_end_to_end(project):
    (job,) = import_now(project, incoming_path(NAMED))
    assert job.status == JobStatus.SUCCEEDED, job.error
    names = set(Trace.objects.filter(pk__in=job.trace_ids).values_list("name", flat=True))
    assert names == {"accepted_prompt_edit", "rejected_prompt_edit"}
