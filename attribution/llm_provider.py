"""litellm as this product uses it: loaded on first use and configured once, the key a call carries, what litellm's
model map knows about a model, and which failures are worth another attempt. ``attribution.llm`` builds on these."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import time
from types import ModuleType
from typing import Any

# Set by the settings too; repeated here because importing litellm without it fetches a price map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from django.conf import settings

from . import outbound
from .lazy_import import lazy_module
from .methods.base import MethodError


def _configure_litellm(module: ModuleType) -> None:
    """What litellm needs once it is loaded (``lazy_import``: the first call into it, not the first page)."""
    # litellm's own log handler writes records below WARNING to stdout, which would spoil a command's --json output:
    # its records go to the root logger's handler (stderr, config/settings.py LOGGING) instead.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        litellm_logger = logging.getLogger(name)
        for handler in list(litellm_logger.handlers):
            litellm_logger.removeHandler(handler)
        litellm_logger.propagate = True
    outbound.install_litellm_guard()
    # Counting the tokens of a llama, Command R or Replicate model would fetch its tokenizer from Hugging Face with
    # litellm's own HTTP client, past the outbound policy (and stall an offline server on retries): the tiktoken
    # count litellm ships with is close enough for budgets.
    module.disable_hf_tokenizer_download = True
    atexit.register(_quiet_aiohttp_transports)


def _quiet_aiohttp_transports() -> None:
    """litellm builds aiohttp transports at import for async calls we never make. Their ``__del__`` runs after the
    interpreter has torn its globals down and prints a traceback for each ("Exception ignored in
    LiteLLMAiohttpTransport.__del__"). At exit they hold no open session, so they are told they own none."""
    from litellm.llms.custom_httpx.aiohttp_transport import LiteLLMAiohttpTransport

    for obj in gc.get_objects():
        if isinstance(obj, LiteLLMAiohttpTransport):
            obj._owns_session = False


litellm = lazy_module("litellm", after=_configure_litellm)
# litellm prints a "Provider List" banner and debugging hints to stdout on every provider error.
litellm.suppress_debug_info = True


# Sent when a call has no key of its own: never a secret, and litellm does not look for one in the environment.
NO_KEY = "culprit-no-key"
# Where a provider's server key lives when its name is not simply <PROVIDER>_API_KEY.
_SERVER_KEY_VARS = {
    "together_ai": "TOGETHERAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "huggingface": "HF_TOKEN",
}
# Providers that authenticate with the machine's ambient cloud credentials (AWS, Google, IBM, Oracle), not an API
# key: litellm signs requests with them whatever key is passed, so they need the deployment's opt-in and can never
# be pointed at a custom api_base.
AMBIENT_CREDENTIAL_PROVIDERS = frozenset(
    {
        "bedrock",
        "sagemaker",
        "sagemaker_chat",
        "vertex_ai",
        "vertex_ai_beta",
        "watsonx",
        "watsonx_text",
        "oci",
    }
)


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
    if provider in AMBIENT_CREDENTIAL_PROVIDERS and (
        api_base or provider not in settings.CULPRIT_SERVER_KEYS_FOR
    ):
        raise MethodError(
            f"{provider} models sign requests with the server's cloud credentials: they need the "
            "deployment's opt-in (CULPRIT_SERVER_KEYS_FOR) and no custom api_base"
        )
    if project_key:
        return project_key
    if not api_base and provider in settings.CULPRIT_SERVER_KEYS_FOR:
        return os.environ.get(_SERVER_KEY_VARS.get(provider, f"{provider.upper()}_API_KEY"), "") or NO_KEY
    return NO_KEY


def _mapped_info(model: str) -> dict[str, Any] | None:
    """litellm's model map entry for ``model``, None when it has none. A Router registers an empty entry for every
    model it does not know, which get_model_info then reports as free with no window: that is not knowledge."""
    if litellm.model_cost.get(model) == {}:
        return None
    try:
        return dict(litellm.get_model_info(model))
    except Exception:  # not in litellm's map
        return None


def model_limits(model: str) -> tuple[int | None, int | None]:
    """(context window, maximum output) from litellm's model map, None where it does not know."""
    info = _mapped_info(model)
    if info is None:
        return None, None
    context = info.get("max_input_tokens") or info.get("max_tokens")
    return (
        int(context) if context else None,
        int(info["max_output_tokens"]) if info.get("max_output_tokens") else None,
    )


def model_prices(model: str) -> tuple[float, float] | None:
    """Dollars per input and output token from litellm's model map, None when it has no price for the model."""
    raw = litellm.model_cost.get(model)
    if raw is not None and (
        raw.get("input_cost_per_token") is None or raw.get("output_cost_per_token") is None
    ):
        return None  # registered under its own name without a price (a Router does that for models it does not know)
    if (info := _mapped_info(model)) is None:
        return None
    cost_in, cost_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    return None if cost_in is None or cost_out is None else (float(cost_in), float(cost_out))


# The failures worth another attempt: rate limits, the server's own errors, timeouts and lost connections.
def _retryable() -> tuple[
    type[BaseException], ...
]:  # a function, so importing this module does not load litellm
    return (
        litellm.RateLimitError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.APIConnectionError,
        litellm.Timeout,
    )


def _reached_server(exc: BaseException) -> bool:
    """Whether a failed attempt's request reached the server: an HTTP error answer or a timeout waiting for one; not
    a connection that failed or was refused (litellm reports those as HTTP 500 too: the cause chain tells them
    apart), nor the outbound policy's refusal."""
    import httpx

    seen: BaseException | None = exc
    for _ in range(12):
        if seen is None:
            break
        if isinstance(
            seen, (outbound.OutboundRefused, httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)
        ):
            return False
        seen = seen.__cause__ or seen.__context__
    return isinstance(getattr(exc, "status_code", None), int) or isinstance(exc, litellm.Timeout)


def retry_wait(exc: BaseException, *, attempt: int) -> float:
    """Seconds before retry ``attempt + 1``: the server's Retry-After when it is at most
    ``CULPRIT_LLM_MAX_RETRY_AFTER`` (default 300 s), else exponential backoff (1, 2, 4 … 30 s)."""
    limit = float(
        getattr(settings, "CULPRIT_LLM_MAX_RETRY_AFTER", None)
        or os.environ.get("CULPRIT_LLM_MAX_RETRY_AFTER")
        or 300
    )
    asked = retry_after_seconds(exc)
    return asked if asked is not None and asked <= limit else min(30.0, 2.0**attempt)


def retry_after_seconds(exc: BaseException) -> float | None:
    """The Retry-After a provider sent with its error (seconds, or an HTTP date), None when it sent none."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    response = getattr(exc, "response", None)
    if not headers and response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _supports_json_mode(model: str) -> bool:
    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
        return "response_format" in (
            litellm.get_supported_openai_params(model=model, custom_llm_provider=provider) or []
        )
    except Exception:  # unknown provider: ask in words only
        return False
