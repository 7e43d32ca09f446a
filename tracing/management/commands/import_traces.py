from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tracing import services
from tracing.formats import all_formats
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import DuplicatePolicy, GoldLabel, IngestJob, JobStatus, Trace
from tracing.services.uploads import cannot_read

# Extensions picked up when walking a folder; a file named explicitly is always tried, whatever its name.
FOLDER_EXTENSIONS = {".json", ".jsonl", ".ndjson", ".zip", ".log", ".txt"}
STATUS_WORDS = {JobStatus.SUCCEEDED: "imported", JobStatus.DUPLICATE: "duplicate", JobStatus.FAILED: "failed"}


class Command(PureJsonMixin, BaseCommand):
    help = "Import trace files, folders (recursively) and zip archives into a project, in this process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--project", required=True, help="project name; created if it does not exist")
        parser.add_argument(
            "--format",
            default="",
            choices=[""] + [f.name for f in all_formats()],
            help="skip detection and parse every file as this format",
        )
        parser.add_argument(
            "--duplicates",
            default=DuplicatePolicy.SKIP,
            choices=DuplicatePolicy.values,
            help="a trace whose content is already in the project: skip it (reported as a duplicate), or import "
            "it again",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON list, one object per file")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["project"].strip():
            raise CommandError("--project needs a name; it was blank")
        self._jobs: list[int] = []  # jobs this invocation created, in order
        self._failures: list[dict[str, Any]] = []  # paths that never became jobs
        try:
            results = self._import(options)
        except KeyboardInterrupt:
            raise self._interrupted(options) from None
        self._report(results, options)
        failed = sum(r["status"] == "failed" for r in results)
        if failed:
            raise CommandError(f"{failed} of {len(results)} file(s) failed to import")

    def _import(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        # Every path is looked at before anything is created: a command whose paths are all missing or unusable
        # leaves no empty project behind.
        planned = [_collect(Path(path_text)) for path_text in options["paths"]]
        self._failures = [entry for entries in planned for entry in entries if isinstance(entry, dict)]
        if all(isinstance(entry, dict) for entries in planned for entry in entries):
            return self._failures
        project, created = services.project_get_or_create(name=options["project"])
        if created and not options["json"]:
            self.stdout.write(f"Created project {project.name!r}")
        results = []
        for entries in planned:
            results.extend(self._import_files(project, entries, options["format"], options["duplicates"]))
        return results

    def _import_files(
        self, project: Any, entries: list[Path | dict[str, Any]], fmt: str, duplicates: str
    ) -> list[dict[str, Any]]:
        incoming, failures, renamed = [], [], {}
        for p in entries:
            if isinstance(p, dict):  # refused by _collect: never opened
                failures.append(p)
                continue
            name = _shown(p)
            if name != str(p):
                renamed[name] = f"its name is not valid UTF-8; it was imported as {name!r}"
            try:
                size = p.stat().st_size
            except OSError as exc:  # gone or unreadable since the folder was listed
                failures.append(_failure(name, cannot_read(exc)))
                continue
            incoming.append(services.IncomingFile(name=name, size=size, open=lambda p=p: p.open("rb")))
        if not incoming:
            return failures
        # One transaction: a Ctrl-C half-way through storing the files leaves no queued job behind for a worker.
        with transaction.atomic():
            jobs = services.ingest_jobs_create(
                project=project,
                files=incoming,
                user=None,
                requested_format=fmt,
                duplicates=duplicates,
                enqueue=False,
            )
        self._jobs.extend(job.pk for job in jobs)
        ran = [_run(job) for job in jobs]
        # Described after the whole batch: a label file that waited for a trace of a later file reports where its
        # labels finally went, not that they were waiting.
        results = [_describe(IngestJob.objects.get(pk=job.pk)) for job in ran]
        for result in results:
            for name, warning in renamed.items():
                if result["path"] == name or result["path"].startswith(
                    f"{name}/"
                ):  # the file, or its zip members
                    result["warnings"] = [warning, *result["warnings"]]
        return failures + results

    def _interrupted(self, options: dict[str, Any]) -> CommandError:
        """Ctrl-C: this invocation's unfinished jobs fail (what a running one committed is taken back out), so no
        worker or reaper picks them up later; what finished stays."""
        stopped = services.ingest_jobs_stop(job_ids=self._jobs, reason=INTERRUPTED)
        jobs = IngestJob.objects.filter(pk__in=self._jobs).order_by("pk")
        done = sum(job.status != JobStatus.FAILED for job in jobs)
        if options["json"]:
            self._report(self._failures + [_describe(job) for job in jobs], options)
        return CommandError(
            f"interrupted (Ctrl-C): {done} file(s) imported or duplicate, {stopped} stopped before they were "
            "imported (marked failed)",
            returncode=130,
        )

    def _report(self, results: list[dict[str, Any]], options: dict[str, Any]) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            self._print_table(results)

    def _print_table(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            if r["status"] == "failed":
                self.stderr.write(self.style.ERROR(f"failed     {r['error']}"))
            else:
                detail = f"{len(r['trace_ids'])} trace(s), {r['steps']} steps, {r['labels']} label(s) [{r['format']}]"
                self.stdout.write(f"{r['status']:<10} {r['path']}: {detail}")
                for warning in r["warnings"][:5]:
                    self.stdout.write(f"           warning: {warning}")
        counts = {
            word: sum(r["status"] == word for r in results) for word in ("imported", "duplicate", "failed")
        }
        self.stdout.write(", ".join(f"{n} {word}" for word, n in counts.items()))


INTERRUPTED = "interrupted (Ctrl-C) before it was imported"


def _run(job: IngestJob) -> IngestJob:
    if job.status == JobStatus.QUEUED:
        return services.ingest_job_run(job_id=job.pk)
    return job


def _collect(path: Path) -> list[Path | dict[str, Any]]:
    """The files a path names, each with the failure that says why it gives none in its place (a path that gives no
    file at all is one failure). Never opens anything but a folder: a FIFO would block, /dev/zero would never end."""
    name = _shown(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return [_failure(name, "no such file or directory")]
    except OSError as exc:
        return [_failure(name, cannot_read(exc))]
    if stat.S_ISREG(mode):
        return [path]
    if not stat.S_ISDIR(mode):
        return [_failure(name, f"not a regular file ({_kind(mode)}); it was not read")]
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        return [_failure(name, cannot_read(exc))]
    # What the folder holds goes through the same checks as a path named on the command line: a FIFO, socket or
    # device with a trace file's name fails by name instead of being skipped without a word.
    entries = [
        entry
        for p in sorted(path.rglob("*"))
        if p.suffix.lower() in FOLDER_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not p.is_dir()
        for entry in _collect(p)
    ]
    if not entries:
        extensions = ", ".join(sorted(FOLDER_EXTENSIONS))
        return [_failure(name, f"no trace files in this folder (it is searched for {extensions} files)")]
    return entries


def _kind(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, for a message."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "of an unknown kind"


def _shown(path: Path) -> str:
    """The path as text that can be stored and printed: bytes of a name that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def _failure(path: str, reason: str) -> dict[str, Any]:
    return {
        "path": path,
        "status": "failed",
        "format": "",
        "confidence": None,
        "trace_ids": [],
        "steps": 0,
        "agents": 0,
        "labels": 0,
        "gold": [],
        "warnings": [],
        "error": f"{path}: {reason}",
    }


def _describe(job: IngestJob) -> dict[str, Any]:
    if job.status == JobStatus.FAILED:
        return _failure(job.filename, "") | {"error": job.error, "format": job.detected_format}
    # Plain values, not model instances: a bundle lists thousands of traces (0.15 ms a trace as instances).
    traces = list(
        Trace.objects.filter(pk__in=job.trace_ids)
        .order_by("ordinal")
        .values_list("pk", "step_count", "agent_count")
    )
    labels: dict[int, list[dict[str, Any]]] = {}
    for trace_id, agent, step in (
        GoldLabel.objects.filter(trace__in=[pk for pk, _, _ in traces])
        .order_by(*GoldLabel._meta.ordering)
        .values_list("trace_id", "agent_name", "step_index")
    ):
        labels.setdefault(trace_id, []).append({"trace_id": trace_id, "agent": agent, "step": step})
    gold = [label for pk, _, _ in traces for label in labels.get(pk, [])]
    return {
        "path": job.filename,
        "status": STATUS_WORDS[job.status],
        "format": job.detected_format,
        "confidence": job.confidence,
        "trace_ids": [pk for pk, _, _ in traces],
        "steps": sum(steps for _, steps, _ in traces),
        "agents": sum(agents for _, _, agents in traces),
        # A label file's labels land on traces from other files: count what it attached, not what its traces hold.
        "labels": len(gold) if traces else job.report.get("labels", 0),
        "gold": gold,
        "warnings": job.report.get("warnings", []),
        "error": "",
    }
