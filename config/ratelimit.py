"""Rate limits on the doors people and programs knock on: login, uploads, the API and the OTLP receiver.

A fixed window per (scope, who) counted in the cache -- Redis in a team deployment (``CULPRIT_CACHE_URL``, or the
broker's Redis), so every web process shares one count; an in-process cache in the embedded single-user mode. Limits
are ``"<count>/<s|m|h>"`` strings in ``settings.CULPRIT_RATE_LIMITS``, overridable from the environment
(``CULPRIT_RATE_LIMITS="login=10/m,upload=60/m"``). A refused request gets ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/m"`` -> (10, 60)."""
    count, _, unit = rate.partition("/")
    return int(count), _UNITS[unit.strip() or "m"]


def hit(scope: str, who: str) -> int:
    """Count one request of ``who`` in ``scope``; 0 when allowed, else the seconds until the window reopens."""
    rate = settings.CULPRIT_RATE_LIMITS.get(scope)
    if not rate:
        return 0
    limit, window = parse_rate(rate)
    now = time.time()
    slot = int(now // window)
    key = f"rl:{scope}:{hashlib.sha256(who.encode()).hexdigest()[:32]}:{slot}"
    cache.add(key, 0, timeout=window + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window + 5)
        count = 1
    return 0 if count <= limit else max(1, int((slot + 1) * window - now))


def client_ip(request: HttpRequest) -> str:
    # Behind the deployment's proxy the client is the first X-Forwarded-For hop; otherwise the socket's peer.
    if settings.SECURE_PROXY_SSL_HEADER and (forwarded := request.META.get("HTTP_X_FORWARDED_FOR")):
        return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR", "")


def too_many(retry_after: int, message: str = "Too many requests; try again shortly.") -> HttpResponse:
    response = HttpResponse(f"{message} (retry after {retry_after} s)\n", status=429, content_type="text/plain")
    response["Retry-After"] = str(retry_after)
    return response


def limited(scope: str, who: Callable[[HttpRequest], str], *, methods: tuple[str, ...] = ("POST",)):  # type: ignore[no-untyped-def]
    """Decorate a view: requests with one of ``methods`` count against ``scope`` for ``who(request)``."""

    def decorate(view):  # type: ignore[no-untyped-def]
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


def by_login(request: HttpRequest) -> str:
    """Login attempts count per address and per account name, so one address cannot guess many accounts' passwords
    quickly and many addresses cannot hammer one account."""
    return f"{client_ip(request)}|{request.POST.get('username', '')[:150].lower()}"
