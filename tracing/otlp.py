"""OTLP/HTTP trace receiver at /v1/traces: point any OpenTelemetry / OpenInference exporter at Culprit.

    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://culprit.example/v1/traces
    OTEL_EXPORTER_OTLP_TRACES_HEADERS="Authorization=Bearer cul_…"

Accepts ``application/x-protobuf`` (ExportTraceServiceRequest) and ``application/json`` (OTLP/JSON), optionally
gzip-compressed, and answers in the request's encoding as the OTLP specification asks.
"""

from __future__ import annotations

import gzip
import json
import zlib

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from config import broker, ratelimit

from . import services
from .formats import TraceFormatError
from .formats.base import check_json_depth, json_message
from .models import ApiToken, Project
from .services import otlp

PROTOBUF = "application/x-protobuf"


def _error(status: int, message: str, protobuf: bool) -> HttpResponse:
    # OTLP errors carry a google.rpc.Status; its JSON form is {"code", "message"}.
    if protobuf:
        return HttpResponse(_status_message(status, message), status=status, content_type=PROTOBUF)
    return JsonResponse({"code": status, "message": message}, status=status)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _status_message(code: int, message: str) -> bytes:
    """A serialized google.rpc.Status {1: code, 2: message}; written by hand to avoid a dependency for two fields."""
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _token(request: HttpRequest) -> ApiToken | None:
    header = request.headers.get("Authorization", "")
    token = (
        header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("X-Api-Key", "")
    )
    return services.api_token_authenticate(token) if token else None


def _body(data: bytes, request: HttpRequest) -> bytes:
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        # Inflate with a cap: a small gzip body must not expand into gigabytes inside the web process (a 404 MB
        # body once took it to 1.4 GB). Exporters send batches of a few MB at most.
        cap = min(settings.CULPRIT_OTLP_MAX_INFLATED_BYTES, settings.CULPRIT_MAX_UPLOAD_BYTES)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = inflater.decompress(data, cap + 1)
        if len(data) > cap or inflater.unconsumed_tail:
            raise TraceFormatError("the decompressed request is over the upload size limit")
    return data


def _store(data: bytes, protobuf: bool, project: Project) -> tuple[list[str], int]:
    """Store the request's spans and mark the builds they need: protobuf spans go straight into rows, JSON is parsed
    and kept as JSON. The trace ids newly marked, whose build must be sent, and the number of spans rejected."""
    if protobuf:
        message = trace_service_pb2.ExportTraceServiceRequest.FromString(data)
        return otlp.otlp_spans_accept(project=project, message=message)
    text = data.decode("utf-8")
    check_json_depth(text)
    return otlp.otlp_spans_accept(project=project, document=json.loads(text))


@csrf_exempt
@require_POST
def receive_traces(request: HttpRequest) -> HttpResponse:
    protobuf = request.content_type == PROTOBUF
    if wait := ratelimit.hit("otlp", ratelimit.by_token(request)):
        response = _error(429, f"too many requests; retry after {wait} s", protobuf)
        response["Retry-After"] = str(wait)
        return response
    token = _token(request)
    if token is None:
        return _error(401, "a valid project API token is required (Authorization: Bearer cul_…)", protobuf)
    if request.content_type not in (PROTOBUF, "application/json"):
        return _error(415, "send application/x-protobuf or application/json", protobuf)
    try:
        body = request.body
    except RequestDataTooBig:
        return _error(
            413,
            f"the request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // (1024 * 1024)} MB; "
            "send fewer spans per request",
            protobuf,
        )
    try:
        # The spans are durable (committed) when this returns; building them into steps is the worker's job.
        marked, rejected = _store(_body(body, request), protobuf, token.project)
    except (
        TraceFormatError,
        DecodeError,
        UnicodeDecodeError,
        ValueError,
        zlib.error,
        gzip.BadGzipFile,
    ) as exc:
        return _error(400, f"not a valid OTLP trace export: {_why(exc)}", protobuf)
    if not _enqueue_rebuilds(token.project_id, marked):
        # The spans are stored; the rebuild is not queued. Exporters retry a 503 (never a 500), and the retry stores
        # the same spans again (no duplicates) and queues the rebuild once the broker is back.
        response = _error(
            503,
            "the spans are stored but the trace cannot be built now (the task queue is down); retry later",
            protobuf,
        )
        response["Retry-After"] = str(broker.RETRY_AFTER)
        return response
    return _success(rejected, protobuf)


def _why(exc: Exception) -> str:
    """What was wrong with the body, in words an exporter's operator can act on (not a parser's exception text)."""
    if isinstance(exc, TraceFormatError):
        return str(exc)
    if isinstance(exc, DecodeError):
        return "the body is not a protobuf ExportTraceServiceRequest (is the content type right?)"
    if isinstance(exc, UnicodeDecodeError):
        return f"the JSON body is not UTF-8 text (invalid byte at offset {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"the body is not JSON ({json_message(exc).lower()} at line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return "the body is sent as Content-Encoding: gzip but is not gzip data"
    return str(exc)


def _enqueue_rebuilds(project_id: int, marked: list[str]) -> bool:
    """Send one task that builds the traces the request newly marked (a trace already marked has a build waiting
    that will see these spans too: a burst of requests touching one trace yields one build; the new traces of a
    request are built together, ``services/otlp_build_many.py``); False when the broker could not take it. Outside
    a transaction (every real request) it is sent now, so the answer can say so; inside one it waits for the
    commit."""
    from .tasks import build_otlp_traces_task

    if not marked:
        return True
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: broker.send(build_otlp_traces_task, project_id, marked))
        return True
    if not broker.send(build_otlp_traces_task, project_id, marked):
        # The exporter retries the 503; its retry must find no mark, or it would queue nothing.
        otlp.otlp_builds_unmark(project_id=project_id, trace_ids=marked)
        return False
    return True


def _success(rejected: int, protobuf: bool) -> HttpResponse:
    response = trace_service_pb2.ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = (
            f"{rejected} span(s) were dropped: not an object, or without a valid traceId/spanId"
        )
    if protobuf:
        return HttpResponse(response.SerializeToString(), content_type=PROTOBUF)
    return JsonResponse(json_format.MessageToDict(response))
