"""The answer cache of ``attribution.llm``: validated answers kept in Redis, keyed by model, endpoint, messages and
temperature, so re-scoring a benchmark or re-running a method costs nothing. A cache that is down only costs money."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger("attribution.llm")

# Cached answers are kept for 30 days: long enough to re-score a benchmark, short enough to follow model updates.
CACHE_TTL_SECONDS = 30 * 24 * 3600
CACHE_PREFIX = "culprit:llm:v1:"


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
    material = json.dumps(
        {"model": model, "api_base": api_base, "messages": messages, "temperature": temperature},
        sort_keys=True,
        ensure_ascii=False,
    )
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
