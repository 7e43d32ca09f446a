from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services
from .models import IngestJob

# Database hiccups (a restart, a dropped connection) are worth retrying; anything else is a real failure that the
# service has already written onto the job.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
MAX_RETRIES = 5


@shared_task(bind=True, name="tracing.ingest_file", max_retries=MAX_RETRIES)
def ingest_file_task(self, job_id: int) -> None:
    try:
        services.ingest_job_run(job_id=job_id)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= MAX_RETRIES:
            job = IngestJob.objects.get(pk=job_id)
            services.ingest_job_fail(job=job, reason=f"the database stayed unavailable ({exc.__class__.__name__})")
            return
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 30)) from exc
