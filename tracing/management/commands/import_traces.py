from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracing import services
from tracing.formats import all_formats
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import DuplicatePolicy, GoldLabel, IngestJob, JobStatus, Trace

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
        project, created = services.project_get_or_create(name=options["project"])
        if created and not options["json"]:
            self.stdout.write(f"Created project {project.name!r}")
        results = []
        for path_text in options["paths"]:
            results.extend(
                self._import_path(project, Path(path_text), options["format"], options["duplicates"])
            )
        if options["json"]:
            self.stdout.write(json.dumps(results, indent=2))
        else:
            self._print_table(results)
        failed = sum(r["status"] == "failed" for r in results)
        if failed:
            raise CommandError(f"{failed} of {len(results)} file(s) failed to import")

    def _import_path(self, project: Any, path: Path, fmt: str, duplicates: str) -> list[dict[str, Any]]:
        if not path.exists():
            return [_failure(str(path), "no such file or directory")]
        files = (
            [path]
            if path.is_file()
            else sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in FOLDER_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        )
        incoming = [
            services.IncomingFile(name=str(p), size=p.stat().st_size, open=lambda p=p: p.open("rb"))
            for p in files
        ]
        jobs = services.ingest_jobs_create(
            project=project,
            files=incoming,
            user=None,
            requested_format=fmt,
            duplicates=duplicates,
            enqueue=False,
        )
        ran = [_run(job) for job in jobs]
        # Described after the whole batch: a label file that waited for a trace of a later file reports where its
        # labels finally went, not that they were waiting.
        return [_describe(IngestJob.objects.get(pk=job.pk)) for job in ran]

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


def _run(job: IngestJob) -> IngestJob:
    if job.status == JobStatus.QUEUED:
        return services.ingest_job_run(job_id=job.pk)
    return job


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
