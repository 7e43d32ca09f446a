"""Rate limits on the doors people and programs knock on: login, uploads, the API and the OTLP receiver.

A fixed window per (scope, who) counted in the cache -- Redis in a team deployment (``CULPRIT_CACHE_URL``, or the
broker's Redis), so every web process shares one count; an in-process cache in the embedded single-user mode. Limits
are ``"<count>/<s|m|h>"`` strings in ``settings.CULPRIT_RATE_LIMITS``, overridable from the environment
(``CULPRIT_RATE_LIMITS="login=10/m,upload=60/m"``). A refused request gets ``429`` with ``Retry-After``.

Sign-in (``/accounts/login/`` and ``/admin/login/``, ``login_throttled``) counts every attempt per address
(``login_ip``) and failed attempts per account name alone (``login``), whatever address they come from. The client's
address is the socket's peer, or behind ``CULPRIT_TRUSTED_PROXIES`` proxies the X-Forwarded-For entry that many hops
from the right: the entries further left are whatever the client wrote.

When the cache is down the limits fail open with a logged warning: a Redis outage must not lock everyone out of
sign-in, uploads and the API; ``/healthz`` reports the cache so the outage is seen.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/m"`` -> (10, 60)."""
    count, _, unit = rate.partition("/")
    return int(count), _UNITS[unit.strip() or "m"]


def _key(scope: str, who: str, window: int, now: float) -> str:
    return f"rl:{scope}:{hashlib.sha256(who.encode()).hexdigest()[:32]}:{int(now // window)}"


def hit(scope: str, who: str) -> int:
    """Count one request of ``who`` in ``scope``; 0 when allowed, else the seconds until the window reopens."""
    rate = settings.CULPRIT_RATE_LIMITS.get(scope)
    if not rate:
        return 0
    limit, window = parse_rate(rate)
    now = time.time()
    key = _key(scope, who, window, now)
    try:
        cache.add(key, 0, timeout=window + 5)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=window + 5)
            count = 1
    except Exception as exc:  # noqa: BLE001 - the cache is down: fail open, loudly (module docstring)
        logger.warning("rate limit %s not applied: the cache is unavailable (%s)", scope, type(exc).__name__)
        return 0
    return 0 if count <= limit else max(1, int((int(now // window) + 1) * window - now))


def refund(scope: str, who: str) -> None:
    """Take back one count of ``who`` in ``scope`` (a sign-in that succeeded was no failure)."""
    rate = settings.CULPRIT_RATE_LIMITS.get(scope)
    if not rate:
        return
    try:
        cache.decr(_key(scope, who, parse_rate(rate)[1], time.time()))
    except Exception:  # the window rolled over, or the cache is down: nothing to take back
        logger.debug("rate limit: nothing to take back for %s", scope)


def client_ip(request: HttpRequest) -> str:
    """The client's address. Each of the deployment's ``CULPRIT_TRUSTED_PROXIES`` proxies appends the address it
    saw to X-Forwarded-For, so the client is that many entries from the right; the first entry is the client's own
    claim and never trusted. A header shorter than the proxy chain (misconfigured) falls back to the peer."""
    peer = request.META.get("REMOTE_ADDR", "")
    proxies = getattr(settings, "CULPRIT_TRUSTED_PROXIES", 0)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies <= 0 or not forwarded:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-proxies] if len(hops) >= proxies else peer


def too_many(retry_after: int, message: str = "Too many requests; try again shortly.") -> HttpResponse:
    response = HttpResponse(
        f"{message} (retry after {retry_after} s)\n", status=429, content_type="text/plain"
    )
    response["Retry-After"] = str(retry_after)
    return response


def limited(scope: str, who: Callable[[HttpRequest], str], *, methods: tuple[str, ...] = ("POST",)):
    """Decorate a view: requests with one of ``methods`` count against ``scope`` for ``who(request)``."""

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in methods:
                wait = hit(scope, who(request))
                if wait:
                    return too_many(wait)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def by_token(request: HttpRequest) -> str:
    """API and OTLP callers count per token (its public prefix), or per address when they send none."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    token = header.split(" ", 1)[1].strip() if header.lower().startswith("bearer ") else ""
    return f"token:{token[:16]}" if token else f"ip:{client_ip(request)}"


def by_ip(request: HttpRequest) -> str:
    return client_ip(request)


def by_user(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    return f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{client_ip(request)}"


def login_account(request: HttpRequest) -> str:
    return f"account:{request.POST.get('username', '')[:150].strip().lower()}"


def login_throttled(view):
    """Decorate a sign-in view (the site's and the admin's). Every POST counts per address; a failed one also counts
    per account name, from any address, so forged or rotated addresses cannot guess one account's password faster.
    The account's count is taken before the view runs (concurrent guesses cannot slip under the limit) and given
    back when the sign-in succeeds (a redirect)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        if wait := hit("login_ip", f"ip:{client_ip(request)}"):
            return too_many(wait)
        account = login_account(request)
        if wait := hit("login", account):
            return too_many(wait)
        response = view(request, *args, **kwargs)
        if response.status_code in (301, 302, 303):
            refund("login", account)
        return response

    return wrapper
