"""Writes for the tracing app: projects, uploads, ingest jobs and the traces they produce."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import File
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from .formats import ParsedTrace, Source, TraceFormatError, detect_format, get_format
from .models import (
    Agent,
    GoldLabel,
    IngestJob,
    JobStatus,
    LabelSource,
    Membership,
    Project,
    RawUpload,
    Role,
    Step,
    Trace,
)

logger = logging.getLogger(__name__)

# A job whose worker died is retried; after this many starts it fails with a readable reason instead.
MAX_INGEST_ATTEMPTS = 3
# Rows per INSERT: 2,000 steps of Who&When-sized text (~1 KB each) keep one statement near 2 MB, which PostgreSQL
# and SQLite both take without strain; measured by bench/import_speed.py.
STEP_BATCH_SIZE = 2000


# --- projects and membership ----------------------------------------------------------------------------------

def project_create(*, name: str, owner: AbstractBaseUser | None = None, description: str = "") -> Project:
    base = slugify(name)[:120] or "project"
    slug, n = base, 1
    while Project.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    with transaction.atomic():
        project = Project.objects.create(name=name.strip(), slug=slug, description=description)
        if owner is not None:
            Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


def project_get_or_create(*, name: str, owner: AbstractBaseUser | None = None) -> tuple[Project, bool]:
    existing = Project.objects.filter(name=name.strip()).first()
    if existing:
        return existing, False
    return project_create(name=name, owner=owner), True


def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


class LastOwnerError(Exception):
    """A project must keep at least one owner, or nobody could manage it any more."""


def membership_change(*, project: Project, username: str, role: str | None) -> Membership | None:
    """Add, re-role (``role``) or remove (``role=None``) a member, refusing to leave the project without an owner."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    with transaction.atomic():
        # Lock the owners in a fixed order so two concurrent demotions cannot both pass the check below.
        owners = list(Membership.objects.select_for_update().filter(project=project, role=Role.OWNER).order_by("pk"))
        if role != Role.OWNER and [m.user_id for m in owners] == [user.pk]:
            raise LastOwnerError("A project needs at least one owner; make someone else owner first.")
        if role is None:
            Membership.objects.filter(project=project, user=user).delete()
            return None
        return membership_set(project=project, user=user, role=role)


# --- uploads -----------------------------------------------------------------------------------------------------

@dataclass
class IncomingFile:
    """A file handed to us by a browser, the CLI or the API: a name, a size and a way to read it."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]


def _human_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def _size_error(size: int) -> str | None:
    limit = settings.CULPRIT_MAX_UPLOAD_BYTES
    if size > limit:
        return f"the file is {_human_size(size)}, over the {_human_size(limit)} limit"
    return None


def _sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def raw_upload_store(*, project: Project, incoming: IncomingFile, user: AbstractBaseUser | None) -> RawUpload:
    """Store the bytes once per project; the same bytes again return the existing row."""
    with incoming.open() as fh:
        sha = _sha256(fh)
    existing = RawUpload.objects.filter(project=project, sha256=sha).first()
    if existing:
        return existing
    upload = RawUpload(project=project, sha256=sha, filename=incoming.name[:500], size=incoming.size,
                       uploaded_by=user)
    with incoming.open() as fh:
        upload.file.save(sha, File(fh), save=False)
    try:
        with transaction.atomic():
            upload.save()
    except IntegrityError:  # the same bytes arrived concurrently; theirs won
        return RawUpload.objects.get(project=project, sha256=sha)
    return upload


def _is_zip(incoming: IncomingFile) -> bool:
    with incoming.open() as fh:
        return fh.read(4) == b"PK\x03\x04"


def _zip_members(incoming: IncomingFile) -> Iterator[IncomingFile | tuple[str, str]]:
    """Members of an uploaded zip as IncomingFiles, or (name, error) for members that cannot be taken."""
    try:
        with incoming.open() as fh:
            archive = zipfile.ZipFile(fh)
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        yield incoming.name, f"not a valid zip archive ({exc})"
        return
    infos = [i for i in infos if not _is_junk_member(i.filename)]
    if not infos:
        yield incoming.name, "the archive holds no files"
        return
    if len(infos) > settings.CULPRIT_MAX_ZIP_MEMBERS:
        yield incoming.name, f"the archive holds {len(infos)} files, over the {settings.CULPRIT_MAX_ZIP_MEMBERS} limit"
        return
    for info in infos:
        name = f"{incoming.name}/{info.filename}"
        if error := _size_error(info.file_size):  # checked before unpacking: a zip bomb never inflates
            yield name, error
            continue
        yield IncomingFile(name=name, size=info.file_size, open=_member_opener(incoming, info.filename))


def _member_opener(incoming: IncomingFile, member: str) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        import io

        with incoming.open() as fh, zipfile.ZipFile(fh) as archive:
            return io.BytesIO(archive.read(member))

    return opener


def _is_junk_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


def expand_incoming(incoming: IncomingFile) -> Iterator[IncomingFile | tuple[str, str]]:
    """One entry per importable file: zips are opened, oversize files become (name, error)."""
    if error := _size_error(incoming.size):
        yield incoming.name, error
    elif incoming.size == 0:
        yield incoming.name, "the file is empty"
    elif incoming.size >= 4 and _is_zip(incoming):
        yield from _zip_members(incoming)
    else:
        yield incoming


def ingest_jobs_create(
    *,
    project: Project,
    files: Iterable[IncomingFile],
    user: AbstractBaseUser | None,
    requested_format: str = "",
    enqueue: bool = True,
) -> list[IngestJob]:
    """Record one IngestJob per file (zip members count as files) and queue the importable ones.

    A file that cannot even be stored (too big, broken zip) gets a failed job straight away, so the person sees
    it next to the others; bytes already imported into this project give a 'duplicate' job naming the traces.
    """
    import uuid

    batch = uuid.uuid4()
    jobs = []
    for incoming in files:
        for entry in expand_incoming(incoming):
            jobs.append(_job_for_entry(project=project, entry=entry, user=user, batch=batch,
                                       requested_format=requested_format))
    if enqueue:
        from .tasks import ingest_file_task

        for job in jobs:
            if job.status == JobStatus.QUEUED:
                transaction.on_commit(lambda job_id=job.pk: ingest_file_task.delay(job_id))
    return jobs


def _job_for_entry(*, project: Project, entry: IncomingFile | tuple[str, str], user: AbstractBaseUser | None,
                   batch: Any, requested_format: str) -> IngestJob:
    job = IngestJob(project=project, batch=batch, created_by=user, requested_format=requested_format)
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
    """Import one job's file. Safe to call again for the same job (re-delivery after a crash)."""
    claimed = IngestJob.objects.filter(
        pk=job_id, status__in=[JobStatus.QUEUED, JobStatus.RUNNING], attempts__lt=MAX_INGEST_ATTEMPTS
    ).update(status=JobStatus.RUNNING, attempts=F("attempts") + 1, started_at=timezone.now())
    job = IngestJob.objects.select_related("upload", "project").get(pk=job_id)
    if not claimed:
        if job.status == JobStatus.RUNNING:  # every attempt died half-way
            return ingest_job_fail(job=job, reason=f"gave up after {job.attempts} interrupted attempts")
        return job  # already finished: a duplicate delivery
    try:
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
    fmt = get_format(job.requested_format) if job.requested_format else detect_format(source)
    parsed = list(fmt.parse(source))
    if not parsed:
        raise TraceFormatError(f"no traces found in this {fmt.label} file")
    job.detected_format = fmt.name
    job.steps_total = sum(len(p.steps) for p in parsed)
    job.save(update_fields=["detected_format", "steps_total"])

    created_here = 0
    for ordinal, trace in enumerate(parsed):
        trace_id, created = _import_one(job=job, ordinal=ordinal, parsed=trace)
        created_here += created
        if trace_id not in job.trace_ids:
            job.trace_ids.append(trace_id)
    # Every trace already existed and none was committed by this job's earlier attempts: the same bytes won a race.
    mine = created_here or IngestJob.objects.filter(pk=job.pk, steps_done__gt=0).exists()
    job.status = JobStatus.SUCCEEDED if mine else JobStatus.DUPLICATE
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at", "trace_ids"])


def _import_one(*, job: IngestJob, ordinal: int, parsed: ParsedTrace) -> tuple[int, bool]:
    existing = Trace.objects.filter(upload=job.upload, ordinal=ordinal).values_list("pk", flat=True).first()
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            trace = trace_create_from_parsed(project=job.project, upload=job.upload, ordinal=ordinal, parsed=parsed)
            # Progress moves in the same transaction as the rows it counts, so a crash never overstates it.
            IngestJob.objects.filter(pk=job.pk).update(steps_done=F("steps_done") + len(parsed.steps),
                                                       trace_ids=job.trace_ids + [trace.pk])
    except IntegrityError:
        trace_id = Trace.objects.filter(upload=job.upload, ordinal=ordinal).values_list("pk", flat=True).first()
        if trace_id is None:
            raise
        return trace_id, False
    return trace.pk, True


def trace_create_from_parsed(
    *, project: Project, upload: RawUpload | None, ordinal: int, parsed: ParsedTrace, provenance: str = "uploaded"
) -> Trace:
    """Write one parsed trace with its agents, steps and gold labels. Call inside a transaction."""
    trace = Trace.objects.create(
        project=project,
        upload=upload,
        ordinal=ordinal,
        name=parsed.name[:300],
        source_format=parsed.source_format,
        external_id=parsed.external_id[:200],
        question=parsed.question,
        ground_truth=parsed.ground_truth,
        outcome=parsed.outcome,
        provenance=provenance,
        metadata=parsed.metadata,
        step_count=len(parsed.steps),
    )
    agents = _create_agents(trace, parsed)
    Step.objects.bulk_create(
        (
            Step(
                trace=trace,
                index=index,
                agent=agents.get(step.agent) if step.agent else None,
                speaker=step.speaker[:300],
                recipient=step.recipient[:200],
                kind=step.kind,
                content=step.content,
                tool_name=step.tool_name[:200],
                tool_arguments=step.tool_arguments,
                raw=step.raw,
            )
            for index, step in enumerate(parsed.steps)
        ),
        batch_size=STEP_BATCH_SIZE,
    )
    GoldLabel.objects.bulk_create(
        GoldLabel(trace=trace, agent=agents.get(g.agent), agent_name=g.agent[:200], step_index=g.step,
                  reason=g.reason, category=g.category[:80], source=LabelSource.IMPORTED)
        for g in parsed.gold
    )
    trace.agent_count = sum(1 for a in agents.values() if a.step_count)
    trace.save(update_fields=["agent_count"])
    return trace


def _create_agents(trace: Trace, parsed: ParsedTrace) -> dict[str, Agent]:
    counts: dict[str, int] = {}
    for step in parsed.steps:
        if step.agent:
            counts[step.agent] = counts.get(step.agent, 0) + 1
    names = [a.name for a in parsed.agents] + [n for n in counts if n not in {a.name for a in parsed.agents}]
    prompts = {a.name: a.system_prompt for a in parsed.agents}
    rows = Agent.objects.bulk_create(
        Agent(trace=trace, name=name[:200], system_prompt=prompts.get(name, ""), position=i,
              step_count=counts.get(name, 0))
        for i, name in enumerate(names)
    )
    return {agent.name: agent for agent in rows}
