"""The reaper for runs, campaigns and model trainings whose workers vanished (Celery beat, every CULPRIT_REAP_EVERY s)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from tracing.jobs import RUNNING
from tracing.services.reaper import gave_up_reason, job_rows_reap, stale_jobs_reap

from ..models import AttributionRun, AttributorModel, AttributorStatus, InjectionCampaign
from .runs import run_fail

# How much longer a quiet run or campaign waits while other jobs are visibly being worked on (``jobs_reap``).
WAITING_FACTOR = 10
# Trainings keep a restart counter of their own (``AttributorModel.reaped``); runs and campaigns count attempts.
MAX_REAPS = 5
GAVE_UP = (
    f"gave up after {MAX_REAPS} restarts: the workers running it stopped each time (killed, out of memory, "
    "or the broker lost the work)"
)


def jobs_reap(*, stale_after: int, running_after: int | None = None) -> dict[str, int]:
    """Runs, campaigns and model trainings whose workers vanished: their start task is sent again -- it queues only
    the traces without a verdict, the injections still pending; a training starts over, having written nothing --
    or, with their attempts spent, they fail with a readable reason.

    Runs and campaigns follow ``tracing.services.reaper.job_rows_reap``: every task of theirs beats their heartbeat
    while it works, so a running one quiet for ``running_after`` seconds (``CULPRIT_REAP_RUNNING_AFTER``) lost its
    worker and goes back to queued; a queued one waits ``stale_after``. Trainings wait ``stale_after`` in either
    state.

    A run whose trace tasks all wait behind another job's looks quiet too. So while another run or campaign beat its
    heartbeat within ``running_after`` (the workers are alive and busy), a quiet one is given ``WAITING_FACTOR`` times
    longer before it counts as lost: a run queued behind a long one is not "retrying", and one whose worker really
    died is still restarted, at the latest when the workers fall quiet or the longer wait runs out."""
    from django.conf import settings

    from ..tasks import start_campaign_task, start_run_task, train_attributor_task

    running_after = running_after if running_after is not None else settings.CULPRIT_REAP_RUNNING_AFTER
    if workers_busy(within=running_after):
        running_after *= WAITING_FACTOR
    runs = job_rows_reap(
        AttributionRun,
        running_after=running_after,
        queued_after=stale_after,
        enqueue=start_run_task.delay,
        fail=lambda run: run_fail(run_id=run.pk, reason=gave_up_reason(run)),
    )
    campaigns = job_rows_reap(
        InjectionCampaign,
        running_after=running_after,
        queued_after=stale_after,
        enqueue=start_campaign_task.delay,
    )
    trainings = stale_jobs_reap(
        AttributorModel.objects.filter(status__in=[AttributorStatus.QUEUED, AttributorStatus.RUNNING]),
        stale_after=stale_after,
        hopeless=lambda row: row.reaped >= MAX_REAPS,
        fail=_training_fail,
        enqueue=train_attributor_task.delay,
        bump={"reaped": F("reaped") + 1},
    )
    return {key: runs[key] + campaigns[key] + trainings[key] for key in runs}


def workers_busy(*, within: int) -> bool:
    """Whether a run or a campaign showed a sign of life in the last ``within`` seconds (a worker is busy on it)."""
    since = timezone.now() - timedelta(seconds=within)
    return any(
        model.objects.filter(status=RUNNING, heartbeat_at__gte=since).exists()
        for model in (AttributionRun, InjectionCampaign)
    )


def _training_fail(model: AttributorModel) -> None:
    AttributorModel.objects.filter(
        pk=model.pk, status__in=[AttributorStatus.QUEUED, AttributorStatus.RUNNING]
    ).update(status=AttributorStatus.FAILED, error=GAVE_UP[:2000], stage="failed", finished_at=timezone.now())
