"""Django's Redis cache, made safe to share a Redis database with the Celery broker.

Django's ``RedisCache.clear()`` runs FLUSHDB: on the broker's database that drops every queued task and the record of
every unacknowledged one (the tasks a killed worker held, which a live worker would otherwise put back). Here
``clear()`` deletes only the keys under this cache's prefix, scanning in batches.
"""

from __future__ import annotations

import re

from django.core.cache.backends.redis import RedisCache

_BATCH = 500


class PrefixedRedisCache(RedisCache):
    def clear(self) -> bool:
        client = self._cache.get_client(None, write=True)
        # The key function is Django's "<prefix>:<version>:<key>"; glob characters in the prefix are matched literally.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.key_prefix) + ":*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=_BATCH):
            batch.append(key)
            if len(batch) >= _BATCH:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
        return True
