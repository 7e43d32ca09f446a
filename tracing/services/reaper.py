"""The one reaping mechanism every job table uses (ingest jobs, attribution runs, injection campaigns, exports,
model trainings); ``job_rows_reap`` is the policy shared by the tables built on ``tracing.jobs.Job``.

A job row carries ``heartbeat_at`` (moved on claim and on progress). A job still queued or running with no sign of
life for ``stale_after`` seconds -- longer than its task may run, so its worker is surely gone, or the broker lost
the message -- is either failed with a readable reason (when ``hopeless``) or re-enqueued. Only the reaper that moves
the heartbeat re-enqueues, so two beat processes never double a job; the task is sent once the transaction commits.

``heartbeat`` moves a running job's heartbeat from a thread of its own, so a job whose worker was killed goes quiet
within seconds, while a live one never does, however long a single step of its work takes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

MAX_REAPED_PER_RUN = 1000


def gave_up_reason(job: Any) -> str:
    return (
        f"gave up after {job.attempts} attempt{'s' if job.attempts != 1 else ''}: the worker running it stopped "
        "each time (killed, out of memory, or restarted)"
    )


def job_rows_reap(
    model: Any,
    *,
    running_after: int,
    queued_after: int,
    enqueue: Callable[[int], object],
    fail: Callable[[Any], object] | None = None,
) -> dict[str, int]:
    """The reaper of one job table (a ``tracing.jobs.Job`` subclass), called by each app's beat task.

    A running job whose heartbeat (moved every few seconds while a worker works on it) is older than
    ``running_after`` lost its worker: it goes back to queued, keeping its attempts (the page names the attempt to
    come), and its task is sent again; its next claim counts the next attempt. A queued job waits ``queued_after``:
    its message may simply be waiting behind others. A job whose attempts are spent (``MAX_ATTEMPTS``) fails
    instead, by ``fail(job)`` (default: the reason from ``gave_up_reason``)."""
    from ..jobs import QUEUED, RUNNING

    def hopeless(job: Any) -> bool:
        return job.attempts >= job.MAX_ATTEMPTS

    def fail_default(job: Any) -> None:
        model.fail_live(job.pk, gave_up_reason(job))

    fail = fail or fail_default
    running = stale_jobs_reap(
        model.objects.filter(status=RUNNING),
        stale_after=running_after,
        hopeless=hopeless,
        fail=fail,
        enqueue=enqueue,
        bump={"status": QUEUED},
    )
    queued = stale_jobs_reap(
        model.objects.filter(status=QUEUED),
        stale_after=queued_after,
        hopeless=hopeless,
        fail=fail,
        enqueue=enqueue,
    )
    return {key: running[key] + queued[key] for key in running}


def stale_jobs_reap(
    live: QuerySet,
    *,
    stale_after: int,
    hopeless: Callable[[Any], bool],
    fail: Callable[[Any], object],
    enqueue: Callable[[int], object],
    bump: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Reap the rows of ``live`` (the job table filtered to its queued and running statuses) that went quiet.
    ``bump`` holds extra updates made with the heartbeat when a row is re-enqueued (e.g. a restart counter)."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = live.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff))
    counts = {"requeued": 0, "failed": 0}
    for row in stale.order_by("pk")[:MAX_REAPED_PER_RUN]:
        if hopeless(row):
            fail(row)
            counts["failed"] += 1
        # Still live and still as quiet as when read: a worker that claimed it, or a job that finished, in between is
        # left alone, and of two reapers only one wins.
        elif live.filter(pk=row.pk, heartbeat_at=row.heartbeat_at).update(
            heartbeat_at=timezone.now(), **(bump or {})
        ):
            transaction.on_commit(lambda pk=row.pk: enqueue(pk))
            counts["requeued"] += 1
    return counts


@contextmanager
def heartbeat(live: QuerySet, *, every: float) -> Iterator[None]:
    """While the block runs, a daemon thread moves ``heartbeat_at`` on the rows of ``live`` (one job, filtered to its
    running status) every ``every`` seconds, on a database connection of its own that it closes when done. Its
    errors are logged and swallowed: a missed beat costs at most a needless retry, never the job (on SQLite a beat
    may find the database locked by the import itself)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                try:
                    with transaction.atomic(using=live.db):
                        if (
                            connections[live.db].vendor == "postgresql"
                        ):  # never queue behind the job's own lock
                            with connections[live.db].cursor() as cursor:
                                cursor.execute("SET LOCAL lock_timeout = '5s'")
                        live.update(heartbeat_at=timezone.now())
                except Exception:  # noqa: BLE001 -- a heartbeat must never take the job down
                    logger.warning("heartbeat of %s not moved", live.model.__name__, exc_info=True)
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=beat, name="culprit-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 30)
