from __future__ import annotations

import logging

from celery import shared_task

from config import broker

from . import services
from .job_tasks import JobTask, resend_when_busy
from .jobs import JobBusy
from .models import IngestJob
from .services.otlp_build_many import PARENT_WAIT

logger = logging.getLogger(__name__)


def _ingest_job_fail(job_id: int, reason: str) -> None:
    services.ingest_job_fail(job=IngestJob.objects.get(pk=job_id), reason=reason)


@shared_task(base=JobTask, bind=True, name="tracing.ingest_file", fail_job=_ingest_job_fail)
def ingest_file_task(self, job_id: int, busy_retries: int = 0) -> None:
    # The service claims the job and runs it under its own heartbeat (tracing.services.ingest.ingest_job_run).
    try:
        services.ingest_job_run(job_id=job_id)
    except JobBusy as busy:
        resend_when_busy(ingest_file_task, busy, job_id, busy_retries)


@shared_task(base=JobTask, bind=True, name="tracing.rebuild_otlp_trace")
def rebuild_otlp_trace_task(self, project_id: int, trace_id: str) -> None:
    # Idempotent: a build takes the spans not built yet under a per-trace lock and rolls back whole if killed, so a
    # re-delivery or a late duplicate finds nothing to do or finishes the work.
    services.otlp_trace_rebuild(project_id=project_id, trace_id=trace_id)


@shared_task(base=JobTask, bind=True, name="tracing.build_otlp_traces")
def build_otlp_traces_task(
    self, project_id: int, trace_ids: list[str], wait_for_parents: bool = True
) -> None:
    # The builds one OTLP request asked for: new traces in one transaction, the others one by one. Idempotent as
    # rebuild_otlp_trace_task is (a redelivery finds the built spans built and builds the rest). A new trace still
    # missing a parent span waits: the request that brings the parent builds it whole, else this task, sent again
    # for it alone, does PARENT_WAIT seconds later (a lost message is the reaper's, as for any unbuilt span).
    waiting = services.otlp_traces_rebuild(
        project_id=project_id, trace_ids=trace_ids, wait_for_parents=wait_for_parents
    )
    if waiting:
        broker.send(build_otlp_traces_task, project_id, waiting, False, countdown=PARENT_WAIT)


@shared_task(name="tracing.search_index")
def search_index_task() -> int:
    # Idempotent: it indexes whatever steps are still pending, under row locks, one transaction per batch.
    return services.search_index_run()


@shared_task(name="tracing.reap_jobs")
def reap_jobs_task(stale_after: int | None = None, running_after: int | None = None) -> dict[str, int]:
    """Celery beat, every CULPRIT_REAP_EVERY seconds: re-enqueue ingest jobs whose worker vanished (a running job
    whose heartbeat is older than CULPRIT_REAP_RUNNING_AFTER, a queued one older than stale_after), fail those out
    of attempts."""
    from django.conf import settings

    from .services.otlp import otlp_builds_reap

    stale_after = stale_after or settings.CULPRIT_REAP_INGEST_AFTER
    counts = services.ingest_jobs_reap(
        stale_after=stale_after, running_after=running_after or settings.CULPRIT_REAP_RUNNING_AFTER
    )
    # OTLP builds whose task went missing (a build takes seconds; the same staleness bound is ample).
    otlp_builds_reap(stale_after=stale_after, enqueue=lambda p, t: broker.send(rebuild_otlp_trace_task, p, t))
    return counts


@shared_task(name="tracing.purge_failed_uploads")
def purge_failed_uploads_task(older_than: int | None = None) -> int:
    """Celery beat, hourly: delete the stored bytes of uploads whose every job failed (kept a day to look into)."""
    from django.conf import settings

    from .services.uploads import failed_uploads_purge

    return failed_uploads_purge(
        older_than=older_than if older_than is not None else settings.CULPRIT_KEEP_FAILED_UPLOADS_FOR
    )
