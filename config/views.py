from __future__ import annotations

import logging

from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config import broker

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers and the container health check: each service on its own line of the answer.

    503 when the database is down: nothing can be served. A broker or cache outage answers 200 with
    ``"status": "degraded"``: pages and reads still work, uploads and OTLP are kept to be processed later, rate limits
    fail open, so taking every web server out of a load balancer for it would only make things worse. Monitors that
    want to hear of any outage ask ``/healthz?strict=1``, which answers 503 for any service down."""
    checks = {"database": _database_ok(), "broker": broker.ping(), "cache": _cache_ok()}
    down = [name for name, ok in checks.items() if not ok]
    status = "ok" if not down else ("down" if "database" in down else "degraded")
    failing = status == "down" or (down and request.GET.get("strict") == "1")
    body = {"status": status} | {name: "ok" if ok else "unavailable" for name, ok in checks.items()}
    return JsonResponse(body, status=503 if failing else 200)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return False
    return True


def _cache_ok() -> bool:
    try:
        cache.set("healthz", "1", timeout=10)
        return cache.get("healthz") == "1"
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
        logger.warning("cache health check failed: %s", type(exc).__name__)
        return False
