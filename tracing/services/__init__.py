"""Writes for the tracing app, one module per sub-domain; import them from here."""

from __future__ import annotations

from .audit import audit_record
from .deletion import MAX_DELETE, traces_delete
from .ingest import (
    MAX_INGEST_ATTEMPTS,
    ingest_job_fail,
    ingest_job_run,
    ingest_jobs_create,
    ingest_jobs_reap,
    ingest_jobs_stop,
)
from .labels import gold_write, labels_attach
from .otlp import otlp_id, otlp_spans_store, otlp_trace_rebuild, otlp_traces_rebuild
from .projects import LastOwnerError, membership_change, membership_set, project_create, project_get_or_create
from .search_index import search_index_pending, search_index_run, search_index_schedule
from .tokens import api_token_authenticate, api_token_create, api_token_revoke
from .totals import trace_totals_store
from .uploads import IncomingFile, expand_incoming, incoming_from_upload, raw_upload_store
from .writer import STEP_BATCH_SIZE, trace_create_from_parsed, trace_replace_from_parsed

__all__ = [
    "MAX_DELETE",
    "MAX_INGEST_ATTEMPTS",
    "STEP_BATCH_SIZE",
    "IncomingFile",
    "LastOwnerError",
    "api_token_authenticate",
    "audit_record",
    "api_token_create",
    "api_token_revoke",
    "expand_incoming",
    "gold_write",
    "incoming_from_upload",
    "ingest_job_fail",
    "ingest_job_run",
    "ingest_jobs_create",
    "ingest_jobs_reap",
    "ingest_jobs_stop",
    "labels_attach",
    "membership_change",
    "otlp_id",
    "otlp_spans_store",
    "otlp_trace_rebuild",
    "otlp_traces_rebuild",
    "membership_set",
    "project_create",
    "project_get_or_create",
    "raw_upload_store",
    "search_index_pending",
    "search_index_run",
    "search_index_schedule",
    "trace_create_from_parsed",
    "trace_replace_from_parsed",
    "traces_delete",
    "trace_totals_store",
]
