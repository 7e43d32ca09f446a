"""Writes for the annotations app: dataset exports (create, run, fail, delete) and the file they produce.

An export is claimed with a conditional UPDATE (queued/running -> running, attempts + 1) and the row count checked,
so a finished export is never written twice; a re-delivered task whose first attempt died half-way writes the whole
file again. Every attempt writes into its own temporary name beside the final file and renames it into place with
``os.replace`` (atomic on one filesystem), then marks the row finished only if its own attempt still holds it: a
download sees no file or the whole file, never a partial one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from tracing.models import Project
from tracing.services import audit_record
from tracing.services.reaper import gave_up_reason, heartbeat, job_rows_reap

from ..exporters import get_exporter
from ..exporters.rows import STEP_CHUNK
from ..models import DatasetExport, ExportStatus
from ..selectors import ExportCase, ExportFilters, export_cases, export_manifest

logger = logging.getLogger(__name__)

# A job whose worker died is tried again; after this many starts it fails with a readable reason instead.
MAX_EXPORT_ATTEMPTS = DatasetExport.MAX_ATTEMPTS
# Progress is written to the row every this many steps: a few UPDATEs per second at the measured export speed.
PROGRESS_EVERY = 5 * STEP_CHUNK
# The export task's hard time limit (seconds). bench/export_speed.py writes 100,000 steps in well under a minute; an
# hour leaves room for exports of millions of steps.
EXPORT_TIME_LIMIT = 3660


def export_create(
    *, project: Project, fmt: str, filters: ExportFilters, user: AbstractBaseUser | None, enqueue: bool = True
) -> DatasetExport:
    get_exporter(fmt)  # KeyError for an unknown format, before a row exists
    with transaction.atomic():
        export = DatasetExport.objects.create(
            project=project, format=fmt, filters=filters.as_json(), created_by=user
        )
        audit_record(
            action="export.created",
            project=project,
            actor=user,
            target=f"export {export.pk} ({fmt})",
            details={"filters": export.filters},
        )
    if enqueue:
        from ..tasks import export_dataset_task

        transaction.on_commit(lambda: export_dataset_task.delay(export.pk))
    return export


def export_run(*, export_id: int) -> DatasetExport:
    """Build one export's file. Safe to call again for the same export (re-delivery after a crash)."""
    # A queued export, or a running one whose worker died (heartbeat older than CULPRIT_REAP_RUNNING_AFTER); one a
    # live worker is writing raises JobBusy and its task looks again later.
    claimed = DatasetExport.claim_or_busy(
        export_id, running_after=settings.CULPRIT_REAP_RUNNING_AFTER, steps_done=0
    )
    export = DatasetExport.objects.select_related("project").get(pk=export_id)
    if not claimed:
        if export.status == ExportStatus.RUNNING:  # every attempt died half-way
            return export_fail(export=export, reason=f"gave up after {export.attempts} interrupted attempts")
        return export  # already finished: a duplicate delivery writes nothing
    try:
        # Only this attempt's row beats: an attempt taken over by a newer one (after a redelivery) goes quiet.
        with heartbeat(
            DatasetExport.objects.filter(pk=export.pk, status=ExportStatus.RUNNING, attempts=export.attempts),
            every=settings.CULPRIT_JOB_HEARTBEAT_EVERY,
        ):
            _build(export)
    except (OperationalError, InterfaceError, DatasetExport.DoesNotExist):
        raise  # transient: the task retries (the claim above lets the retry in); or deleted meanwhile
    except SoftTimeLimitExceeded:
        return export_fail(
            export=export, reason=f"the export ran past its {EXPORT_TIME_LIMIT // 60} minute limit"
        )
    except Exception:
        logger.exception("dataset export %s crashed", export.pk)
        return export_fail(export=export, reason="an internal error stopped the export; it has been logged")
    return export


def _build(export: DatasetExport) -> None:
    filters = ExportFilters.from_json(export.filters)
    cases = export_cases(project=export.project, filters=filters)
    manifest = export_manifest(project=export.project, filters=filters, cases=cases, fmt=export.format)
    DatasetExport.objects.filter(pk=export.pk).update(
        cases_total=len(cases), steps_total=manifest["counts"]["steps"]
    )
    exporter = get_exporter(export.format)
    relative = f"exports/{export.project_id}/{export.pk}-{export.project.slug}.{exporter.extension}"
    final = Path(settings.MEDIA_ROOT) / relative
    mine = DatasetExport.objects.filter(pk=export.pk, status=ExportStatus.RUNNING, attempts=export.attempts)
    written = write_atomically(
        final,
        cases,
        manifest,
        export.format,
        progress=_ProgressWriter(export.pk),
        tag=f"attempt{export.attempts}",
        still_wanted=mine.exists,
    )
    # Only the attempt that still holds the row finishes it (a newer attempt would have bumped ``attempts``).
    finished = written is not None and mine.update(
        status=ExportStatus.SUCCEEDED,
        file=relative,
        file_size=final.stat().st_size,
        manifest=manifest | {"counts": manifest["counts"] | {"steps_written": written}},
        steps_done=written,
        finished_at=timezone.now(),
    )
    if not finished and not DatasetExport.objects.filter(pk=export.pk).exists():
        if written is not None:
            final.unlink(missing_ok=True)  # deleted between the rename and the update: leave no orphan file
        raise DatasetExport.DoesNotExist(f"export {export.pk} was deleted while it was written")
    _sweep_stale_temporaries(final)
    export.refresh_from_db()


def _sweep_stale_temporaries(final: Path) -> None:
    """Remove temporary files that attempts killed mid-write left behind. Only files older than the task's hard
    time limit: a younger one may belong to an attempt still running, whose rename must not be pulled away."""
    cutoff = time.time() - EXPORT_TIME_LIMIT - 60
    for leftover in final.parent.glob(f".{final.name}.*.tmp"):
        if leftover.stat().st_mtime < cutoff:
            leftover.unlink(missing_ok=True)


def write_atomically(
    final: Path,
    cases: list[ExportCase],
    manifest: dict[str, Any],
    fmt: str,
    *,
    progress: Any = None,
    tag: str = "",
    still_wanted: Callable[[], bool] | None = None,
) -> int | None:
    """Write the dataset to a temporary name beside ``final`` and rename it into place; returns steps written.

    ``still_wanted`` is asked just before the rename: an attempt that lost its row meanwhile (deleted, or taken
    over by a newer attempt after a redelivery) throws its file away instead of replacing the winner's, and
    gets None back."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.{tag or 'cli'}.tmp")
    try:
        written = get_exporter(fmt).write(temporary, cases, manifest, progress or (lambda n: None))
        if still_wanted is not None and not still_wanted():
            return None
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return written


class _ProgressWriter:
    """Counts written steps and moves the row's counter every ``PROGRESS_EVERY`` steps (one narrow UPDATE)."""

    def __init__(self, export_id: int) -> None:
        self.export_id = export_id
        self.done = 0
        self.reported = 0

    def __call__(self, steps: int) -> None:
        self.done += steps
        if self.done - self.reported >= PROGRESS_EVERY:
            DatasetExport.objects.filter(pk=self.export_id, status=ExportStatus.RUNNING).update(
                steps_done=self.done, heartbeat_at=timezone.now()
            )
            self.reported = self.done


def export_fail(*, export: DatasetExport, reason: str) -> DatasetExport:
    DatasetExport.objects.filter(pk=export.pk).update(
        status=ExportStatus.FAILED, error=reason, finished_at=timezone.now()
    )
    export.refresh_from_db()
    return export


def export_delete(*, export: DatasetExport, actor: AbstractBaseUser | None = None) -> None:
    """Remove the file and the row. An attempt still writing finds no row to finish and removes its own file."""
    if export.file:
        (Path(settings.MEDIA_ROOT) / export.file.name).unlink(missing_ok=True)
    audit_record(
        action="export.deleted",
        project=export.project,
        actor=actor,
        target=f"export {export.pk} ({export.format})",
        details={"cases": export.cases_total},
    )
    export.delete()


def exports_reap(*, stale_after: int, running_after: int | None = None) -> dict[str, int]:
    """Exports whose worker vanished are re-enqueued, or failed with the reason once their attempts are spent
    (``tracing.services.reaper.job_rows_reap``: a running export whose heartbeat is older than ``running_after`` --
    ``CULPRIT_REAP_RUNNING_AFTER`` -- goes back to queued; a queued one waits ``stale_after``). Celery beat, every
    ``CULPRIT_REAP_EVERY`` seconds."""
    from ..tasks import export_dataset_task

    running_after = running_after if running_after is not None else settings.CULPRIT_REAP_RUNNING_AFTER
    return job_rows_reap(
        DatasetExport,
        running_after=running_after,
        queued_after=stale_after,
        enqueue=export_dataset_task.delay,
        fail=lambda export: export_fail(export=export, reason=gave_up_reason(export)),
    )
