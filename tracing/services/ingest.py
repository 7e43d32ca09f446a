"""Ingest jobs: one per file, claimed by a worker, turned into traces by a format plug-in and the writer."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .. import extensions
from ..formats import ParsedLabels, ParsedTrace, Source, TraceFormatError, detect_format_scored, get_format
from ..jobs import LIVE_STATUSES
from ..models import DuplicatePolicy, IngestJob, JobStatus, Project, Trace
from .advisory import external_ids_lock
from .duplicates import twin_labels_attach, twins_find
from .labels import labels_attach
from .parse_ahead import parsed_items
from .reaper import gave_up_reason, heartbeat, job_rows_reap
from .uploads import IncomingFile, expand_incoming, raw_upload_store
from .writer import PreparedTrace, trace_create_from_parsed, trace_prepare, traces_create_prepared

logger = logging.getLogger(__name__)

# A job whose worker died is retried; after this many starts it fails with a readable reason instead.
MAX_INGEST_ATTEMPTS = IngestJob.MAX_ATTEMPTS


def ingest_jobs_create(
    *,
    project: Project,
    files: Iterable[IncomingFile],
    user: AbstractBaseUser | None,
    requested_format: str = "",
    duplicates: str = DuplicatePolicy.SKIP,
    enqueue: bool = True,
) -> list[IngestJob]:
    """Record one IngestJob per file (zip members count as files) and queue the importable ones.

    A file that cannot even be stored (too big, broken zip) gets a failed job straight away, so the person sees
    it next to the others; bytes already imported into this project give a 'duplicate' job naming the traces.
    ``duplicates``: "skip" leaves out traces whose content is already in the project, "import" writes them anyway.
    """

    batch = uuid.uuid4()
    jobs = []
    for incoming in files:
        for entry in expand_incoming(incoming):
            jobs.append(
                _job_for_entry(
                    project=project,
                    entry=entry,
                    user=user,
                    batch=batch,
                    requested_format=requested_format,
                    duplicates=duplicates,
                )
            )
    if enqueue:
        from ..tasks import ingest_file_task

        for job in jobs:
            if job.status == JobStatus.QUEUED:
                transaction.on_commit(lambda job=job: _enqueue(ingest_file_task, job))
    return jobs


def _enqueue(task: Any, job: IngestJob) -> None:
    # With the broker down the job stays queued (the reaper sends it again later) and the request still succeeds;
    # ``waiting_for_broker`` lets the caller say so.
    from config import broker

    job.waiting_for_broker = not broker.send(task, job.pk)


def _job_for_entry(
    *,
    project: Project,
    entry: IncomingFile | tuple[str, str],
    user: AbstractBaseUser | None,
    batch: Any,
    requested_format: str,
    duplicates: str,
) -> IngestJob:
    job = IngestJob(
        project=project,
        batch=batch,
        created_by=user,
        requested_format=requested_format,
        duplicates=duplicates,
    )
    if isinstance(entry, tuple):
        job.filename, reason = entry
        job.status, job.error, job.finished_at = JobStatus.FAILED, f"{job.filename}: {reason}", timezone.now()
        job.save()
        return job
    job.filename = entry.name[:500]
    job.upload = raw_upload_store(project=project, incoming=entry, user=user)
    existing = list(job.upload.traces.order_by("ordinal").values_list("pk", flat=True))
    if existing:
        job.status, job.trace_ids, job.finished_at = JobStatus.DUPLICATE, existing, timezone.now()
        job.detected_format = job.upload.traces.values_list("source_format", flat=True).first() or ""
    job.save()
    return job


# --- running an ingest job -------------------------------------------------------------------------------------


def ingest_job_run(*, job_id: int) -> IngestJob:
    """Import one job's file. Safe to call again for the same job (re-delivery after a crash).

    The claim never lets two workers run one job: it takes a queued job, or a running one whose heartbeat went stale
    (its worker died). A running job with a fresh heartbeat raises ``tracing.jobs.JobBusy``. While the import runs, a
    thread moves the heartbeat every ``CULPRIT_JOB_HEARTBEAT_EVERY`` seconds.
    """
    from django.conf import settings

    claimed = IngestJob.claim_or_busy(job_id, running_after=settings.CULPRIT_REAP_RUNNING_AFTER)
    job = IngestJob.objects.select_related("upload", "project").get(pk=job_id)
    if not claimed:
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):  # every attempt died half-way
            return ingest_job_fail(job=job, reason=f"gave up after {job.attempts} interrupted attempts")
        return job  # already finished: a duplicate delivery
    try:
        with heartbeat(
            IngestJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING),
            every=settings.CULPRIT_JOB_HEARTBEAT_EVERY,
        ):  # running only: a re-queued job stops beating
            _import_job(job)
    except TraceFormatError as exc:
        return ingest_job_fail(job=job, reason=str(exc))
    except (OperationalError, InterfaceError):
        raise  # transient: the task retries, and the claim above lets the retry in
    except Exception:
        logger.exception("ingest job %s crashed", job.pk)
        return ingest_job_fail(job=job, reason="an internal error stopped the import; it has been logged")
    return job


def ingest_job_fail(*, job: IngestJob, reason: str) -> IngestJob:
    job.status, job.error, job.finished_at = JobStatus.FAILED, f"{job.filename}: {reason}", timezone.now()
    job.save(update_fields=["status", "error", "finished_at"])
    return job


def _import_job(job: IngestJob) -> None:
    if job.upload is None:
        raise TraceFormatError("the uploaded bytes are no longer stored")
    upload = job.upload
    source = Source(job.filename, lambda: upload.file.storage.open(upload.file.name, "rb"), upload.size)
    if job.requested_format:
        fmt, confidence = get_format(job.requested_format), 1.0
    else:
        fmt, confidence = detect_format_scored(source)
    job.detected_format, job.confidence = fmt.name, round(confidence, 3)
    job.save(update_fields=["detected_format", "confidence"])
    report = _Report()
    batch: list[tuple[int, ParsedTrace]] = []
    steps = 0  # in ``batch``
    prepared: dict[int, PreparedTrace] = {}  # by ordinal: traces a parse-ahead process already prepared
    try:
        for ordinal, (item, ready) in enumerate(parsed_items(fmt, source)):
            if isinstance(item, ParsedLabels):
                _import_batch(job=job, batch=batch, report=report)  # labels attach to the traces before them
                batch, steps = [], 0
                _attach_labels(job, item, report)
                continue
            if not isinstance(item.steps, list):  # its steps are read from the file while it is written
                _import_batch(
                    job=job, batch=batch, report=report
                )  # alone in its transaction (see _write_new)
                _import_batch(job=job, batch=[(ordinal, item)], report=report)
                batch, steps = [], 0
                continue
            batch.append((ordinal, item))
            if ready is not None:
                prepared[ordinal] = ready
            steps += len(item.steps)
            if len(batch) >= BATCH_TRACES or steps >= BATCH_STEPS:
                _import_batch(job=job, batch=batch, report=report, prepared=prepared)
                batch, steps = [], 0
        _import_batch(job=job, batch=batch, report=report, prepared=prepared)
    except TraceFormatError:
        _undo(job)  # a file fails whole: traces committed before the bad part are taken back out
        raise
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        # A reader met a shape it did not foresee: that is our bug to fix (logged), but for the person it is a file
        # this reader cannot take, and it must fail like one, cleanly and whole.
        logger.exception("format %s crashed on %s", fmt.name, job.filename)
        _undo(job)
        raise TraceFormatError(
            f"this file does not have the shape the {fmt.label} reader expects ({exc.__class__.__name__})"
        ) from None
    if not report.items:
        raise TraceFormatError(f"no traces or labels found in this {fmt.label} file")
    job.report = report.as_dict()
    # Every trace already existed (made by another job from the same bytes, or with the same content): report the
    # upload as a duplicate.
    duplicate = (report.traces or report.duplicates) and not report.labels and not _committed_trace_ids(job)
    job.status = JobStatus.DUPLICATE if duplicate else JobStatus.SUCCEEDED
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at", "trace_ids", "report"])


class _Report:
    """What the import report shows for one file: counts and warnings, capped so a noisy file stays readable."""

    # Kept one by one (the upload page groups them by kind, ``ingest_report.warning_groups``): a label file for a
    # whole benchmark warns once per run that is not in the project yet, and every one of those is worth a line.
    MAX_WARNINGS = 500
    MAX_DUPLICATES = 200  # listed one by one; the count goes on past it

    def __init__(self) -> None:
        self.items = 0
        self.traces = 0
        self.steps = 0
        self.agents = 0
        self.labels = 0
        self.waiting = 0  # label sets kept for traces the project does not hold yet
        self.duplicates = 0
        self.duplicate_of: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.dropped = 0

    def duplicate(self, *, name: str, twin: Trace, labels: int) -> None:
        self.items += 1
        self.duplicates += 1
        self.labels += labels
        if len(self.duplicate_of) < self.MAX_DUPLICATES:
            self.duplicate_of.append(
                {"name": name, "trace_id": twin.pk, "trace_name": twin.name, "labels": labels}
            )

    def warn(self, messages: Iterable[str]) -> None:
        for message in messages:
            if len(self.warnings) < self.MAX_WARNINGS:
                self.warnings.append(message)
            else:
                self.dropped += 1

    def as_dict(self) -> dict[str, Any]:
        warnings = self.warnings + ([f"… and {self.dropped} more warnings"] if self.dropped else [])
        return {
            "traces": self.traces,
            "steps": self.steps,
            "agents": self.agents,
            "labels": self.labels,
            "waiting": self.waiting,
            "duplicates": self.duplicates,
            "duplicate_of": self.duplicate_of,
            "warnings": warnings,
        }


def _attach_labels(job: IngestJob, labels: ParsedLabels, report: _Report) -> None:
    with transaction.atomic():
        trace_ids, written, warnings = labels_attach(project=job.project, labels=labels, job_id=job.pk)
    report.items += 1
    report.labels += written
    report.waiting += int(not trace_ids)
    report.warn(warnings)


# Traces written per transaction. One transaction per trace made a bundle of small traces pay a commit, a job-row
# update and a rewrite of the job's whole trace list per trace: quadratic in the bundle (5.9 MB of TOAST for five
# 1,000-trace jobs, issue 19). A batch is now written with a fixed ~12 queries whatever its size
# (writer.traces_create_prepared), so 50 or 500 traces per batch measure the same (bench/scale.py, 2,000 Who&When
# traces: 48-50 traces/s before, ~110 after, most of it PostgreSQL's full-text index on step content). BATCH_STEPS
# bounds the parsed steps held at once (~10 MB of parsed content) and the work a killed worker loses; it also keeps
# a job's progress moving every few seconds.
BATCH_TRACES = 500
BATCH_STEPS = 5_000


def _import_batch(
    *,
    job: IngestJob,
    batch: list[tuple[int, ParsedTrace]],
    report: _Report,
    prepared: dict[int, PreparedTrace] | None = None,
) -> None:
    """Write a batch of traces in one transaction, with one update of the job's progress and trace list (appended
    to, never rewritten per trace), then report them. Traces an earlier attempt of this job (or another job on the
    same bytes) committed are linked, not written again; traces whose content is already in the project are
    skipped as duplicates (unless the job imports them anyway). If another job races us on the same bytes, the
    batch falls back to one trace per transaction, which knows how to step aside. ``prepared``: the batch's traces
    already prepared, by ordinal (taken out of it)."""
    if not batch:
        return
    ready = {o: prepared.pop(o) for o, _ in batch if o in prepared} if prepared else {}
    from django.db.models import Count

    from ..models import GoldLabel

    existing = {
        t.ordinal: t for t in Trace.objects.filter(upload=job.upload, ordinal__in=[o for o, _ in batch])
    }
    new = [(o, p) for o, p in batch if o not in existing]
    twins: dict[int, Trace] = {}
    if new:
        try:
            with transaction.atomic():
                _bulk_transaction()
                created, twins = _write_new(job, new, ready)
                _record_written(job, created)
                extensions.traces_arrived(job.project_id, [t.pk for t in created])
        except IntegrityError:
            for ordinal, parsed in batch:
                _import_one(job=job, ordinal=ordinal, parsed=parsed, report=report, ready=ready.get(ordinal))
            return
        job.trace_ids = job.trace_ids + [t.pk for t in created]
        existing.update({t.ordinal: t for t in created})
    ours = {t.pk for t in created} if new else set()
    labels = dict(
        GoldLabel.objects.filter(trace__in=list(existing.values()))
        .order_by()
        .values("trace_id")
        .annotate(n=Count("id"))
        .values_list("trace_id", "n")
    )
    for ordinal, parsed in batch:
        if ordinal in twins:
            _report_duplicate(twin=twins[ordinal], parsed=parsed, report=report)
        else:
            trace = existing[ordinal]
            _report_trace(
                job=job, trace=trace, labels=labels.get(trace.pk, 0), report=report, listed=trace.pk in ours
            )


def _bulk_transaction() -> None:
    """Settings for the current transaction only, for writing a batch of traces (PostgreSQL).

    - Its COMMIT returns before its WAL is flushed (``synchronous_commit``). A batch of 5,000 steps writes ~7 MB of
      WAL, and waiting for the disk to take it cost ~33 ms a batch (issue 19). Nothing becomes inconsistent: a
      server crash can only lose the last batches committed, whole, with the job's progress that counts them, and
      the job retried after it writes them again. The job's final save is an ordinary commit, and WAL is flushed
      in order, so when a job says it succeeded every batch before it is on disk.
    - ``work_mem`` holds the batch's steps in memory for the statement-level check of their traces and agents
      (migration 0023), which spilled them to a temporary file at the default 4 MB. It bounds memory: a batch of
      larger steps still spills past it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute("SET LOCAL work_mem TO '32MB'")


def _import_one(
    *, job: IngestJob, ordinal: int, parsed: ParsedTrace, report: _Report, ready: PreparedTrace | None = None
) -> None:
    """One trace in its own transaction. ``ready``: the trace prepared already (by the parse-ahead child, whose
    parsed steps are placeholders: ``PreparedTrace.travel_light``)."""
    trace = Trace.objects.filter(upload=job.upload, ordinal=ordinal).first()
    if trace is None:
        try:
            with transaction.atomic():
                created, twins = _write_new(job, [(ordinal, parsed)], {ordinal: ready} if ready else None)
                # Progress and the job's own trace list move in the same transaction as the rows they count, so a
                # crash never leaves a job claiming a trace that is not there (and _undo knows what is its own).
                _record_written(job, created)
                extensions.traces_arrived(job.project_id, [t.pk for t in created])
        except IntegrityError:  # the same bytes are being imported by another job right now
            trace = Trace.objects.filter(upload=job.upload, ordinal=ordinal).first()
            if trace is None:
                raise
        else:
            if twins:
                _report_duplicate(twin=twins[ordinal], parsed=parsed, report=report)
                return
            (trace,) = created
            job.trace_ids = job.trace_ids + [trace.pk]
    _report_trace(job=job, trace=trace, labels=trace.gold_labels.count(), report=report)


def _write_new(
    job: IngestJob, new: list[tuple[int, ParsedTrace]], ready: dict[int, PreparedTrace] | None = None
) -> tuple[list[Trace], dict[int, Trace]]:
    """Write the traces of ``new`` (in the caller's transaction) except duplicates: returns the traces written and,
    per ordinal skipped, the trace of the project that already holds its content. A later copy of a run in the
    same batch is a duplicate of the first. A trace whose steps are still in the file is hashed as it is written,
    so it is written first and rolled back (a savepoint) if it turns out to be a duplicate. It comes alone in its
    batch (``_import_job``), so every transaction takes its hash locks at once, in sorted order, or takes one.
    ``ready``: traces of ``new`` already prepared, by ordinal."""
    skip = job.duplicates == DuplicatePolicy.SKIP
    ready = ready or {}
    prepared = {o: ready.get(o) or trace_prepare(p) for o, p in new if isinstance(p.steps, list)}
    hashes = {o: p.content_hash for o, p in prepared.items()} if skip else {}
    # Taken before the hash locks, as a trace written alone takes them (labels, then hash): never in a cycle.
    external_ids_lock(job.project_id, [p.external_id for _, p in new])
    by_hash = twins_find(project=job.project, digests=hashes.values())
    first_copy: dict[str, int] = {}  # hash -> ordinal of the batch's first trace with it, written below
    copies: dict[int, int] = {}  # ordinal -> that first ordinal
    to_write: list[tuple[int, PreparedTrace]] = []
    created: list[Trace] = []
    twins: dict[int, Trace] = {}
    for ordinal, parsed in new:
        digest = hashes.get(ordinal, "")
        twin = by_hash.get(digest)
        # The twin at this very (upload, ordinal) is this trace, committed by another job on the same bytes: writing
        # it raises IntegrityError, and the caller links it as before.
        if twin is not None and (twin.upload_id, twin.ordinal) != (job.upload_id, ordinal):
            twins[ordinal] = twin
        elif digest in first_copy and twin is None:
            copies[ordinal] = first_copy[digest]
        elif ordinal in prepared:
            if digest:
                first_copy[digest] = ordinal
            to_write.append((ordinal, prepared[ordinal]))
        elif skip:
            trace, twin = _write_streamed(job, ordinal, parsed)
            if twin is not None:
                twins[ordinal] = twin
            else:
                created.append(trace)
        else:
            created.append(
                trace_create_from_parsed(
                    project=job.project, upload=job.upload, ordinal=ordinal, parsed=parsed
                )
            )
    written = traces_create_prepared(project=job.project, upload=job.upload, items=to_write)
    by_ordinal = {t.ordinal: t for t in written}
    twins.update({ordinal: by_ordinal[first] for ordinal, first in copies.items()})
    created.extend(written)
    created.sort(key=lambda t: t.ordinal)
    return created, twins


class _Duplicate(Exception):
    def __init__(self, twin: Trace) -> None:
        super().__init__(f"duplicate of trace {twin.pk}")
        self.twin = twin


def _write_streamed(job: IngestJob, ordinal: int, parsed: ParsedTrace) -> tuple[Trace | None, Trace | None]:
    """(the trace, None) once written, or (None, its twin) when its content was already in the project."""
    name = parsed.name  # the writer gives it a unique name; the report names it as the file did
    try:
        with transaction.atomic():
            trace = trace_create_from_parsed(
                project=job.project, upload=job.upload, ordinal=ordinal, parsed=parsed
            )
            found = twins_find(project=job.project, digests=[trace.content_hash], exclude=trace.pk)
            if trace.content_hash in found:
                raise _Duplicate(found[trace.content_hash])
    except _Duplicate as duplicate:
        parsed.name = name
        return None, duplicate.twin
    return trace, None


def _record_written(job: IngestJob, created: list[Trace]) -> None:
    """One update of the job row per batch: progress, heartbeat and the new trace ids, appended in the database on
    PostgreSQL (the statement carries the batch's ids, not the job's whole list)."""
    ids = [t.pk for t in created]
    if connection.vendor == "postgresql":
        trace_ids = RawSQL("trace_ids || %s::jsonb", [json.dumps(ids)])
    else:
        trace_ids = job.trace_ids + ids
    IngestJob.objects.filter(pk=job.pk).update(
        steps_done=F("steps_done") + sum(t.step_count for t in created),
        trace_ids=trace_ids,
        heartbeat_at=timezone.now(),
    )


def _report_duplicate(*, twin: Trace, parsed: ParsedTrace, report: _Report) -> None:
    """Count a trace skipped as a duplicate of ``twin``, giving ``twin`` the file's labels if it has none."""
    warnings: list[str] = []
    with transaction.atomic():
        labels = twin_labels_attach(twin=twin, parsed=parsed, warnings=warnings)
    report.duplicate(name=parsed.name, twin=twin, labels=labels)
    report.warn(warnings)


def _report_trace(
    *, job: IngestJob, trace: Trace, labels: int, report: _Report, listed: bool = False
) -> None:
    """Count an imported trace in the job's report and list it on the job (unless ``listed`` says it is already:
    a scan of the list per trace made a 20,000-trace job quadratic)."""
    if not listed and trace.pk not in job.trace_ids:
        job.trace_ids.append(trace.pk)  # another job's trace: linked in the report, not counted as ours
    report.items += 1
    report.traces += 1
    report.steps += trace.step_count
    report.agents += trace.agent_count
    report.labels += labels
    report.warn(getattr(trace, "import_warnings", []))


def _committed_trace_ids(job: IngestJob) -> list[int]:
    """Traces this job (any attempt of it) created: the list as committed, not as held in memory."""
    return list(IngestJob.objects.values_list("trace_ids", flat=True).get(pk=job.pk))


def ingest_jobs_stop(*, job_ids: list[int], reason: str) -> int:
    """Fail the unfinished jobs among ``job_ids`` (a command interrupted by Ctrl-C: no worker or reaper may pick them
    up later), taking out what a running one had committed. Returns how many were stopped; finished jobs stay."""
    stopped = 0
    for job in IngestJob.objects.filter(pk__in=job_ids, status__in=LIVE_STATUSES).select_related("upload"):
        _undo(job)
        stopped += IngestJob.fail_live(job.pk, f"{job.filename}: {reason}")
    return stopped


def _undo(job: IngestJob) -> None:
    """Delete what this job committed before its file turned out to be bad (traces it created, labels it parked)."""
    from ..models import PendingLabel

    mine = _committed_trace_ids(job)
    with transaction.atomic():
        Trace.objects.filter(pk__in=mine, upload=job.upload).delete()
        PendingLabel.objects.filter(job=job).delete()
        IngestJob.objects.filter(pk=job.pk).update(trace_ids=[], steps_done=0)
    job.trace_ids = []


# --- the reaper ----------------------------------------------------------------------------------------------------


def ingest_jobs_reap(*, stale_after: int, running_after: int | None = None) -> dict[str, int]:
    """Jobs whose worker vanished are re-enqueued, or failed with a readable reason once their attempts are spent
    (``reaper.job_rows_reap``: a running job quiet for ``running_after`` -- ``CULPRIT_REAP_RUNNING_AFTER`` -- goes
    back to queued; a queued one waits ``stale_after``). Run by Celery beat every ``CULPRIT_REAP_EVERY`` seconds."""
    from django.conf import settings

    from ..tasks import ingest_file_task

    running_after = running_after if running_after is not None else settings.CULPRIT_REAP_RUNNING_AFTER
    return job_rows_reap(
        IngestJob,
        running_after=running_after,
        queued_after=stale_after,
        enqueue=ingest_file_task.delay,
        fail=lambda job: ingest_job_fail(job=job, reason=gave_up_reason(job)),
    )
