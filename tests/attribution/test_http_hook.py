"""The HTTP replay hook, against a real HTTP server on 127.0.0.1 that implements the contract.

The server's tiny deterministic "system": the run answers correctly iff some corrected content contains "correct".
Each test can script the server's next answers (a status, a raw body, a delay) before it falls back to the contract.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from attribution.methods.base import StepView, TraceView
from attribution.replay import hook_contract as contract
from attribution.replay.base import Budget, BudgetExhausted, ReplayError
from attribution.replay.http_hook import HttpHookReplayer, backoff_delays, redact_url

SECRET = "Bearer s3cr3t-t0ken-do-not-leak"


class Hook:
    """What the test server saw and what it will answer next."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # {"path", "headers", "body", "json"}
        self.script: deque = deque()  # next answers: {"status", "body", "delay", "json"}
        self.url = ""
        self.lock = threading.Lock()

    def answer(self, payload: dict) -> dict:
        if payload.get("action") == "propose":
            return {"content": f"correct action for step {payload['index']}"}
        fixed = [c for c in payload["corrections"] if "correct" in c["content"]]
        success = bool(fixed)
        first = payload["corrections"][0]
        answer = payload["trace"]["ground_truth"] if success else "41"
        return {
            "continuation": [
                {"agent": first["agent"], "kind": "message", "content": first["content"]},
                {
                    "agent": "calculator",
                    "kind": "tool_call",
                    "content": f"calc({answer})",
                    "tool_name": "calc",
                },
                {"agent": "calculator", "kind": "tool_result", "content": answer, "tool_name": "calc"},
                {"agent": "planner", "kind": "message", "content": f"FINAL ANSWER: {answer}"},
            ],
            "outcome": "success" if success else "failure",
            "final_answer": answer,
            "cost_usd": 0.01,
        }


def _handler(hook: Hook):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            with hook.lock:
                hook.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": raw, "json": payload}
                )
                step = hook.script.popleft() if hook.script else {}
            if step.get("delay"):
                time.sleep(step["delay"])
            status = step.get("status", 200)
            if "body" in step:
                body = step["body"]
            elif "json" in step:
                body = json.dumps(step["json"]).encode()
            elif status == 200:
                body = json.dumps(hook.answer(payload)).encode()
            else:
                body = json.dumps({"error": f"status {status}"}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):  # a client that hangs up (timeouts, retries) is expected
        pass


@contextlib.contextmanager
def serving(state: Hook, path: str = "/culprit/replay"):
    """Run ``state`` as a real HTTP server on 127.0.0.1 for the block; ``state.url`` is its hook URL."""
    server = QuietServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def hook():
    with serving(Hook()) as state:
        yield state


@pytest.fixture
def trace():
    steps = (
        StepView(0, "planner", "message", "Find the population of Arbel.", speaker="planner"),
        StepView(
            1,
            "researcher",
            "tool_call",
            "lookup(Arbel, population)",
            speaker="researcher",
            tool_name="lookup",
        ),
        StepView(2, "", "tool_result", "Arbel: 120000", tool_name="lookup"),
        StepView(3, "researcher", "message", "Arbel has 210000 people.", speaker="researcher"),
        StepView(4, "planner", "message", "FINAL ANSWER: 210000", speaker="planner"),
    )
    return TraceView(
        trace_id=7,
        name="demo/run-7",
        question="What is the population of Arbel?",
        ground_truth="120000",
        outcome="failure",
        steps=steps,
        agents=("planner", "researcher"),
        system_prompts={"planner": "You plan."},
    )


def replayer(hook: Hook, **kwargs) -> HttpHookReplayer:
    kwargs.setdefault("auth_header", SECRET)
    kwargs.setdefault("backoff", 0.01)
    return HttpHookReplayer(hook.url, **kwargs)


def test_a_replay_round_trip_sends_the_contract_with_the_auth_header_and_returns_the_continuation(
    hook, trace
):
    budget = Budget(max_replays=5, max_cost=1.0)
    result = replayer(hook, timeout=5).replay(
        trace, {3: "Arbel has 120000 people, the correct figure."}, budget=budget
    )

    assert len(hook.requests) == 1
    sent = hook.requests[0]
    assert sent["path"] == "/culprit/replay"
    assert sent["headers"]["Authorization"] == SECRET
    assert sent["headers"]["Content-Type"] == "application/json"
    assert len(sent["headers"]["Idempotency-Key"]) == 64
    request = contract.ReplayRequest.model_validate(sent["json"])  # the body is the contract, strictly
    assert request.version == "culprit.replay/1"
    assert request.trace.id == 7 and request.trace.ground_truth == "120000"
    assert request.trace.agents == ["planner", "researcher"]
    assert [s.index for s in request.prefix] == [0, 1, 2]
    assert request.prefix[1].tool_name == "lookup" and request.prefix[2].kind == "tool_result"
    assert [(c.index, c.agent) for c in request.corrections] == [(3, "researcher")]
    assert request.limits.max_cost_usd == pytest.approx(1.0) and request.limits.timeout_s == 5
    assert set(sent["json"]) == {"version", "action", "trace", "prefix", "corrections", "limits"}

    assert result.outcome == "success" and result.final_answer == "120000"
    assert [s["index"] for s in result.continuation] == [3, 4, 5, 6]
    assert result.continuation[0]["content"].startswith("Arbel has 120000")
    assert result.continuation[1]["kind"] == "tool_call" and result.continuation[1]["tool_name"] == "calc"
    assert set(result.continuation[0]) >= {"index", "agent", "kind", "content", "tool_name"}
    assert result.cost == pytest.approx(0.01)
    assert budget.replays == 1 and budget.cost == pytest.approx(0.01)
    assert result.details["attempts"] == 1


def test_a_correction_that_does_not_fix_the_run_comes_back_as_a_failure(hook, trace):
    result = replayer(hook).replay(trace, {1: "lookup(Arbel, founded)", 4: "FINAL ANSWER: 5"})
    assert result.outcome == "failure" and result.final_answer == "41"
    request = hook.requests[0]["json"]
    assert [s["index"] for s in request["prefix"]] == [0]
    assert [c["index"] for c in request["corrections"]] == [1, 4]
    assert result.continuation[0]["index"] == 1


def test_propose_asks_the_hook_for_a_corrected_action_with_the_prefix_before_that_step(hook, trace):
    content = replayer(hook).propose(trace, 3)
    assert content == "correct action for step 3"
    request = contract.ProposeRequest.model_validate(hook.requests[0]["json"])
    assert request.action == "propose" and request.index == 3
    assert [s.index for s in request.prefix] == [0, 1, 2]
    assert hook.requests[0]["headers"]["Authorization"] == SECRET


def test_a_slow_hook_times_out_is_retried_and_then_fails_with_a_replay_error(hook, trace):
    hook.script.extend([{"delay": 1.5}] * 3)
    started = time.monotonic()
    with pytest.raises(ReplayError) as caught:
        replayer(hook, timeout=0.3, retries=2).replay(trace, {3: "correct"})
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "timed out" in message and "3 attempts" in message and hook.url in message
    assert len(hook.requests) == 3
    keys = {r["headers"]["Idempotency-Key"] for r in hook.requests}
    assert len(keys) == 1  # a retry resends the very same body
    assert SECRET not in message and "s3cr3t" not in message


def test_a_hook_that_answers_503_twice_then_200_succeeds_after_exactly_three_requests(hook, trace):
    hook.script.extend([{"status": 503}, {"status": 503}])
    result = replayer(hook, retries=2).replay(trace, {3: "the correct figure"})
    assert result.outcome == "success" and result.details["attempts"] == 3
    assert len(hook.requests) == 3
    assert hook.requests[0]["body"] == hook.requests[2]["body"]


@pytest.mark.parametrize("status", [429, 502, 504])
def test_every_transient_status_is_retried(hook, trace, status):
    hook.script.append({"status": status})
    assert replayer(hook).replay(trace, {3: "correct"}).outcome == "success"
    assert len(hook.requests) == 2


def test_a_hook_that_stays_unavailable_fails_after_the_retries_naming_the_status(hook, trace):
    hook.script.extend([{"status": 503}] * 3)
    with pytest.raises(ReplayError, match=r"HTTP 503 \(gave up after 3 attempts\)"):
        replayer(hook, retries=2).replay(trace, {3: "correct"})
    assert len(hook.requests) == 3


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"body": b"<html>oops</html>"}, "not valid JSON"),
        ({"body": b"[1, 2, 3]"}, "must be a JSON object"),
        (
            {"json": {"continuation": [], "outcome": "success", "final_answer": "1", "cost_usd": "free"}},
            "cost_usd",
        ),
        (
            {"json": {"continuation": [], "outcome": "success", "final_answer": 120000, "cost_usd": 0}},
            "final_answer",
        ),
        ({"json": {"continuation": [], "outcome": "maybe", "final_answer": "1", "cost_usd": 0}}, "outcome"),
        (
            {
                "json": {
                    "continuation": [{"agent": "a", "kind": "shout", "content": "x"}],
                    "outcome": "failure",
                    "final_answer": "1",
                    "cost_usd": 0,
                }
            },
            "continuation.0.kind",
        ),
        (
            {"json": {"continuation": "none", "outcome": "failure", "final_answer": "1", "cost_usd": 0}},
            "continuation",
        ),
        (
            {"json": {"outcome": "failure", "final_answer": "1", "cost_usd": 0}},
            "continuation: Field required",
        ),
        (
            {"json": {"continuation": [], "outcome": "failure", "final_answer": "1", "cost_usd": -1}},
            "cost_usd",
        ),
    ],
)
def test_a_response_that_breaks_the_contract_is_a_replay_error_naming_the_problem_and_is_not_retried(
    hook, trace, answer, problem
):
    hook.script.append(answer)
    with pytest.raises(ReplayError) as caught:
        replayer(hook).replay(trace, {3: "correct"})
    message = str(caught.value)
    assert problem in message and hook.url in message and "\n" not in message
    assert len(hook.requests) == 1


def test_a_propose_answer_without_content_is_a_replay_error(hook, trace):
    hook.script.append({"json": {"text": "x"}})
    with pytest.raises(ReplayError, match="content: Field required"):
        replayer(hook).propose(trace, 3)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
def test_a_client_error_or_plain_server_error_is_not_retried(hook, trace, status):
    hook.script.append({"status": status, "body": b'{"error": "unknown trace"}'})
    with pytest.raises(ReplayError) as caught:
        replayer(hook).replay(trace, {3: "correct"})
    # The status, never the body: a hook URL pointed at some internal page must not show that page in a verdict.
    assert f"the hook answered HTTP {status}" in str(caught.value) and "unknown trace" not in str(
        caught.value
    )
    assert len(hook.requests) == 1


def test_a_body_over_five_megabytes_is_refused_without_retry(hook, trace):
    hook.script.append({"body": b'{"final_answer": "' + b"x" * (5 * 1024 * 1024) + b'"}'})
    with pytest.raises(ReplayError, match="over the 5 MB limit"):
        replayer(hook).replay(trace, {3: "correct"})
    assert len(hook.requests) == 1


def test_a_continuation_longer_than_max_steps_is_refused(hook, trace):
    with pytest.raises(ReplayError, match="4 steps, over the limit of 2"):
        replayer(hook, max_steps=2).replay(trace, {3: "correct"})
    assert hook.requests[0]["json"]["limits"]["max_steps"] == 2


def test_a_refused_connection_is_retried_and_then_reported(trace):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ReplayError, match="could not connect.*gave up after 2 attempts"):
        HttpHookReplayer(f"http://127.0.0.1:{port}/hook", retries=1, backoff=0.01).replay(
            trace, {3: "correct"}
        )


def test_the_auth_header_value_never_appears_in_an_error_message(hook, trace):
    # The hook echoes the token back in an error body and in a non-JSON body; the URL also carries it as credentials.
    hook.script.append({"status": 401, "body": json.dumps({"error": f"bad token {SECRET}"}).encode()})
    hook.script.append({"body": SECRET.encode()})
    hook.script.append({"delay": 0.6})
    with_credentials = hook.url.replace("http://", "http://user:s3cr3t-t0ken-do-not-leak@")
    messages = []
    for url in (hook.url, hook.url, with_credentials):
        hook_replayer = HttpHookReplayer(url, auth_header=SECRET, retries=0, timeout=0.2)
        with pytest.raises(ReplayError) as caught:
            hook_replayer.replay(trace, {3: "correct"})
        messages.append(str(caught.value))
        assert "s3cr3t" not in repr(hook_replayer)
    assert "HTTP 401" in messages[0] and "not valid JSON" in messages[1] and "timed out" in messages[2]
    assert [r["headers"]["Authorization"] for r in hook.requests[:2]] == [SECRET, SECRET]
    for message in messages:
        assert "s3cr3t-t0ken-do-not-leak" not in message


def test_an_exhausted_budget_stops_the_replay_before_any_request(hook, trace):
    budget = Budget(max_replays=1)
    replayer(hook).replay(trace, {3: "correct"}, budget=budget)
    with pytest.raises(BudgetExhausted):
        replayer(hook).replay(trace, {3: "correct"}, budget=budget)
    assert len(hook.requests) == 1


def test_corrections_outside_the_trace_are_refused_without_a_request(hook, trace):
    with pytest.raises(ReplayError, match="step 9 is not in trace"):
        replayer(hook).replay(trace, {9: "correct"})
    with pytest.raises(ReplayError, match="at least one corrected step"):
        replayer(hook).replay(trace, {})
    assert hook.requests == []


def test_the_backoff_doubles_from_half_a_second_and_urls_are_shown_without_credentials():
    assert backoff_delays(3) == [0.5, 1.0, 2.0]
    assert backoff_delays(0) == []
    assert (
        redact_url("https://u:p@hooks.example.com:8443/replay?token=x")
        == "https://hooks.example.com:8443/replay"
    )
    with pytest.raises(ValueError):
        HttpHookReplayer("ftp://example.com/hook")


def test_the_contract_publishes_json_schemas_for_the_openapi_document():
    request = contract.request_schema()
    assert set(request["required"]) >= {"trace", "prefix", "corrections", "limits"}
    response = contract.response_schema()
    assert set(response["required"]) == {"continuation", "outcome", "final_answer", "cost_usd"}
    assert response["properties"]["outcome"]["enum"] == list(contract.OUTCOMES)
    components = contract.openapi_components()
    assert {
        "ReplayRequest",
        "ProposeRequest",
        "ReplayResponse",
        "ProposeResponse",
        "ContinuationStep",
    } <= set(components)
    assert "#/components/schemas/" in json.dumps(components["ReplayResponse"])
    assert set(contract.STEP_KINDS) == {
        "message",
        "thought",
        "llm_call",
        "tool_call",
        "tool_result",
        "human",
        "system",
    }


@pytest.mark.django_db
def test_the_hook_contract_is_published_in_the_openapi_document(client):
    schema = client.get("/api/openapi.json").json()
    hook = schema["webhooks"]["replayHook"]["post"]
    assert {"$ref": "#/components/schemas/ReplayRequest"} in hook["requestBody"]["content"][
        "application/json"
    ]["schema"]["oneOf"]
    components = schema["components"]["schemas"]
    for name in ("ReplayRequest", "ProposeRequest", "ReplayResponse", "ProposeResponse", "ContinuationStep"):
        assert name in components, name
    assert set(components["ReplayResponse"]["properties"]) >= {
        "continuation",
        "outcome",
        "final_answer",
        "cost_usd",
    }
