"""The OTLP/HTTP receiver with real protobuf bodies built from the opentelemetry-proto classes."""

from __future__ import annotations

import gzip
import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import wait_for
from tracing import services
from tracing.models import OtlpSpan, Step, Trace

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
T0 = 1_700_000_000_000_000_000


def _attrs(**values: object) -> list[common_pb2.KeyValue]:
    out = []
    for key, value in values.items():
        any_value = (
            common_pb2.AnyValue(int_value=value)
            if isinstance(value, int)
            else common_pb2.AnyValue(string_value=str(value))
        )
        out.append(common_pb2.KeyValue(key=key.replace("__", "."), value=any_value))
    return out


def _span(
    span_id: int, parent: int | None, name: str, offset_ms: int, **attributes: object
) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=TRACE,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=T0 + offset_ms * 1_000_000,
        end_time_unix_nano=T0 + (offset_ms + 5) * 1_000_000,
        attributes=_attrs(**attributes),
    )


AGENT = _span(
    1,
    None,
    "planner",
    0,
    openinference__span__kind="AGENT",
    agent__name="Planner",
    input__value="Find the population of Paris",
)
LLM = _span(
    2,
    1,
    "ChatCompletion",
    10,
    openinference__span__kind="LLM",
    output__value="I will search the web",
    llm__token_count__prompt=12,
    llm__token_count__completion=6,
)
TOOL = _span(
    3,
    1,
    "web_search",
    20,
    openinference__span__kind="TOOL",
    tool__name="web_search",
    input__value='{"q": "Paris population"}',
    output__value="2.1 million",
)


def _request(*spans: trace_pb2.Span) -> trace_service_pb2.ExportTraceServiceRequest:
    resource = resource_pb2.Resource(attributes=_attrs(service__name="my-agents"))
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))])
        ]
    )


@pytest.fixture
def token(project) -> str:
    return services.api_token_create(project=project, name="otel", user=None)[1]


def _post(client, token, body: bytes, content_type: str = "application/x-protobuf", **extra):
    return client.generic(
        "POST", "/v1/traces", body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}", **extra
    )


def _rebuild_from(callbacks) -> None:
    for callback in callbacks:  # the enqueued tasks, run here instead of on a worker
        callback()


@pytest.fixture
def rebuild_inline(monkeypatch, django_capture_on_commit_callbacks):
    """Run the rebuild task in this process when the request commits (the worker path has its own test)."""
    from tracing import tasks

    monkeypatch.setattr(
        tasks.build_otlp_traces_task,
        "delay",
        lambda project_id, trace_ids: services.otlp_traces_rebuild(
            project_id=project_id, trace_ids=trace_ids
        ),
    )

    def post(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return _post(*args, **kwargs)

    return post


@pytest.mark.django_db
def test_protobuf_spans_sent_in_two_requests_merge_into_one_trace(client, token, project, rebuild_inline):
    _post = rebuild_inline
    first = _post(client, token, _request(AGENT, LLM).SerializeToString())
    assert first.status_code == 200 and first["Content-Type"] == "application/x-protobuf"
    trace_service_pb2.ExportTraceServiceResponse.FromString(first.content)  # a valid OTLP response body
    trace = Trace.objects.get(project=project, external_id=TRACE.hex())
    assert trace.step_count == 2

    _post(client, token, _request(TOOL).SerializeToString())
    _post(client, token, _request(LLM, TOOL).SerializeToString())  # re-sent spans change nothing
    trace.refresh_from_db()
    assert Trace.objects.filter(project=project).count() == 1
    assert OtlpSpan.objects.filter(project=project).count() == 3
    steps = list(Step.objects.filter(trace=trace).order_by("index"))
    assert [s.kind for s in steps] == ["message", "llm_call", "tool_call", "tool_result"]
    assert {s.agent.name for s in steps} == {"Planner"}
    assert steps[3].content == "2.1 million" and steps[3].parent_index == 2
    assert steps[1].input_tokens == 12 and steps[1].output_tokens == 6


@pytest.mark.django_db
def test_otlp_json_and_gzip_are_accepted(client, token, project, rebuild_inline):
    body = json.dumps(json_format.MessageToDict(_request(AGENT, LLM, TOOL))).encode()
    response = rebuild_inline(
        client, token, gzip.compress(body), "application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 200 and response.json() == {}
    assert OtlpSpan.objects.filter(project=project, trace_id=TRACE.hex()).count() == 3
    assert Trace.objects.get(project=project, external_id=TRACE.hex()).step_count == 4


@pytest.mark.django_db
def test_it_needs_a_token_and_a_known_content_type(client, token):
    body = _request(AGENT).SerializeToString()
    assert (
        client.generic("POST", "/v1/traces", body, content_type="application/x-protobuf").status_code == 401
    )
    assert _post(client, token, body, "text/plain").status_code == 415
    assert client.get("/v1/traces").status_code == 405


@pytest.mark.django_db
def test_a_broken_body_is_a_400_with_a_reason(client, token, settings):
    settings.CULPRIT_MAX_UPLOAD_BYTES = 1_000_000
    response = _post(client, token, b"\xff\xfe not protobuf at all")
    assert response.status_code == 400
    bad_json = _post(client, token, b'{"resourceSpans": "nope"}', "application/json")
    assert bad_json.status_code == 400 and "resourceSpans" in bad_json.json()["message"]
    bomb = _post(
        client, token, gzip.compress(b"0" * 5_000_000), "application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert bomb.status_code == 400 and "size limit" in bomb.json()["message"]
    # What was wrong, in words (not the parser's exception text).
    for body, content_type, extra, expected in (
        (
            b'{"resourceSpans": [}',
            "application/json",
            {},
            "the body is not JSON (expecting value at line 1, column 20)",
        ),
        (b'{"a": "\xff"}', "application/json", {}, "not UTF-8 text (invalid byte at offset 7)"),
        (b"not gzip", "application/json", {"HTTP_CONTENT_ENCODING": "gzip"}, "is not gzip data"),
    ):
        answer = _post(client, token, body, content_type, **extra)
        assert answer.status_code == 400 and expected in answer.json()["message"], answer.json()


@pytest.mark.django_db
def test_spans_without_ids_are_reported_as_rejected(client, token):
    broken = trace_pb2.Span(trace_id=b"", span_id=b"", name="x")
    response = _post(client, token, _request(AGENT, broken).SerializeToString())
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 1
    # JSON entries that are not objects, at any level, are counted too (not a silent 200).
    body = json.dumps({"resourceSpans": [None, 1, {"scopeSpans": ["x", {"spans": [None, 2]}]}]}).encode()
    answer = _post(client, token, body, "application/json").json()
    assert answer["partialSuccess"]["rejectedSpans"] == "5"
    assert "not an object" in answer["partialSuccess"]["errorMessage"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_builds_the_trace_from_received_spans(celery_worker, client, token, project):
    assert _post(client, token, _request(AGENT, LLM, TOOL).SerializeToString()).status_code == 200
    trace = wait_for(lambda: Trace.objects.filter(project=project, external_id=TRACE.hex()).first())
    assert trace.step_count == 4


def test_a_json_error_reads_without_a_dangling_at():
    import json

    from tracing.formats.base import json_message

    try:
        json.loads('{"a": "x\ny"}')
    except json.JSONDecodeError as exc:
        assert json_message(exc) == "Invalid control character"
