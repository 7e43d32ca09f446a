"""Replays through the user's own multi-agent system, reached over HTTP (the contract is in ``hook_contract``).

``HttpHookReplayer(url, auth_header=..., timeout=..., retries=...)`` POSTs a replay request (the trace, the prefix
before the first corrected step, the corrections and the limits) and turns the validated response into a
``ReplayResult``; ``propose`` POSTs a ``propose`` request to the same URL and returns the hook's corrected content.
Transient failures (a failed connection, timeouts, HTTP 429/502/503/504) are retried with exponential backoff;
everything else -- another HTTP error, a body that is not the contract -- raises ``ReplayError`` at once with one line
naming the URL and the problem. The auth header's value never appears in an error, a log or ``details``.

Every connection passes the outbound policy (``attribution.outbound``): a hook at a loopback, private or metadata
address is refused unless the deployment allows it. Errors say what happened ("HTTP 500", "could not connect") and
never quote the response body or tell a refused port from a reset one: otherwise the verdict page would be a window
onto, and a port scanner of, whatever the worker can reach.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ValidationError

from .. import outbound
from . import hook_contract as contract
from .base import Budget, ReplayError, ReplayResult

if TYPE_CHECKING:
    from ..methods.base import TraceView

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class _Transient(Exception):
    """One attempt failed in a way worth retrying; the message says how."""


def redact_url(url: str) -> str:
    """The URL without credentials or query string, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def backoff_delays(retries: int, base: float = 0.5) -> list[float]:
    """The pause before each retry: base, 2·base, 4·base, …"""
    return [base * 2**n for n in range(max(retries, 0))]


class HttpHookReplayer:
    """The ``Replayer`` for a project's HTTP replay hook."""

    name = "http_hook"

    def __init__(
        self,
        url: str,
        *,
        auth_header: str | None = None,
        timeout: float = 30,
        retries: int = 2,
        auth_header_name: str = "Authorization",
        max_steps: int = 200,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            outbound.check_scheme(url)
        except outbound.OutboundRefused:
            raise ValueError(f"replay hook URL must be an http(s) URL, got {redact_url(url)!r}") from None
        if timeout <= 0 or retries < 0 or max_steps < 1:
            raise ValueError("replay hook needs timeout > 0, retries >= 0 and max_steps >= 1")
        self.url = url
        self.display_url = redact_url(url)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_steps = int(max_steps)
        self.backoff = backoff
        self._auth_name = auth_header_name
        self._auth = auth_header or None
        self._transport = transport

    def __repr__(self) -> str:  # never shows the auth header
        return f"HttpHookReplayer({self.display_url!r}, timeout={self.timeout}, retries={self.retries})"

    # -- the protocol --

    def propose(self, trace: TraceView, index: int) -> str:
        if not 0 <= index < len(trace.steps):
            raise ReplayError(f"step {index} is not in trace {trace.name!r} ({len(trace.steps)} steps)")
        try:
            request = contract.ProposeRequest(trace=_trace(trace), prefix=_prefix(trace, index), index=index)
        except ValidationError as exc:
            raise ReplayError(
                f"trace {trace.name!r} cannot be sent to a replay hook: {_describe(exc)}"
            ) from None
        response, _ = self._call(request, contract.ProposeResponse)
        return response.content

    def replay(
        self, trace: TraceView, corrections: dict[int, str], *, budget: Budget | None = None
    ) -> ReplayResult:
        if not corrections:
            raise ReplayError("a replay needs at least one corrected step")
        for i in corrections:
            if not 0 <= i < len(trace.steps):
                raise ReplayError(f"step {i} is not in trace {trace.name!r} ({len(trace.steps)} steps)")
        max_cost = None
        if budget is not None:
            budget.charge(0.0)  # refuses when the replay or cost limit is already reached
            if budget.max_cost is not None:
                max_cost = max(budget.max_cost - budget.cost, 0.0)
        first = min(corrections)
        try:
            request = self._replay_request(trace, corrections, first, max_cost)
        except ValidationError as exc:
            raise ReplayError(
                f"trace {trace.name!r} cannot be sent to a replay hook: {_describe(exc)}"
            ) from None
        response, attempts = self._call(request, contract.ReplayResponse)
        if len(response.continuation) > self.max_steps:
            raise ReplayError(
                f"replay hook {self.display_url}: continuation has {len(response.continuation)} "
                f"steps, over the limit of {self.max_steps}"
            )
        if budget is not None:
            budget.cost += response.cost_usd
        continuation = [
            {
                "index": first + k,
                "agent": s.agent,
                "kind": s.kind,
                "content": s.content,
                "speaker": s.agent,
                "recipient": "",
                "tool_name": s.tool_name,
                "parent": None,
            }
            for k, s in enumerate(response.continuation)
        ]
        return ReplayResult(
            continuation=continuation,
            outcome=response.outcome,
            final_answer=response.final_answer,
            cost=response.cost_usd,
            details={"hook": self.display_url, "attempts": attempts},
        )

    def _replay_request(
        self, trace: TraceView, corrections: dict[int, str], first: int, max_cost: float | None
    ) -> contract.ReplayRequest:
        return contract.ReplayRequest(
            trace=_trace(trace),
            prefix=_prefix(trace, first),
            corrections=[
                contract.Correction(index=i, agent=trace.steps[i].agent, content=corrections[i])
                for i in sorted(corrections)
            ],
            limits=contract.Limits(max_steps=self.max_steps, max_cost_usd=max_cost, timeout_s=self.timeout),
        )

    # -- HTTP --

    def _call(self, request: BaseModel, expect: type[BaseModel]) -> tuple[Any, int]:
        body = request.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": hashlib.sha256(body).hexdigest(),
            "User-Agent": "culprit-replay-hook/1",
        }
        if self._auth:
            headers[self._auth_name] = self._auth
        delays = backoff_delays(self.retries, self.backoff)
        problem = ""
        try:
            outbound.check_url(self.url)  # refused before the first attempt, with no retries
        except outbound.OutboundRefused as exc:
            raise self._error(f"refused by the outbound policy: {exc}") from None
        with self._client() as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(delays[attempt - 1])
                try:
                    status, raw = self._post(client, body, headers)
                except _Transient as exc:
                    problem = str(exc)
                    continue
                return self._parse(status, raw, expect), attempt + 1
        raise self._error(f"{problem} (gave up after {self.retries + 1} attempts)")

    def _client(self) -> httpx.Client:
        # No redirects: the contract has none, and a redirect is the easiest way around a policy check.
        if self._transport is not None:  # a test's transport
            return httpx.Client(timeout=self.timeout, follow_redirects=False, transport=self._transport)
        return outbound.guarded_client(timeout=self.timeout)

    def _post(self, client: httpx.Client, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        deadline = time.monotonic() + self.timeout
        try:
            with client.stream("POST", self.url, content=body, headers=headers) as response:
                if response.status_code in TRANSIENT_STATUSES:
                    raise _Transient(f"HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isascii() and declared.isdigit() and int(declared) > contract.MAX_RESPONSE_BYTES:
                    raise self._error(f"response body of {int(declared)} bytes is over the 5 MB limit")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > contract.MAX_RESPONSE_BYTES:
                        raise self._error("response body is over the 5 MB limit")
                    if time.monotonic() > deadline:
                        raise _Transient(f"timed out after {self.timeout:g} s")
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks)
        except outbound.OutboundRefused as exc:  # at connect time: the name now resolves somewhere refused
            raise self._error(f"refused by the outbound policy: {exc}") from None
        except httpx.TimeoutException:
            raise _Transient(f"timed out after {self.timeout:g} s") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError):
            # One message for refused, unreachable and reset: telling them apart would make the hook a port scanner.
            raise _Transient(
                "could not connect, or the connection closed before a complete response"
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(f"request failed ({type(exc).__name__})") from None

    def _parse(self, status: int, raw: bytes, expect: type[BaseModel]) -> Any:
        if not 200 <= status < 300:
            # The status only: a body quoted here would show whatever service the hook URL points at.
            raise self._error(f"the hook answered HTTP {status}")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self._error("response is not valid JSON") from None
        if not isinstance(data, dict):
            raise self._error(f"response must be a JSON object, got {type(data).__name__}")
        try:
            return expect.model_validate(data)
        except ValidationError as exc:
            raise self._error("response does not match the contract: " + _describe(exc)) from None

    def _error(self, problem: str) -> ReplayError:
        message = f"replay hook {self.display_url}: {problem}"
        if self._auth:
            message = message.replace(self._auth, "***")
        return ReplayError(" ".join(message.split()))


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _trace(trace: TraceView) -> contract.HookTrace:
    return contract.HookTrace(
        id=trace.trace_id,
        name=trace.name,
        question=trace.question,
        ground_truth=trace.ground_truth,
        agents=list(trace.agents),
        system_prompts=dict(trace.system_prompts),
    )


def _prefix(trace: TraceView, end: int) -> list[contract.PrefixStep]:
    return [
        contract.PrefixStep(
            index=s.index, agent=s.agent, kind=s.kind, content=s.content, tool_name=s.tool_name
        )
        for s in trace.steps[:end]
    ]
