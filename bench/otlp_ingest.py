"""OTLP ingestion through real processes: gunicorn receiving protobuf export requests, Celery workers building the
traces incrementally, PostgreSQL and Redis (issue 17).

    python bench/otlp_ingest.py [--workers 1] [--web 2] [--scenarios wide,long,huge] [--shared-corpus DIR]

Scenarios (OpenInference spans: AGENT, LLM and TOOL with ~500 characters of input and output each, exported as an
SDK's BatchSpanProcessor does, children as they end, before their parents):

- ``wide``: 200 traces x 50 spans, in 20 requests of 512 spans;
- ``long``: one trace of 10,000 spans in 20 batches;
- ``huge``: one trace of 100,000 spans in 200 batches.

Requests are sent one after the other on one keep-alive connection, as one exporter does. Prints, per scenario:
accepted spans/s (all requests answered), queryable spans/s (every span built into steps, counted from the first
request), seconds from the last answer until queryable, and the peak RSS of every process. Every gunicorn worker
has answered once before the clock starts (its first request imports the URLconf, ~1 s). ``--shared-corpus``
sends the request bodies ``../shared/bench/otlp_corpus.py`` wrote instead (the bytes behind the issue's figures).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _django

# Real processes on Redis, as the team deployment runs them (the embedded filesystem broker is not what is measured).
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
QUEUE = "otlp-bench"
WORDS = (
    "agent plan tool call search result retrieve document summarize answer user question context memory step "
    "reasoning observation action final response error retry token model prompt completion"
).split()


# --- the corpus -----------------------------------------------------------------------------------------------------


def _text(rng: random.Random, tag: str) -> str:
    return (f"[{tag}] " + " ".join(rng.choice(WORDS) for _ in range(90)))[:500]


def trace_spans(rng: random.Random, trace_id: bytes, count: int, t0: int) -> list[dict]:
    """One agent run of ``count`` spans: an orchestrator, sub-agents of up to 6 LLM/TOOL calls; in export order."""
    spans: list[dict] = []

    def span(kind: str, name: str, parent: bytes | None, start: int, duration: int, **extra: object) -> dict:
        attributes = {
            "openinference.span.kind": kind,
            "input.value": _text(rng, f"in {len(spans)}"),
            "output.value": _text(rng, f"out {len(spans)}"),
            **extra,
        }
        item = {
            "trace_id": trace_id,
            "span_id": rng.getrandbits(64).to_bytes(8, "big"),
            "parent": parent,
            "name": name,
            "start": start,
            "end": start + duration,
            "attributes": attributes,
        }
        spans.append(item)
        return item

    root = span("AGENT", "orchestrator", None, t0, 0, **{"agent.name": "orchestrator"})
    clock, agent = t0 + 1000, 0
    while len(spans) < count:
        sub = span(
            "AGENT", f"agent {agent}", root["span_id"], clock, 0, **{"agent.name": f"agent{agent % 7}"}
        )
        agent += 1
        for j in range(min(6, count - len(spans))):
            clock += 1000
            if j % 2:
                span("TOOL", "web_search", sub["span_id"], clock, 500, **{"tool.name": "web_search"})
            else:
                span(
                    "LLM",
                    "ChatCompletion",
                    sub["span_id"],
                    clock,
                    500,
                    **{"llm.token_count.prompt": 900, "llm.token_count.completion": 120},
                )
        clock += 1000
        sub["end"] = clock
    root["end"] = clock + 1000
    return sorted(spans, key=lambda s: s["end"])  # exported as they end: children before parents


def request_body(spans: list[dict]) -> bytes:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    message = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.add(
        key="service.name", value=common_pb2.AnyValue(string_value="bench-app")
    )
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "openinference"
    for item in spans:
        span = scope.spans.add(
            trace_id=item["trace_id"],
            span_id=item["span_id"],
            name=item["name"],
            parent_span_id=item["parent"] or b"",
            start_time_unix_nano=item["start"],
            end_time_unix_nano=item["end"],
            kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        )
        for key, value in item["attributes"].items():
            any_value = (
                common_pb2.AnyValue(int_value=value)
                if isinstance(value, int)
                else common_pb2.AnyValue(string_value=str(value))
            )
            span.attributes.add(key=key, value=any_value)
    return message.SerializeToString()


def scenario(name: str) -> tuple[list[bytes], int]:
    rng = random.Random(42)
    t0 = time.time_ns() - 3600 * 10**9
    if name == "wide":
        spans = [
            s
            for t in range(200)
            for s in trace_spans(rng, rng.getrandbits(128).to_bytes(16, "big"), 50, t0 + t * 5 * 10**9)
        ]
        size = 512
    else:
        count = 10_000 if name == "long" else 100_000
        spans = trace_spans(rng, rng.getrandbits(128).to_bytes(16, "big"), count, t0)
        size = count // (20 if name == "long" else 200)
    return [request_body(spans[i : i + size]) for i in range(0, len(spans), size)], len(spans)


def shared_corpus(folder: Path) -> tuple[list[bytes], int]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return [path.read_bytes() for path in sorted(folder.glob("*.pb"))], manifest["spans"]


# --- processes ------------------------------------------------------------------------------------------------------


class Fleet:
    """gunicorn and Celery workers on this benchmark's database and queue, with their peak RSS sampled."""

    def __init__(self, web: int, workers: int, log: Path) -> None:
        self.port = _free_port()
        env = os.environ | {
            "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
            "CULPRIT_RATE_LIMITS": "otlp=1000000/m",
            "DEBUG": "0",
            "PYTHONPATH": str(_django.ROOT),
        }
        self.out = log.open("ab")
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi",
                    f"--bind=127.0.0.1:{self.port}",
                    f"--workers={web}",
                    "--timeout=120",
                ],
                cwd=_django.ROOT,
                env=env,
                stdout=self.out,
                stderr=subprocess.STDOUT,
            )
        ]
        for i in range(workers):
            self.procs.append(
                subprocess.Popen(
                    _django.celery_worker_argv(queue=QUEUE, hostname=f"otlpbench{i}@%h"),
                    cwd=_django.ROOT,
                    env=env,
                    stdout=self.out,
                    stderr=subprocess.STDOUT,
                )
            )
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()
        _wait_port(self.port)
        self._warm_up(web)
        time.sleep(3)  # the Celery workers connect to the broker

    def _warm_up(self, web: int) -> None:
        """Have every gunicorn worker answer once before the clock starts. ``config/wsgi.py`` loads the URLconf when
        a worker boots; the first request still opens the worker's database and Redis connections, which in a
        20-request scenario is a visible share of the accepted time. The requests go at once, so a worker busy with
        its first takes no other (sync workers serve one at a time)."""

        def post() -> None:
            client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            client.request("POST", "/v1/traces", b"", {"Content-Type": "application/x-protobuf"})
            client.getresponse().read()  # 401: no token; the URLconf and the receiver are loaded
            client.close()

        threads = [threading.Thread(target=post) for _ in range(2 * web)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in self.procs:
                try:
                    parent = psutil.Process(proc.pid)
                    for member in [parent, *parent.children(recursive=True)]:
                        name = (
                            "celery worker"
                            if "celery" in " ".join(member.cmdline())
                            else ("gunicorn master" if member.pid == proc.pid else "gunicorn worker")
                        )
                        self.names[member.pid] = name
                        self.peaks[member.pid] = max(self.peaks.get(member.pid, 0), member.memory_info().rss)
                except psutil.Error:
                    continue
            time.sleep(0.05)

    def reset_peaks(self) -> None:
        self.peaks = {}

    def peak_report(self) -> list[str]:
        return [
            f"{self.names.get(pid, '?')} {pid}: {rss / 2**20:.0f} MB"
            for pid, rss in sorted(self.peaks.items())
        ]

    def stop(self) -> None:
        self._stop.set()
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.out.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn does not answer on 127.0.0.1:{port}")


# --- one run --------------------------------------------------------------------------------------------------------


def run(fleet: Fleet, name: str, bodies: list[bytes], spans: int) -> dict:
    from django.db import connection

    from tracing import services
    from tracing.models import OtlpPendingBuild, OtlpSpan, Project

    Project.objects.filter(name=f"bench-otlp-{name}").delete()
    project = services.project_create(name=f"bench-otlp-{name}")
    token = services.api_token_create(project=project, name="bench", user=None)[1]
    fleet.reset_peaks()
    client = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=120)
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"}
    start = time.perf_counter()
    for body in bodies:
        client.request("POST", "/v1/traces", body, headers)
        response = client.getresponse()
        response.read()
        assert response.status == 200, response.status
    accepted = time.perf_counter()
    client.close()
    while True:
        connection.close()  # a fresh snapshot each poll
        if (
            OtlpSpan.objects.filter(project=project).count() == spans
            and not OtlpSpan.objects.filter(project=project, built=False).exists()
            and not OtlpPendingBuild.objects.filter(project=project).exists()
        ):
            break
        time.sleep(0.05)
    done = time.perf_counter()
    steps = sum(project.traces.values_list("step_count", flat=True))
    return {
        "scenario": name,
        "requests": len(bodies),
        "spans": spans,
        "steps": steps,
        "accepted_spans_per_s": round(spans / (accepted - start)),
        "queryable_spans_per_s": round(spans / (done - start)),
        "seconds_total": round(done - start, 2),
        "seconds_after_last_request": round(done - accepted, 2),
        "peak_rss": fleet.peak_report(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (solo pool)")
    parser.add_argument("--web", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--scenarios", default="wide,long,huge")
    parser.add_argument(
        "--shared-corpus", type=Path, help="a folder written by ../shared/bench/otlp_corpus.py"
    )
    args = parser.parse_args()
    _django.setup()
    print(f"machine: {_django.machine()}; gunicorn x{args.web}, Celery workers x{args.workers}", flush=True)
    work = (
        [("shared", *shared_corpus(args.shared_corpus))]
        if args.shared_corpus
        else [(name, *scenario(name)) for name in args.scenarios.split(",")]
    )
    with tempfile.TemporaryDirectory() as folder:
        fleet = Fleet(args.web, args.workers, Path(folder) / "processes.log")
        try:
            for name, bodies, spans in work:
                print(json.dumps(run(fleet, name, bodies, spans)), flush=True)
        finally:
            fleet.stop()


if __name__ == "__main__":
    main()
