"""The one reaping mechanism every job table uses (ingest jobs, attribution runs, injection campaigns, exports).

A job row carries ``heartbeat_at`` (moved on claim and on progress). A job still queued or running with no sign of
life for ``stale_after`` seconds -- longer than its task may run, so its worker is surely gone, or the broker lost
the message -- is either failed with a readable reason (when ``hopeless``) or re-enqueued. Only the reaper that moves
the heartbeat re-enqueues, so two beat processes never double a job; the task is sent once the transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Model, Q, QuerySet
from django.utils import timezone

MAX_REAPED_PER_RUN = 1000


def stale_jobs_reap(live: QuerySet, *, stale_after: int, hopeless: Callable[[Any], bool],
                    fail: Callable[[Any], object], enqueue: Callable[[int], object],
                    bump: dict[str, Any] | None = None) -> dict[str, int]:
    """Reap the rows of ``live`` (the job table filtered to its queued and running statuses) that went quiet.
    ``bump`` holds extra updates made with the heartbeat when a row is re-enqueued (e.g. a restart counter)."""
    model: type[Model] = live.model
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = live.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff))
    counts = {"requeued": 0, "failed": 0}
    for row in stale.order_by("pk")[:MAX_REAPED_PER_RUN]:
        if hopeless(row):
            fail(row)
            counts["failed"] += 1
        elif model.objects.filter(pk=row.pk, heartbeat_at=row.heartbeat_at).update(  # type: ignore[attr-defined]
                heartbeat_at=timezone.now(), **(bump or {})):
            transaction.on_commit(lambda pk=row.pk: enqueue(pk))
            counts["requeued"] += 1
    return counts
