"""The reaper for runs and campaigns whose workers vanished (Celery beat, every minute)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import AttributionRun, RunStatus

logger = logging.getLogger(__name__)

from .runs import run_fail

# --- the reaper -------------------------------------------------------------------------------------------------------

MAX_REAPS = 5


def jobs_reap(*, stale_after: int) -> dict[str, int]:
    """Runs and campaigns whose workers vanished (no sign of life for ``stale_after`` seconds, longer than one task
    may run): their start task is sent again -- it queues only the traces without a verdict, the injections still
    pending -- or, after ``MAX_REAPS`` tries, they fail with a readable reason. Run every minute by Celery beat."""
    from datetime import timedelta

    from django.db.models import Q

    from ..models import CampaignStatus, InjectionCampaign
    from ..tasks import start_campaign_task, start_run_task

    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    counts = {"requeued": 0, "failed": 0}
    reason = (f"gave up after {MAX_REAPS} restarts: the workers running it stopped each time (killed, out of memory, "
              "or the broker lost the work)")
    for model, live, task, fail in (
        (AttributionRun, [RunStatus.QUEUED, RunStatus.RUNNING], start_run_task,
         lambda pk: run_fail(run_id=pk, reason=reason)),
        (InjectionCampaign, [CampaignStatus.QUEUED, CampaignStatus.RUNNING], start_campaign_task,
         lambda pk: _campaign_fail(pk, reason)),
    ):
        for pk, beat, reaped in model.objects.filter(stale, status__in=live).values_list(
                "pk", "heartbeat_at", "reaped")[:1000]:
            if reaped >= MAX_REAPS:
                fail(pk)
                counts["failed"] += 1
            elif model.objects.filter(pk=pk, heartbeat_at=beat).update(heartbeat_at=timezone.now(),
                                                                      reaped=F("reaped") + 1):
                transaction.on_commit(lambda task=task, pk=pk: task.delay(pk))
                counts["requeued"] += 1
    return counts


def _campaign_fail(campaign_id: int, reason: str) -> None:
    from ..models import CampaignStatus, InjectionCampaign

    InjectionCampaign.objects.filter(pk=campaign_id, status__in=[CampaignStatus.QUEUED, CampaignStatus.RUNNING]).update(
        status=CampaignStatus.FAILED, error=reason[:2000], finished_at=timezone.now())
