"""The Django cache shares a Redis database with the Celery broker: clearing it must leave the broker's keys alone."""

from __future__ import annotations

import uuid

import redis
from django.conf import settings
from django.core.cache import cache


def test_clearing_the_cache_keeps_the_brokers_queue_and_unacknowledged_tasks():
    client = redis.Redis.from_url(settings.CULPRIT_CACHE_URL)
    queue = f"culprit-test-queue-{uuid.uuid4().hex[:8]}"  # a queue's list, as kombu keeps it
    client.rpush(queue, b"a queued task")
    try:
        cache.set("rate:login:alice", 3)
        cache.set_many({f"k{i}": i for i in range(1200)})  # more than one scan batch
        cache.clear()
        assert cache.get("rate:login:alice") is None
        assert cache.get_many([f"k{i}" for i in range(1200)]) == {}
        assert client.lrange(queue, 0, -1) == [b"a queued task"]
    finally:
        client.delete(queue)


def test_the_cache_clear_matches_its_prefix_literally(settings):
    from config.cache import PrefixedRedisCache

    odd = PrefixedRedisCache(settings.CULPRIT_CACHE_URL, {"KEY_PREFIX": "cul*[x]"})
    client = redis.Redis.from_url(settings.CULPRIT_CACHE_URL)
    neighbour = f"culprit-test-{uuid.uuid4().hex[:8]}:1:k"  # would match "cul*" read as a glob
    client.set(neighbour, b"1")
    try:
        odd.set("k", 1)
        odd.clear()
        assert odd.get("k") is None
        assert client.get(neighbour) == b"1"
    finally:
        client.delete(neighbour)
