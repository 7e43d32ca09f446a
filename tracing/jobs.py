"""The one job base every long job table uses: ingest jobs, attribution runs, injection campaigns, dataset exports.

A job row is the source of truth for work a Celery worker does: its status, how many times a worker started it
(``attempts``), its last sign of life (``heartbeat_at``) and when it was created, started and finished, and the
reason it failed. The task base that runs jobs is ``tracing.job_tasks.JobTask``; the reaper that restarts jobs whose
worker died is ``tracing.services.reaper.jobs_reap``.

Every job vocabulary keeps the same four values (``queued``, ``running``, ``succeeded``, ``failed``: existing rows
hold them) and may add finished states of its own (``duplicate``, ``cancelled``, ``stopped``); labels differ per job
("Importing", "Exporting"). A job is live while queued or running and finished in any other state.

Progress columns differ per table (``steps_done`` of a bigint for exports, ``done`` for runs), so a subclass names its
own in ``PROGRESS_FIELDS``; the columns and data of every table stay as they were before this base existed.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
LIVE_STATUSES = (QUEUED, RUNNING)


class JobBusy(Exception):
    """The job is running on a worker that is alive (its heartbeat is fresh): a re-delivered message must not start
    it twice. The task tries again in ``retry_in`` seconds, when the heartbeat would be stale if that worker died
    (``tracing.job_tasks.retry_when_busy``)."""

    def __init__(self, job: str, job_id: int, retry_in: int) -> None:
        super().__init__(f"{job} {job_id} is running elsewhere; retry in {retry_in}s")
        self.retry_in = retry_in


class JobStatusChoices(models.TextChoices):
    """Base of every job's status choices. A subclass declares at least QUEUED, RUNNING, SUCCEEDED and FAILED with
    the values above (the reaper and the claim write them); tests/test_jobs.py checks each one does."""

    @classmethod
    def finished_values(cls) -> tuple[str, ...]:
        return tuple(v for v in cls.values if v not in LIVE_STATUSES)


class Job(models.Model):
    """Abstract: status, attempts, heartbeat, timestamps and error, with one implementation of what a page shows."""

    # A subclass redeclares ``status`` with its own choices (same column: max_length 16, default queued).
    status = models.CharField(max_length=16, default=QUEUED)
    error = models.TextField(blank=True)
    # Times a worker claimed the job (queued -> running). The reaper puts a job whose worker died back in the queue
    # keeping this count, so the page can say which attempt comes; after MAX_ATTEMPTS the job fails with a reason.
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life (claimed, progress written, a beat of ``reaper.heartbeat`` while a worker works on it,
    # re-enqueued by the reaper): a running job quiet for longer than CULPRIT_REAP_RUNNING_AFTER lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    MAX_ATTEMPTS = 3
    PROGRESS_FIELDS = ("done", "total")  # (done, total) column names of the subclass

    class Meta:
        abstract = True

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return not self.is_live

    @property
    def percent(self) -> int:
        """0-100 for a progress bar; 100 only once finished (the last few rows may still be being written)."""
        if self.is_finished:
            return 100
        done, total = (getattr(self, name) for name in self.PROGRESS_FIELDS)
        return min(99, int(100 * done / total)) if total else 0

    @property
    def attempt_shown(self) -> int | None:
        """The attempt a page names: the one running, or the one to come for a job waiting in the queue again after
        its worker stopped; None before the first start and once finished."""
        if self.status == RUNNING:
            return max(1, self.attempts)
        if self.status == QUEUED and self.attempts >= 1:
            return self.attempts + 1
        return None

    @property
    def unstarted_for(self) -> int | None:
        """Seconds a job no worker has started yet has waited, once that is longer than a free worker takes to start
        one (``CULPRIT_WORKER_STALLED_AFTER``): the page then says a worker may not be running. Else None."""
        if self.status != QUEUED or self.attempts or self.created_at is None:
            return None
        waited = int((timezone.now() - self.created_at).total_seconds())
        return waited if waited > settings.CULPRIT_WORKER_STALLED_AFTER else None

    @property
    def retrying_attempt(self) -> int | None:
        """The attempt a job put back in the queue after its worker stopped will be (the page says so), else None."""
        return self.attempt_shown if self.status == QUEUED else None

    @classmethod
    def claim(cls, pk: int, *, stale_before=None, **extra) -> bool:
        """queued -> running, counting an attempt, once; with ``stale_before`` also a running job whose heartbeat is
        older (its worker died). False when another worker holds it, it finished, or its attempts are spent: one
        conditional UPDATE, so two workers never both win."""
        now = timezone.now()
        claimable = Q(status=QUEUED)
        if stale_before is not None:
            claimable |= Q(status=RUNNING, heartbeat_at__lt=stale_before) | Q(
                status=RUNNING, heartbeat_at__isnull=True
            )
        return bool(
            cls.objects.filter(claimable, pk=pk, attempts__lt=cls.MAX_ATTEMPTS).update(
                status=RUNNING, attempts=F("attempts") + 1, started_at=now, heartbeat_at=now, **extra
            )
        )

    @classmethod
    def claim_or_busy(cls, pk: int, *, running_after: int, **extra) -> bool:
        """``claim`` with a running job's heartbeat older than ``running_after`` seconds counted as a dead worker's;
        raises ``JobBusy`` when a live worker holds the job. False when it finished or its attempts are spent."""
        now = timezone.now()
        stale = now - timedelta(seconds=running_after)
        if cls.claim(pk, stale_before=stale, **extra):
            return True
        row = cls.objects.filter(pk=pk).values("status", "heartbeat_at").first()
        if row and row["status"] == RUNNING and row["heartbeat_at"] and row["heartbeat_at"] >= stale:
            age = (now - row["heartbeat_at"]).total_seconds()
            raise JobBusy(cls._meta.verbose_name, pk, retry_in=max(5, int(running_after - age) + 2))
        return False

    @classmethod
    def live_rows(cls, pk: int) -> models.QuerySet:
        """The job while it is live: what a heartbeat moves (a finished or deleted job is left alone)."""
        return cls.objects.filter(pk=pk, status__in=LIVE_STATUSES)

    @classmethod
    def fail_live(cls, pk: int, reason: str, **extra) -> bool:
        """A live job -> failed with a readable reason; a job that finished meanwhile keeps its state."""
        return bool(
            cls.live_rows(pk).update(status=FAILED, error=reason[:2000], finished_at=timezone.now(), **extra)
        )
