from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services
from .models import DatasetExport

# Database hiccups are worth retrying; anything else is a real failure the service has written onto the row.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_RETRIES = 5


@shared_task(bind=True, name="annotations.export_dataset", max_retries=MAX_RETRIES,
             soft_time_limit=services.EXPORT_TIME_LIMIT - 60, time_limit=services.EXPORT_TIME_LIMIT)
def export_dataset_task(self, export_id: int) -> None:
    try:
        services.export_run(export_id=export_id)
    except DatasetExport.DoesNotExist:
        return  # deleted before or while it ran: nothing to do
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= MAX_RETRIES:
            export = DatasetExport.objects.get(pk=export_id)
            services.export_fail(export=export, reason=f"the database stayed unavailable ({exc.__class__.__name__})")
            return
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 30)) from exc


@shared_task(name="annotations.reap_jobs")
def reap_jobs_task(stale_after: int | None = None) -> dict[str, int]:
    """Celery beat, every minute: re-enqueue exports whose worker vanished, fail those out of attempts."""
    from django.conf import settings

    return services.exports_reap(stale_after=stale_after or settings.CULPRIT_REAP_EXPORT_AFTER)
