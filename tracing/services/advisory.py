"""Transaction-scoped PostgreSQL advisory locks on names, for writers that must see each other's committed rows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.db import connection


def advisory_xact_locks(names: Iterable[str]) -> None:
    """Lock every name until the caller's transaction ends, in key order, so two writers never wait on each other
    in a cycle. Re-entrant: a name this transaction holds is taken again at once. On SQLite (the embedded mode,
    one writer at a time) nothing is locked."""
    if connection.vendor != "postgresql":
        return
    keys = sorted(
        {int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], "big", signed=True) for n in names}
    )
    if not keys:
        return
    with connection.cursor() as cursor:
        # The ordered subquery makes the locks be taken in key order.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY k) AS keys",
            [keys],
        )


def external_ids_lock(project_id: int, external_ids: Iterable[str]) -> None:
    """The lock a label file looking for its trace and a trace looking for its waiting labels both take: whichever
    commits second sees what the first wrote. Without it two jobs at once each found nothing of the other's, and
    the labels waited for a trace that was already there."""
    advisory_xact_locks(f"{project_id}:external:{e}" for e in external_ids if e)
