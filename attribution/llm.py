"""The one way attribution methods reach a model.

``LlmClient`` wraps a ``litellm.Router`` built from the project's settings (``timeout`` per attempt, no retries of
its own). What this module adds on top:

- Retries of rate limits, server errors, timeouts and lost connections (``num_retries``): after the server's
  Retry-After up to ``CULPRIT_LLM_MAX_RETRY_AFTER`` seconds (default 300), else exponential backoff.
- JSON answers checked by the method's validator; an invalid answer is sent back once with the reason, a second
  invalid one fails the call (``InvalidAnswer``).
- A Redis response cache keyed by model, endpoint, messages and temperature. Only validated answers are stored.
- Accounting: one ``LlmCall`` row per attempt that reached the provider, per final failure and per cache hit (tokens,
  cost, latency, error; never the prompt or the key), running totals the methods copy into their result (cache hits
  counted apart, never as calls), and budgets (the project's spending cap, a run's or a campaign's tokens and money)
  that every attempt reserves from before it is sent: its counted prompt plus its maximum output, exact however
  many workers share the budget (``attribution.llm_budget``). An attempt that reached the server and failed (429,
  500, timeout) has no usage from the provider: its prompt tokens are counted here and its row is ``estimated``.
  Prices come from the model page, else litellm's map; a model with neither is capped by tokens only.
- Context arithmetic: the model's window and maximum output (the model page, else litellm's map, else 8k), token
  counts, and splitting a trace into windows that fit. A prompt that would not fit is never sent.

The API key is decrypted only when the client is built and lives in the Router's deployment; it is scrubbed from
every error text this module records or raises. Which key a call carries (``provider_key``): the project's own; else,
only for providers the deployment names in ``CULPRIT_SERVER_KEYS_FOR`` and only without a custom ``api_base``, the
server's; else a placeholder that is no secret. A key is always passed explicitly, because litellm given none reads
``OPENAI_API_KEY`` and friends from the worker's environment and would send them to whatever ``api_base`` a project
chose. Every connection litellm opens passes the outbound policy (``attribution.outbound``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import llm_budget, outbound, prompts
from .llm_budget import BudgetExceeded, Limit
from .llm_cache import (  # ResponseCache, cache_from_settings: re-exported
    ResponseCache,
    cache_from_settings,
    cache_key,
)
from .llm_provider import (  # provider_key, model_limits, model_prices, retry_wait, NO_KEY: re-exported
    NO_KEY,
    _outbound_refusal,
    _reached_server,
    _retryable,
    _supports_json_mode,
    litellm,
    model_limits,
    model_prices,
    provider_key,
    retry_wait,
)
from .methods.base import MethodError, StepView, TraceView
from .models import AttributionRun, LlmCall, ProjectLlmSettings

if TYPE_CHECKING:
    from tracing.models import Project, Trace

logger = logging.getLogger(__name__)


# The Router's name for the single deployment a client talks to.
_GROUP = "culprit-judge"
# The answer a method asks for is one small JSON object; 1,500 tokens leave room for a long reason.
ANSWER_TOKENS = 1500
# When neither the model page nor litellm's model map gives the window (a local Ollama or vLLM model), assume 8k: the
# smallest window of the chat models people run locally today, so a trace split for it fits any of them. The model
# page says the window is unknown and asks for it.
FALLBACK_CONTEXT_TOKENS = 8192
# Below this many tokens for the trace itself a window holds too little of it to judge anything.
MIN_WINDOW_TOKENS = 256


class InvalidAnswer(MethodError):
    """The model answered twice, and neither answer passed the method's validator."""


class PromptTooLong(MethodError):
    """A prompt that, with the answer it asks for, would not fit the model's context: it is never sent."""


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.calls - other.calls,
            self.cached_calls - other.cached_calls,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
            round(self.cost - other.cost, 8),
        )


class Window(tuple):
    """A window of a trace: ``(first, last)`` step indices, both inclusive. A step too long for one window fills
    ``parts`` windows of its own (``first == last``); ``part`` says which slice of it this one holds."""

    part: int
    parts: int

    def __new__(cls, first: int, last: int, part: int = 1, parts: int = 1) -> Window:
        window = super().__new__(cls, (first, last))
        window.part, window.parts = part, parts
        return window

    @property
    def first(self) -> int:
        return self[0]

    @property
    def last(self) -> int:
        return self[1]


@dataclass
class _Reply:
    text: str
    input_tokens: int
    output_tokens: int
    cost: float
    latency_ms: int
    cached: bool
    cache_key: str
    row_id: int | None = None  # the attempt's reserved ``LlmCall`` row, settled when the answer is recorded


class LlmClient:
    def __init__(
        self,
        *,
        model: str,
        api_base: str = "",
        api_key: str = "",
        temperature: float = 0.0,
        timeout: float = 120,
        num_retries: int = 3,
        retry_after: float = 0,
        project: Project | None = None,
        run: AttributionRun | None = None,
        trace: Trace | int | None = None,
        method: str = "",
        spending_cap: Decimal | float | None = None,
        cache: ResponseCache | None = None,
        context_tokens: int | None = None,
        max_output_tokens: int | None = None,
        input_price_per_mtok: Decimal | float | None = None,
        output_price_per_mtok: Decimal | float | None = None,
        limits: Sequence[Limit] = (),
        campaign_id: int | None = None,
    ) -> None:
        if not model:
            raise MethodError("no model given")
        self.model, self.api_base, self.temperature = model, api_base, temperature
        self.project_id = project.pk if project is not None else None
        self.run_id = run.pk if run is not None else None
        self.trace_id = trace if isinstance(trace, int) or trace is None else trace.pk
        self.method = method
        self.spending_cap = Decimal(str(spending_cap)) if spending_cap is not None else None
        self.cache = cache
        self._context_override = context_tokens
        self._output_override = max_output_tokens
        self.num_retries = num_retries
        self.campaign_id = campaign_id
        # Prices given on the model page win over litellm's map; a model with neither has no known price.
        self.prices = (
            None
            if input_price_per_mtok is None or output_price_per_mtok is None
            else (float(input_price_per_mtok) / 1e6, float(output_price_per_mtok) / 1e6)
        )
        self.limits = list(limits)
        if self.spending_cap is not None and self.project_id is not None:
            self.limits.append(
                Limit("spending cap", {"project_id": self.project_id}, max_cost=self.spending_cap)
            )
        api_key = provider_key(model=model, api_base=api_base, project_key=api_key)
        if api_base:
            try:
                outbound.check_url(api_base)
            except outbound.OutboundRefused as exc:
                raise MethodError(f"the model's api_base is refused by the outbound policy: {exc}") from None
        self._secret = "" if api_key == NO_KEY else api_key
        self._json_mode = _supports_json_mode(model)
        self.totals = Usage()
        self.timeout = timeout
        # The Router times out each attempt; retries are ours (``_send``), because litellm's own ignore a
        # Retry-After over 60 s. Cooldowns are off: with one deployment a cooldown would turn the next trace's call
        # into "no deployments available" instead of trying the provider again.
        self.retry_after = retry_after
        self.router = litellm.Router(
            model_list=[
                {
                    "model_name": _GROUP,
                    "litellm_params": {
                        "model": model,
                        "api_key": api_key,
                        "api_base": api_base or None,
                        "timeout": timeout,
                        "drop_params": True,
                        "max_retries": 0,
                    },
                }
            ],
            num_retries=0,
            timeout=timeout,
            disable_cooldowns=True,
        )

    @classmethod
    def for_project(
        cls,
        project: Project,
        *,
        run: AttributionRun | None = None,
        trace: Trace | int | None = None,
        method: str = "",
        extra_limits: Sequence[Limit] = (),
        campaign_id: int | None = None,
    ) -> LlmClient:
        """A client for the project's model settings; a run that fixed its own model keeps it. The run's budget
        (model page) is checked before each request, with ``extra_limits`` (a campaign's) beside it."""
        from .crypto import DecryptionError, decrypt

        row = ProjectLlmSettings.objects.filter(project=project).first() or ProjectLlmSettings(
            project=project
        )
        model = (run.model if run is not None and run.model else "") or row.model
        if not model:
            raise MethodError(
                f"no model is configured for project {project}: choose one on the project's LLM settings page"
            )
        try:
            key = decrypt(row.api_key_encrypted) if row.api_key_encrypted else ""
        except DecryptionError as exc:
            raise MethodError(f"the project's API key cannot be used: {exc}") from None
        limits = list(extra_limits)
        if run is not None and (row.run_max_tokens or row.run_max_cost_usd is not None):
            limits.append(Limit("run budget", {"run_id": run.pk}, row.run_max_tokens, row.run_max_cost_usd))
        return cls(
            model=model,
            api_base=row.api_base,
            api_key=key,
            temperature=row.temperature,
            timeout=row.timeout_seconds,
            num_retries=row.max_retries,
            project=project,
            run=run,
            trace=trace,
            method=method,
            spending_cap=row.spending_cap_usd,
            cache=cache_from_settings(),
            context_tokens=row.context_tokens,
            max_output_tokens=row.max_output_tokens,
            input_price_per_mtok=row.input_price_per_mtok,
            output_price_per_mtok=row.output_price_per_mtok,
            limits=limits,
            campaign_id=campaign_id,
        )

    def __repr__(self) -> str:  # never the key
        return f"LlmClient(model={self.model!r}, api_base={self.api_base!r})"

    # --- asking ------------------------------------------------------------------------------------------------------

    def complete_json(
        self, *, system: str, user: str, purpose: str, validate: Callable[[dict[str, Any]], str | None]
    ) -> dict[str, Any]:
        """The model's answer as a JSON object that passed ``validate``; one retry with the validator's complaint."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        answer, error, text = self._ask(messages, purpose, validate)
        if error is None:
            return answer
        messages += [
            {"role": "assistant", "content": text},
            {"role": "user", "content": prompts.retry(error)},
        ]
        answer, error, _ = self._ask(messages, f"{purpose} (retry)", validate)
        if error is None:
            return answer
        raise InvalidAnswer(f"the model gave no valid answer for {purpose} (asked twice): {error}")

    def _ask(
        self, messages: list[dict[str, str]], purpose: str, validate: Callable[[dict[str, Any]], str | None]
    ) -> tuple[dict[str, Any], str | None, str]:
        reply = self._complete(messages, purpose)
        try:
            answer = first_json_object(reply.text)
            error = validate(answer)
        except ValueError as exc:
            answer, error = {}, str(exc)
        self._record(
            purpose, reply, ok=error is None, error="" if error is None else f"invalid answer: {error}"
        )
        if error is None and not reply.cached and self.cache is not None:
            self.cache.put(reply.cache_key, {"text": reply.text})
        return answer, error, reply.text

    def _complete(self, messages: list[dict[str, str]], purpose: str) -> _Reply:
        key = cache_key(
            model=self.model, api_base=self.api_base, messages=messages, temperature=self.temperature
        )
        started = time.monotonic()
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return _Reply(hit["text"], 0, 0, 0.0, _ms(started), cached=True, cache_key=key)
        answer_tokens = self.answer_tokens()
        prompt_tokens = self.count_message_tokens(messages)
        if prompt_tokens + answer_tokens > self.context_tokens():
            raise PromptTooLong(
                f"the prompt for {purpose} ({prompt_tokens} tokens, with {answer_tokens} for the "
                f"answer) does not fit the context of {self.model} ({self.context_tokens()} tokens)"
            )
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if self._json_mode else {}
        try:
            response, row_id, started = self._send(
                purpose,
                prompt_tokens,
                messages=messages,
                temperature=self.temperature,
                max_tokens=answer_tokens,
                **extra,
            )
        except BudgetExceeded:
            raise
        except Exception as exc:  # every provider failure, after our retries (each attempt is recorded)
            error = self._describe_failure(exc)
            raise MethodError(f"the model provider failed for {purpose} ({self.model}): {error}") from None
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = getattr(response, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return _Reply(
            text,
            input_tokens,
            output_tokens,
            self._cost(response, input_tokens, output_tokens),
            _ms(started),
            cached=False,
            cache_key=key,
            row_id=row_id,
        )

    def _send(self, purpose: str, prompt_tokens: int, **params: Any) -> tuple[Any, int | None, float]:
        """One request through the Router, retried ``num_retries`` times on rate limits, server errors, timeouts and
        lost connections: after the server's Retry-After when it gives one no longer than
        ``CULPRIT_LLM_MAX_RETRY_AFTER`` (default 300 s), else with exponential backoff (1 s, 2 s, 4 s … at most 30 s,
        at least the client's ``retry_after``).

        Every attempt first reserves its prompt and maximum answer against the budgets (``BudgetExceeded`` when one
        would pass its limit, a retry included). An attempt that reached the server and failed is recorded as a call
        of its own with its prompt tokens counted here (``estimated``; no cost: providers do not bill a failed
        request), so the totals are what the server read. Returns the response, its reserved row and when it was
        sent."""
        for attempt in range(self.num_retries + 1):
            row_id = self._reserve(purpose, prompt_tokens, int(params["max_tokens"]))
            started = time.monotonic()
            try:
                return self.router.completion(model=_GROUP, **params), row_id, started
            except Exception as exc:
                final = (
                    not isinstance(exc, _retryable())
                    or attempt >= self.num_retries
                    or _outbound_refusal(exc) is not None
                )
                self._record_attempt(purpose, row_id, prompt_tokens, started, exc, final=final)
                if final:
                    raise
                wait = max(retry_wait(exc, attempt=attempt), self.retry_after)
                logger.warning(
                    "llm request failed (%s), retry %d/%d in %.1f s",
                    type(exc).__name__,
                    attempt + 1,
                    self.num_retries,
                    wait,
                )
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _record_attempt(
        self,
        purpose: str,
        row_id: int | None,
        prompt_tokens: int,
        started: float,
        exc: Exception,
        *,
        final: bool,
    ) -> None:
        """A failed attempt: the prompt tokens the server read (counted here, estimated) when it reached the server;
        nothing when it did not (refused, lost connection), and no row at all for such an attempt that is retried."""
        reached = _reached_server(exc)
        if not reached and not final:
            if row_id is not None:
                llm_budget.discard(row_id)
            return
        error = self._describe_failure(exc) + ("" if final else " (retried)")
        reply = _Reply("", prompt_tokens if reached else 0, 0, 0.0, _ms(started), False, "", row_id)
        self._record(purpose, reply, ok=False, error=error, estimated=reached)

    def _reserve(self, purpose: str, prompt_tokens: int, answer_tokens: int) -> int | None:
        """The attempt's reserved ``LlmCall`` row (None without a project), after every budget was checked with its
        counted prompt plus the most it may answer. A model with no known price is capped by tokens only (its money
        spent is unknown, recorded as 0)."""
        prices = self.unit_prices()
        need_cost = (
            Decimal(str(round(prompt_tokens * prices[0] + answer_tokens * prices[1], 6))) if prices else None
        )
        row = (
            None
            if self.project_id is None
            else self._row_fields(purpose)
            | {"input_tokens": prompt_tokens, "output_tokens": answer_tokens, "cost": need_cost or Decimal(0)}
        )
        return llm_budget.reserve(
            limits=self.limits,
            need_tokens=prompt_tokens + answer_tokens,
            need_cost=need_cost,
            timeout=self.timeout,
            row=row,
        )

    def _row_fields(self, purpose: str) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            "campaign_id": self.campaign_id,
            "method": self.method[:40],
            "purpose": purpose[:80],
            "model": self.model[:200],
        }

    def _cost(self, response: Any, input_tokens: int, output_tokens: int) -> float:
        if self.prices is not None:
            return input_tokens * self.prices[0] + output_tokens * self.prices[1]
        try:
            return float(litellm.completion_cost(completion_response=response, model=self.model) or 0.0)
        except (
            Exception
        ):  # a model litellm has no price for (local models, custom endpoints) costs nothing known
            return 0.0

    def unit_prices(self) -> tuple[float, float] | None:
        """Dollars per input and per output token: the model page's prices, else litellm's, else None (unknown)."""
        return self.prices if self.prices is not None else model_prices(self.model)

    def _record(self, purpose: str, reply: _Reply, *, ok: bool, error: str, estimated: bool = False) -> None:
        # A cache hit is no call: it is counted apart (cached_calls) and costs nothing.
        self.totals = Usage(
            self.totals.calls + (not reply.cached),
            self.totals.cached_calls + reply.cached,
            self.totals.input_tokens + reply.input_tokens,
            self.totals.output_tokens + reply.output_tokens,
            self.totals.cost + reply.cost,
        )
        logger.info(
            "llm call method=%s purpose=%r model=%s ok=%s cached=%s tokens=%d+%d cost=%.6f latency_ms=%d%s",
            self.method,
            purpose,
            self.model,
            ok,
            reply.cached,
            reply.input_tokens,
            reply.output_tokens,
            reply.cost,
            reply.latency_ms,
            f" error={error!r}" if error else "",
        )
        if self.project_id is None:
            return
        fields = {
            "ok": ok,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cost": Decimal(str(round(reply.cost, 6))),
            "latency_ms": reply.latency_ms,
            "error": error[:2000],
            "estimated": estimated,
        }
        if reply.row_id is not None:  # the attempt's reservation becomes its real usage
            llm_budget.settle(reply.row_id, purpose=purpose[:80], **fields)
        else:  # a cache hit (it never reserves)
            LlmCall.objects.create(**self._row_fields(purpose), cached=reply.cached, **fields)

    def _describe_failure(self, exc: Exception) -> str:
        """One line for the error. A provider's own message helps ("Incorrect API key provided"), but a project's
        ``api_base`` may be any server the worker can reach: from there only the error's kind and HTTP status are
        kept, never the body (the outbound policy: no response body in a verdict or error)."""
        if (refused := _outbound_refusal(exc)) is not None:
            return f"refused by the outbound policy: {refused}"
        if self.api_base:
            status = getattr(exc, "status_code", None)
            return type(exc).__name__ + (f" (HTTP {status})" if isinstance(status, int) else "")
        text = str(exc).strip()
        return self._scrub(f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    def usage(self) -> Usage:
        """Running totals since the client was built; a method subtracts the totals it started from."""
        return self.totals

    @property
    def calls(self) -> int:
        return self.totals.calls

    @property
    def input_tokens(self) -> int:
        return self.totals.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.totals.output_tokens

    @property
    def cost(self) -> float:
        return self.totals.cost

    # --- context arithmetic ------------------------------------------------------------------------------------------

    def context_tokens(self) -> int:
        """The model page's context window, else litellm's, else the 8k fallback."""
        return self._context_override or model_limits(self.model)[0] or FALLBACK_CONTEXT_TOKENS

    def answer_tokens(self) -> int:
        """``max_tokens`` of every request: the model page's maximum output, else ANSWER_TOKENS, never more than
        the model's own maximum output (litellm's map) or a quarter of its context."""
        if self._output_override:
            return self._output_override
        known = model_limits(self.model)[1]
        return max(64, min(ANSWER_TOKENS, known or ANSWER_TOKENS, self.context_tokens() // 4))

    def count_tokens(self, text: str) -> int:
        try:
            return int(litellm.token_counter(model=self.model, text=text))
        except Exception:  # no tokenizer for this model: ~4 characters a token in English prose
            return len(text) // 4 + 1

    def count_message_tokens(self, messages: list[dict[str, str]]) -> int:
        """The prompt's tokens as the chat template counts them (a few per message besides the text)."""
        try:
            return int(litellm.token_counter(model=self.model, messages=messages))
        except Exception:  # no tokenizer for this model
            return sum(self.count_tokens(m["content"]) + 4 for m in messages) + 3

    def ping(self, *, purpose: str = "test connection") -> dict[str, Any]:
        """One tiny request (at most 8 tokens of answer): the model's answer, latency and error, for the model
        page's "Test connection". Recorded like any call; never cached."""
        messages = [{"role": "user", "content": "Reply with the single word: ready"}]
        started = time.monotonic()
        try:
            response, row_id, sent = self._send(
                purpose, self.count_message_tokens(messages), messages=messages, temperature=0.0, max_tokens=8
            )
        except BudgetExceeded as exc:
            return {"ok": False, "answer": "", "latency_ms": 0, "error": str(exc)}
        except Exception as exc:  # every provider failure (each attempt is recorded)
            return {
                "ok": False,
                "answer": "",
                "latency_ms": _ms(started),
                "error": self._describe_failure(exc),
            }
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = getattr(response, "usage", None)
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        reply = _Reply(
            text,
            tokens_in,
            tokens_out,
            self._cost(response, tokens_in, tokens_out),
            _ms(sent),
            False,
            "",
            row_id,
        )
        self._record(purpose, reply, ok=True, error="")
        return {"ok": True, "answer": text[:500], "latency_ms": reply.latency_ms, "error": ""}

    def budget(self, reserve: int) -> int:
        """Tokens left for the trace once ``reserve`` (instructions, task, answer) is set aside."""
        room = self.context_tokens() - reserve
        if room < MIN_WINDOW_TOKENS:
            raise MethodError(
                f"the context of {self.model} ({self.context_tokens()} tokens) leaves no room for the "
                f"trace after the instructions ({reserve} tokens)"
            )
        return room

    def windows(self, trace: TraceView, reserve: int) -> list[Window]:
        """Consecutive step ranges covering every step once, each rendering within the context minus ``reserve``.
        A step longer than a window is split over several windows of its own (with a note in each part)."""
        room = self.budget(reserve) - self.count_tokens(prompts.render_trace(trace, [], first=0, last=0))
        out: list[Window] = []
        first, used = 0, 0
        for step in trace.steps:
            size = self.count_tokens(prompts.render_step(step)) + 1  # +1: the newline between steps
            if size > room:
                if step.index > first:
                    out.append(Window(first, step.index - 1))
                parts = self.parts_needed(step, room)
                out.extend(Window(step.index, step.index, k, parts) for k in range(1, parts + 1))
                first, used = step.index + 1, 0
            elif used + size > room:
                out.append(Window(first, step.index - 1))
                first, used = step.index, size
            else:
                used += size
        if first < len(trace.steps):
            out.append(Window(first, len(trace.steps) - 1))
        return out

    def parts_needed(self, step: StepView, room: int) -> int:
        """How many slices a step must be cut into for each to render within ``room`` tokens."""
        size = self.count_tokens(prompts.render_step(step))
        parts = max(2, math.ceil(size / room))
        while parts < len(step.content) and any(
            self.count_tokens(prompts.render_step(step, part=k, parts=parts)) > room
            for k in range(1, parts + 1)
        ):
            parts += max(1, parts // 10)
        return parts

    def render_window(self, trace: TraceView, window: Window) -> str:
        if window.parts > 1:
            step = trace.steps[window.first]
            return prompts.render_trace(
                trace,
                [prompts.render_step(step, part=window.part, parts=window.parts)],
                first=window.first,
                last=window.last,
            )
        return prompts.render_range(trace, window.first, window.last)

    def fit_steps(self, steps: Sequence[StepView], room: int) -> tuple[list[str], bool]:
        """``steps`` rendered within ``room`` tokens: whole when they fit, else every step longer than an even share
        keeps its head and tail with a note of what was left out. Returns the renderings and whether any was cut."""
        whole = [prompts.render_step(s) for s in steps]
        if self.count_tokens("\n".join(whole)) <= room:
            return whole, False
        # Water-filling: the largest per-step character cap whose total fits the room, at this text's density.
        density = max(1.0, sum(len(s.content) for s in steps) / max(1, self.count_tokens("\n".join(whole))))
        target = int(room * density * 0.9)
        cap = _water_level([len(s.content) for s in steps], target)
        while cap > 32:
            rendered = [prompts.render_step(s, max_chars=cap) for s in steps]
            if self.count_tokens("\n".join(rendered)) <= room:
                return rendered, True
            cap = int(cap * 0.8)
        # Too many steps for even their heads: every step keeps 32 characters, and steps are left out from the
        # middle of the list (a note says which) until the rest fits. Never longer than ``room``.
        rendered = [prompts.render_step(s, max_chars=32) for s in steps]
        if self.count_tokens("\n".join(rendered)) <= room:
            return rendered, True
        return self._leave_out_middle(steps, rendered, room), True

    def _leave_out_middle(self, steps: Sequence[StepView], rendered: list[str], room: int) -> list[str]:
        sizes = [self.count_tokens(r) + 1 for r in rendered]
        for keep in range(len(steps) - 1, -1, -1):
            head, tail = (keep + 1) // 2, keep // 2
            gone = steps[head : len(steps) - tail]
            note = (
                f"[steps {gone[0].index} to {gone[-1].index} ({len(gone)} steps) are not shown: the segment is "
                "too long for the model's context]"
            )
            if sum(sizes[:head]) + sum(sizes[len(steps) - tail :]) + self.count_tokens(note) <= room:
                return [*rendered[:head], note, *rendered[len(steps) - tail :]]
        raise PromptTooLong(f"not even a note about the {len(steps)} steps fits in {room} tokens")


# --- helpers ----------------------------------------------------------------------------------------------------------


def first_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in a model's text: bare, fenced in ```json, or after some prose."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise ValueError(f"the answer holds no JSON object: {text[:200]!r}")


def _water_level(sizes: list[int], target: int) -> int:
    """The largest cap c with sum(min(size, c)) <= target."""
    remaining, left = target, len(sizes)
    for size in sorted(sizes):
        if size * left > remaining:
            return max(32, remaining // max(1, left))
        remaining -= size
        left -= 1
    return max(sizes, default=32)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
