from __future__ import annotations

from celery import shared_task

from tracing.job_tasks import JobTask, resend_when_busy
from tracing.jobs import JobBusy

from . import services
from .models import DatasetExport


def _export_fail(export_id: int, reason: str) -> None:
    export = DatasetExport.objects.filter(pk=export_id).first()
    if export is not None:
        services.export_fail(export=export, reason=reason)


@shared_task(
    base=JobTask,
    bind=True,
    name="annotations.export_dataset",
    fail_job=_export_fail,
    soft_time_limit=services.EXPORT_TIME_LIMIT - 60,
    time_limit=services.EXPORT_TIME_LIMIT,
)
def export_dataset_task(self, export_id: int, busy_retries: int = 0) -> None:
    # The service claims the export and writes it under its own heartbeat (annotations.services.exports.export_run).
    try:
        services.export_run(export_id=export_id)
    except JobBusy as busy:  # a re-delivered message while a live worker writes it
        resend_when_busy(export_dataset_task, busy, export_id, busy_retries)
    except DatasetExport.DoesNotExist:
        return  # deleted before or while it ran: nothing to do


@shared_task(name="annotations.reap_jobs")
def reap_jobs_task(stale_after: int | None = None, running_after: int | None = None) -> dict[str, int]:
    """Celery beat, every CULPRIT_REAP_EVERY seconds: re-enqueue exports whose worker vanished (running with a
    heartbeat older than CULPRIT_REAP_RUNNING_AFTER, queued for longer than stale_after), fail those out of
    attempts."""
    from django.conf import settings

    return services.exports_reap(
        stale_after=stale_after or settings.CULPRIT_REAP_EXPORT_AFTER,
        running_after=running_after or settings.CULPRIT_REAP_RUNNING_AFTER,
    )
