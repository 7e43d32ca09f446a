"""Deleting traces: a project's owner removes runs (a test run, data sent by mistake) with everything that hangs from
them -- steps, agents, labels, verdicts, queue items, search rows -- and, for a trace the OTLP endpoint built, the
spans it stored, so nothing is left to rebuild it from. ``DELETE_BATCH`` traces per transaction, each batch all or
nothing; an audit event names what went."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from .. import extensions
from ..formats.otlp_json import OtlpJson
from ..models import OtlpPendingBuild, OtlpSpan, Project, Step, Trace
from .audit import audit_record
from .otlp_build import _lock

DELETE_BATCH = 100  # traces per transaction
# Traces one request may delete: a request stays bounded (the list's filters narrow a larger set).
MAX_DELETE = 5000
NAMES_KEPT = 20  # trace names the audit event lists


def traces_delete(*, project: Project, trace_ids: list[int], actor: Any = None) -> int:
    """Delete the project's traces among ``trace_ids`` (another project's ids are ignored); how many went."""
    ids = sorted(
        set(Trace.objects.filter(project=project, pk__in=list(trace_ids)).values_list("pk", flat=True))
    )
    if len(ids) > MAX_DELETE:
        raise ValueError(
            f"at most {MAX_DELETE:,} traces at a time: narrow the selection ({len(ids):,} traces)"
        )
    names: list[str] = []
    try:
        for start in range(0, len(ids), DELETE_BATCH):
            with transaction.atomic():
                names += _delete_batch(project, ids[start : start + DELETE_BATCH])
    finally:  # the batches that went are recorded even when a later one fails
        if names:
            audit_record(
                action="traces.deleted",
                project=project,
                actor=actor,
                target=names[0] if len(names) == 1 else f"{len(names)} traces",
                details={"count": len(names), "names": names[:NAMES_KEPT]},
            )
    return len(names)


def _delete_batch(project: Project, ids: list[int]) -> list[str]:
    rows = list(
        Trace.objects.filter(pk__in=ids).values_list("name", "external_id", "upload_id", "source_format")
    )
    received = sorted(
        external for _, external, upload, fmt in rows if upload is None and fmt == OtlpJson.name and external
    )
    # A build of such a trace running now finishes first; one that comes later finds no spans to build.
    for trace_id in received:
        _lock(project.pk, trace_id)
    if received:
        OtlpSpan.objects.filter(project=project, trace_id__in=received).delete()
        OtlpPendingBuild.objects.filter(project=project, trace_id__in=received).delete()
    extensions.traces_deleted(project.pk, ids)
    # The steps in one statement (no row points at a step, so none is loaded), then the traces and what cascades.
    Step.objects.filter(trace_id__in=ids).delete()
    Trace.objects.filter(pk__in=ids).delete()
    return [name for name, *_ in rows]
