"""The one way attribution methods reach a model.

``LlmClient`` wraps a ``litellm.Router`` built from the project's settings. The Router is the only layer that
retries provider errors (``num_retries`` with litellm's exponential backoff, ``timeout`` per attempt); nothing here
loops around it. What this module adds on top:

- JSON answers checked by the method's validator; an invalid answer is sent back once with the reason, a second
  invalid one fails the call (``InvalidAnswer``).
- A Redis response cache keyed by model, endpoint, messages and temperature. Only validated answers are stored.
- Accounting: one ``LlmCall`` row per request or cache hit (tokens, cost, latency, error; never the prompt or the
  key), running totals the methods copy into their result, and the project's spending cap, checked before every
  request that would cost money.
- Context arithmetic: the model's window, token counts, and splitting a trace into windows that fit.

The API key is decrypted only when the client is built and lives in the Router's deployment; it is scrubbed from
every error text this module records or raises. Which key a call carries (``provider_key``): the project's own; else,
only for providers the deployment names in ``CULPRIT_SERVER_KEYS_FOR`` and only without a custom ``api_base``, the
server's; else a placeholder that is no secret. A key is always passed explicitly, because litellm given none reads
``OPENAI_API_KEY`` and friends from the worker's environment and would send them to whatever ``api_base`` a project
chose. Every connection litellm opens passes the outbound policy (``attribution.outbound``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

# Set by the settings too; repeated here because importing litellm without it fetches a price map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import redis
from django.conf import settings
from django.db.models import Sum

from . import outbound, prompts
from .methods.base import MethodError, StepView, TraceView
from .models import AttributionRun, LlmCall, ProjectLlmSettings

if TYPE_CHECKING:
    from tracing.models import Project, Trace

logger = logging.getLogger(__name__)

# litellm prints a "Provider List" banner and debugging hints to stdout on every provider error.
litellm.suppress_debug_info = True
outbound.install_litellm_guard()

# The Router's name for the single deployment a client talks to.
_GROUP = "culprit-judge"
# The answer a method asks for is one small JSON object; 1,500 tokens leave room for a long reason.
ANSWER_TOKENS = 1500
# When litellm's model map does not know the model (a local Ollama or vLLM model), assume an 8k window: the smallest
# window of the chat models people run locally today, so a trace split for it fits any of them.
FALLBACK_CONTEXT_TOKENS = 8192
# Below this many tokens for the trace itself a window holds too little of it to judge anything.
MIN_WINDOW_TOKENS = 256
# Cached answers are kept for 30 days: long enough to re-score a benchmark, short enough to follow model updates.
CACHE_TTL_SECONDS = 30 * 24 * 3600
CACHE_PREFIX = "culprit:llm:v1:"
# Sent when a call has no key of its own: never a secret, and litellm does not look for one in the environment.
NO_KEY = "culprit-no-key"
# Where a provider's server key lives when its name is not simply <PROVIDER>_API_KEY.
_SERVER_KEY_VARS = {"together_ai": "TOGETHERAI_API_KEY", "gemini": "GEMINI_API_KEY", "huggingface": "HF_TOKEN"}
# Providers that authenticate with the machine's ambient cloud credentials (AWS, Google, IBM, Oracle), not an API
# key: litellm signs requests with them whatever key is passed, so they need the deployment's opt-in and can never
# be pointed at a custom api_base.
AMBIENT_CREDENTIAL_PROVIDERS = frozenset({"bedrock", "sagemaker", "sagemaker_chat", "vertex_ai", "vertex_ai_beta",
                                          "watsonx", "watsonx_text", "oci"})


class InvalidAnswer(MethodError):
    """The model answered twice, and neither answer passed the method's validator."""


class BudgetExceeded(MethodError):
    """The project's spending cap is reached; no further request is made."""


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.calls - other.calls, self.cached_calls - other.cached_calls,
                     self.input_tokens - other.input_tokens, self.output_tokens - other.output_tokens,
                     round(self.cost - other.cost, 8))


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


class LlmClient:
    def __init__(self, *, model: str, api_base: str = "", api_key: str = "", temperature: float = 0.0,
                 timeout: float = 120, num_retries: int = 3, retry_after: float = 0,
                 project: Project | None = None, run: AttributionRun | None = None, trace: Trace | int | None = None,
                 method: str = "", spending_cap: Decimal | float | None = None,
                 cache: ResponseCache | None = None, context_tokens: int | None = None) -> None:
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
        api_key = provider_key(model=model, api_base=api_base, project_key=api_key)
        if api_base:
            try:
                outbound.check_url(api_base)
            except outbound.OutboundRefused as exc:
                raise MethodError(f"the model's api_base is refused by the outbound policy: {exc}") from None
        self._secret = "" if api_key == NO_KEY else api_key
        self._json_mode = _supports_json_mode(model)
        self.totals = Usage()
        # The Router retries (num_retries, exponential backoff from litellm's INITIAL_RETRY_DELAY, at least
        # retry_after seconds apart) and times out each attempt. Cooldowns are off: with one deployment a cooldown
        # would turn the next trace's call into "no deployments available" instead of trying the provider again.
        self.router = litellm.Router(
            model_list=[{"model_name": _GROUP, "litellm_params": {
                "model": model, "api_key": api_key, "api_base": api_base or None, "timeout": timeout,
                "drop_params": True}}],
            num_retries=num_retries, retry_after=retry_after, timeout=timeout, disable_cooldowns=True,
        )

    @classmethod
    def for_project(cls, project: Project, *, run: AttributionRun | None = None, trace: Trace | int | None = None,
                    method: str = "") -> LlmClient:
        """A client for the project's model settings; a run that fixed its own model keeps it."""
        from .crypto import DecryptionError, decrypt

        row = ProjectLlmSettings.objects.filter(project=project).first() or ProjectLlmSettings(project=project)
        model = (run.model if run is not None and run.model else "") or row.model
        if not model:
            raise MethodError(f"no model is configured for project {project}: choose one on the project's LLM "
                              "settings page")
        try:
            key = decrypt(row.api_key_encrypted) if row.api_key_encrypted else ""
        except DecryptionError as exc:
            raise MethodError(f"the project's API key cannot be used: {exc}") from None
        return cls(model=model, api_base=row.api_base, api_key=key, temperature=row.temperature,
                   timeout=row.timeout_seconds, num_retries=row.max_retries, project=project, run=run, trace=trace,
                   method=method, spending_cap=row.spending_cap_usd, cache=cache_from_settings())

    def __repr__(self) -> str:  # never the key
        return f"LlmClient(model={self.model!r}, api_base={self.api_base!r})"

    # --- asking ------------------------------------------------------------------------------------------------------

    def complete_json(self, *, system: str, user: str, purpose: str,
                      validate: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
        """The model's answer as a JSON object that passed ``validate``; one retry with the validator's complaint."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        answer, error, text = self._ask(messages, purpose, validate)
        if error is None:
            return answer
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": prompts.retry(error)}]
        answer, error, _ = self._ask(messages, f"{purpose} (retry)", validate)
        if error is None:
            return answer
        raise InvalidAnswer(f"the model gave no valid answer for {purpose} (asked twice): {error}")

    def _ask(self, messages: list[dict[str, str]], purpose: str,
             validate: Callable[[dict[str, Any]], str | None]) -> tuple[dict[str, Any], str | None, str]:
        reply = self._complete(messages, purpose)
        try:
            answer = first_json_object(reply.text)
            error = validate(answer)
        except ValueError as exc:
            answer, error = {}, str(exc)
        self._record(purpose, reply, ok=error is None, error="" if error is None else f"invalid answer: {error}")
        if error is None and not reply.cached and self.cache is not None:
            self.cache.put(reply.cache_key, {"text": reply.text})
        return answer, error, reply.text

    def _complete(self, messages: list[dict[str, str]], purpose: str) -> _Reply:
        key = cache_key(model=self.model, api_base=self.api_base, messages=messages, temperature=self.temperature)
        started = time.monotonic()
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return _Reply(hit["text"], 0, 0, 0.0, _ms(started), cached=True, cache_key=key)
        self._check_budget()
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if self._json_mode else {}
        try:
            response = self.router.completion(model=_GROUP, messages=messages, temperature=self.temperature,
                                              max_tokens=ANSWER_TOKENS, **extra)
        except Exception as exc:  # every provider failure, after the Router's own retries
            error = self._describe_failure(exc)
            self._record(purpose, _Reply("", 0, 0, 0.0, _ms(started), False, key), ok=False, error=error)
            raise MethodError(f"the model provider failed for {purpose} ({self.model}): {error}") from None
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = getattr(response, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return _Reply(text, input_tokens, output_tokens, self._cost(response), _ms(started), cached=False,
                      cache_key=key)

    def _cost(self, response: Any) -> float:
        try:
            return float(litellm.completion_cost(completion_response=response, model=self.model) or 0.0)
        except Exception:  # a model litellm has no price for (local models, custom endpoints) costs nothing known
            return 0.0

    def _check_budget(self) -> None:
        # Concurrent workers of one project may each pass this check with one request in flight, so the cap can be
        # overshot by at most one request per worker; a lock per project would serialise every call for that.
        if self.spending_cap is None or self.project_id is None:
            return
        spent = LlmCall.objects.filter(project_id=self.project_id).aggregate(total=Sum("cost"))["total"] or Decimal(0)
        if spent >= self.spending_cap:
            raise BudgetExceeded(f"spending cap of {_usd(self.spending_cap)} reached ({_usd(spent)} spent)")

    def _record(self, purpose: str, reply: _Reply, *, ok: bool, error: str) -> None:
        self.totals = Usage(self.totals.calls + 1, self.totals.cached_calls + reply.cached,
                            self.totals.input_tokens + reply.input_tokens,
                            self.totals.output_tokens + reply.output_tokens, self.totals.cost + reply.cost)
        logger.info("llm call method=%s purpose=%r model=%s ok=%s cached=%s tokens=%d+%d cost=%.6f latency_ms=%d%s",
                    self.method, purpose, self.model, ok, reply.cached, reply.input_tokens, reply.output_tokens,
                    reply.cost, reply.latency_ms, f" error={error!r}" if error else "")
        if self.project_id is None:
            return
        LlmCall.objects.create(
            project_id=self.project_id, run_id=self.run_id, trace_id=self.trace_id, method=self.method[:40],
            purpose=purpose[:80], model=self.model[:200], ok=ok, cached=reply.cached,
            input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
            cost=Decimal(str(round(reply.cost, 6))), latency_ms=reply.latency_ms, error=error[:2000],
        )

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
        if self._context_override:
            return self._context_override
        try:
            info = litellm.get_model_info(self.model)
        except Exception:  # not in litellm's map
            return FALLBACK_CONTEXT_TOKENS
        return int(info.get("max_input_tokens") or info.get("max_tokens") or FALLBACK_CONTEXT_TOKENS)

    def count_tokens(self, text: str) -> int:
        try:
            return int(litellm.token_counter(model=self.model, text=text))
        except Exception:  # no tokenizer for this model: ~4 characters a token in English prose
            return len(text) // 4 + 1

    def budget(self, reserve: int) -> int:
        """Tokens left for the trace once ``reserve`` (instructions, task, answer) is set aside."""
        room = self.context_tokens() - reserve
        if room < MIN_WINDOW_TOKENS:
            raise MethodError(f"the context of {self.model} ({self.context_tokens()} tokens) leaves no room for the "
                              f"trace after the instructions ({reserve} tokens)")
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
                self.count_tokens(prompts.render_step(step, part=k, parts=parts)) > room for k in range(1, parts + 1)):
            parts += max(1, parts // 10)
        return parts

    def render_window(self, trace: TraceView, window: Window) -> str:
        if window.parts > 1:
            step = trace.steps[window.first]
            return prompts.render_trace(trace, [prompts.render_step(step, part=window.part, parts=window.parts)],
                                        first=window.first, last=window.last)
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
        while True:
            rendered = [prompts.render_step(s, max_chars=cap) for s in steps]
            if self.count_tokens("\n".join(rendered)) <= room or cap <= 32:
                return rendered, True
            cap = int(cap * 0.8)


# --- the cache --------------------------------------------------------------------------------------------------------

class ResponseCache:
    """Validated answers in Redis. A cache that is down only costs money: every error is logged and ignored."""

    def __init__(self, url: str, *, ttl: int = CACHE_TTL_SECONDS) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl = ttl

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self._redis.get(key)
            return json.loads(raw) if raw else None
        except (redis.RedisError, ValueError) as exc:
            logger.warning("llm cache read failed: %s", type(exc).__name__)
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        try:
            self._redis.set(key, json.dumps(value), ex=self.ttl)
        except redis.RedisError as exc:
            logger.warning("llm cache write failed: %s", type(exc).__name__)


def cache_key(*, model: str, api_base: str, messages: list[dict[str, str]], temperature: float) -> str:
    material = json.dumps({"model": model, "api_base": api_base, "messages": messages, "temperature": temperature},
                          sort_keys=True, ensure_ascii=False)
    return CACHE_PREFIX + hashlib.sha256(material.encode()).hexdigest()


def cache_from_settings() -> ResponseCache | None:
    """``CULPRIT_LLM_CACHE_URL`` ("off" disables), else the Celery broker when it is Redis, else no cache."""
    url = getattr(settings, "CULPRIT_LLM_CACHE_URL", None) or os.environ.get("CULPRIT_LLM_CACHE_URL", "")
    if url.strip().lower() in {"off", "none", "false", "0"}:
        return None
    if not url:
        broker = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
        url = broker if broker.startswith(("redis://", "rediss://")) else ""
    return _cache_for(url) if url else None


@functools.lru_cache(maxsize=4)
def _cache_for(url: str) -> ResponseCache:  # one connection pool per URL and process
    return ResponseCache(url)


def _outbound_refusal(exc: BaseException) -> outbound.OutboundRefused | None:
    """The policy's refusal inside litellm's wrapped exception, if that is what failed (found by its type in the
    exception chain, never by text a server could have written)."""
    seen: BaseException | None = exc
    for _ in range(12):
        if seen is None or isinstance(seen, outbound.OutboundRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# --- keys -------------------------------------------------------------------------------------------------------------

def provider_of(model: str) -> str:
    try:
        return str(litellm.get_llm_provider(model)[1])
    except Exception:  # unknown to litellm: its prefix is what litellm would route by
        return model.split("/", 1)[0].lower()


def provider_key(*, model: str, api_base: str, project_key: str) -> str:
    """The key a call to ``model`` carries: the project's, else the server's for an opted-in provider without a custom
    api_base, else ``NO_KEY``. A server key never goes to an api_base a project chose."""
    provider = provider_of(model)
    if provider in AMBIENT_CREDENTIAL_PROVIDERS and (api_base or provider not in settings.CULPRIT_SERVER_KEYS_FOR):
        raise MethodError(f"{provider} models sign requests with the server's cloud credentials: they need the "
                          "deployment's opt-in (CULPRIT_SERVER_KEYS_FOR) and no custom api_base")
    if project_key:
        return project_key
    if not api_base and provider in settings.CULPRIT_SERVER_KEYS_FOR:
        return os.environ.get(_SERVER_KEY_VARS.get(provider, f"{provider.upper()}_API_KEY"), "") or NO_KEY
    return NO_KEY


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


def _supports_json_mode(model: str) -> bool:
    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
        return "response_format" in (litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
                                     or [])
    except Exception:  # unknown provider: ask in words only
        return False


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


def _usd(value: Decimal | float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:,.4f}"
