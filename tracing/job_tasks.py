"""The one Celery task base every job task uses (ingest, attribution runs and campaigns, exports, trainings).

``@shared_task(base=JobTask, bind=True, name=..., fail_job=...)``:

- ``acks_late`` and ``reject_on_worker_lost``: a message is acknowledged only once its task returned, so a worker
  killed mid-task (SIGKILL, out of memory) gives it back to the broker instead of losing it;
- named transient errors (the database restarting, a dropped connection) are retried with exponential backoff,
  1, 2, 4 ... capped at 30 s, at most ``MAX_RETRIES`` times; anything else is a real failure that the service has
  already written onto its row;
- ``fail_job(job_id, reason)``, given for a task whose first argument is a job id, moves the job to failed with a
  readable reason once those retries are spent (without it the reaper restarts the job later);
- ``self.heartbeat(live)`` moves the job's ``heartbeat_at`` from a thread while the block runs, so the reaper can
  tell a job whose worker died (quiet) from a long one (beating).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import celery
from django.db import InterfaceError, OperationalError
from django.db.models import QuerySet

logger = logging.getLogger(__name__)

# Database hiccups (a restart, a dropped connection) are worth retrying; anything else is a real failure.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
# 1+2+4+8+16 s: a database restart (a few seconds, tests/test_chaos.py) is ridden out well within the budget.
MAX_RETRIES = 5
RETRY_BACKOFF_MAX = 30


class JobTask(celery.Task):
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT_ERRORS
    max_retries = MAX_RETRIES
    retry_backoff = 1  # countdown = min(2 ** retries, RETRY_BACKOFF_MAX) seconds
    retry_backoff_max = RETRY_BACKOFF_MAX
    retry_jitter = False
    # Set per task through the decorator; read from the class so it is never bound as a method.
    fail_job: Callable[[int, str], Any] | None = None

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        fail = type(self).fail_job
        if fail is None or not args or not isinstance(exc, TRANSIENT_ERRORS):
            return
        try:
            fail(args[0], f"the database stayed unavailable ({exc.__class__.__name__})")
        except TRANSIENT_ERRORS:  # still down: the reaper fails or restarts the job once it is back
            logger.warning("%s: job %s not marked failed", self.name, args[0], exc_info=True)

    @staticmethod
    @contextmanager
    def heartbeat(live: QuerySet) -> Iterator[None]:
        """While the block runs, move ``heartbeat_at`` on ``live`` (one job, filtered to its live statuses) every
        ``CULPRIT_JOB_HEARTBEAT_EVERY`` seconds (``tracing.services.reaper.heartbeat``)."""
        from django.conf import settings

        from .services.reaper import heartbeat

        with heartbeat(live, every=settings.CULPRIT_JOB_HEARTBEAT_EVERY):
            yield


# A message for a job another live worker runs (a re-delivery) looks again this many times, each time when that
# worker's heartbeat would have gone stale, before leaving the job to the reaper.
MAX_BUSY_RETRIES = 40


def resend_when_busy(task: Any, busy: Exception, job_id: int, busy_retries: int) -> None:
    """A job's task found its job held by a live worker (``tracing.jobs.JobBusy``): send the task again when that
    worker's heartbeat would be stale, as a new message rather than ``self.retry()`` so the transient-error budget
    stays whole; after ``MAX_BUSY_RETRIES`` the job is left to the reaper."""
    if busy_retries >= MAX_BUSY_RETRIES:
        logger.warning("%s: job %s still running elsewhere; left to the reaper", task.name, job_id)
        return
    task.apply_async((job_id,), {"busy_retries": busy_retries + 1}, countdown=getattr(busy, "retry_in", 30))
