"""The reaper for runs, campaigns and model trainings whose workers vanished (Celery beat, every minute)."""

from __future__ import annotations

from django.db.models import F
from django.utils import timezone

from tracing.services.reaper import stale_jobs_reap

from ..models import (
    AttributionRun,
    AttributorModel,
    AttributorStatus,
    CampaignStatus,
    InjectionCampaign,
    RunStatus,
)
from .runs import run_fail

MAX_REAPS = 5
GAVE_UP = (f"gave up after {MAX_REAPS} restarts: the workers running it stopped each time (killed, out of memory, "
           "or the broker lost the work)")


def jobs_reap(*, stale_after: int) -> dict[str, int]:
    """Runs, campaigns and model trainings whose workers vanished: their start task is sent again -- it queues only
    the traces without a verdict, the injections still pending; a training starts over, having written nothing --
    or, after ``MAX_REAPS`` restarts, they fail with a readable reason (``tracing.services.reaper.stale_jobs_reap``).
    Run every minute by Celery beat."""
    from ..tasks import start_campaign_task, start_run_task, train_attributor_task

    counts = {"requeued": 0, "failed": 0}
    for live, enqueue, fail in (
        (AttributionRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING]), start_run_task.delay,
         lambda run: run_fail(run_id=run.pk, reason=GAVE_UP)),
        (InjectionCampaign.objects.filter(status__in=[CampaignStatus.QUEUED, CampaignStatus.RUNNING]),
         start_campaign_task.delay, _campaign_fail),
        (AttributorModel.objects.filter(status__in=[AttributorStatus.QUEUED, AttributorStatus.RUNNING]),
         train_attributor_task.delay, _training_fail),
    ):
        reaped = stale_jobs_reap(live, stale_after=stale_after, hopeless=lambda row: row.reaped >= MAX_REAPS,
                                 fail=fail, enqueue=enqueue, bump={"reaped": F("reaped") + 1})
        counts = {key: counts[key] + reaped[key] for key in counts}
    return counts


def _campaign_fail(campaign: InjectionCampaign) -> None:
    InjectionCampaign.objects.filter(pk=campaign.pk, status__in=[CampaignStatus.QUEUED, CampaignStatus.RUNNING]).update(
        status=CampaignStatus.FAILED, error=GAVE_UP[:2000], finished_at=timezone.now())


def _training_fail(model: AttributorModel) -> None:
    AttributorModel.objects.filter(pk=model.pk, status__in=[AttributorStatus.QUEUED, AttributorStatus.RUNNING]).update(
        status=AttributorStatus.FAILED, error=GAVE_UP[:2000], stage="failed", finished_at=timezone.now())
