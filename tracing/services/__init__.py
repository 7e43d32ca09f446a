"""Writes for the tracing app, one module per sub-domain; import them from here."""

from __future__ import annotations

from .ingest import MAX_INGEST_ATTEMPTS, ingest_job_fail, ingest_job_run, ingest_jobs_create
from .projects import LastOwnerError, membership_change, membership_set, project_create, project_get_or_create
from .uploads import IncomingFile, expand_incoming, raw_upload_store
from .writer import STEP_BATCH_SIZE, gold_write, labels_attach, trace_create_from_parsed

__all__ = [
    "MAX_INGEST_ATTEMPTS",
    "STEP_BATCH_SIZE",
    "IncomingFile",
    "LastOwnerError",
    "expand_incoming",
    "gold_write",
    "ingest_job_fail",
    "ingest_job_run",
    "ingest_jobs_create",
    "labels_attach",
    "membership_change",
    "membership_set",
    "project_create",
    "project_get_or_create",
    "raw_upload_store",
    "trace_create_from_parsed",
]
