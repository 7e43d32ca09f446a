"""``export_dataset``: write a curated dataset of one project to a file, in this process (no worker, no job row).

The same selection, split, manifest and writers as the export page; the file is written to a temporary name and
renamed into place, and its manifest is written beside it as ``<out>.manifest.json``.
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.exporters import all_exporters
from annotations.selectors import ExportFilters, export_cases, export_manifest
from annotations.services import write_atomically
from tracing.forms import TraceScopeField
from tracing.models import LabelSource, Project


class Command(BaseCommand):
    help = "Export a project's labelled traces as a dataset (Who&When zip or JSONL, Parquet, CSV) with a manifest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project name")
        parser.add_argument("--format", required=True, choices=[e.name for e in all_exporters()])
        parser.add_argument("--out", required=True, help="file to write (replaced atomically if it exists)")
        parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
        parser.add_argument(
            "--source",
            action="append",
            choices=LabelSource.values,
            dest="sources",
            help="label source to include (repeat for several; default: all)",
        )
        parser.add_argument(
            "--verified-only",
            action="store_true",
            help="only cases whose label an annotator gave or an owner adjudicated",
        )
        parser.add_argument(
            "--min-agreement",
            type=float,
            default=None,
            help="only cases whose annotator agreement is at least this (0..1)",
        )
        parser.add_argument(
            "--since", type=date.fromisoformat, default=None, help="traces imported on/after (YYYY-MM-DD)"
        )
        parser.add_argument(
            "--until", type=date.fromisoformat, default=None, help="traces imported on/before"
        )
        parser.add_argument(
            "--scope",
            default="",
            help="only the traces the trace list shows for these filters, as its query string "
            "(e.g. 'outcome=failed&agent=WebSurfer')",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
        parser.add_argument(
            "--test-percent", type=int, default=20, help="share of cases in the test split (0..100)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(name=options["project"]).first()
        if project is None:
            raise CommandError(f"no project named {options['project']!r}")
        if not 0 <= options["test_percent"] <= 100:
            raise CommandError("--test-percent must be between 0 and 100")
        minimum = options["min_agreement"]
        if minimum is not None and not 0 <= minimum <= 1:  # NaN fails this too
            raise CommandError("--min-agreement must be between 0 and 1")
        out = _out_path(options["out"])
        scope = TraceScopeField()
        try:
            scoped = scope.clean(options["scope"])
        except ValidationError as exc:
            raise CommandError(f"--scope: {' '.join(exc.messages)}") from None
        filters = ExportFilters(
            sources=options["sources"] or list(LabelSource.values),
            verified_only=options["verified_only"],
            min_agreement=options["min_agreement"],
            date_from=options["since"],
            date_to=options["until"],
            seed=options["seed"],
            test_percent=options["test_percent"],
            scope=scoped.data.urlencode() if scoped is not None else "",
        )
        started = time.perf_counter()
        cases = export_cases(project=project, filters=filters)
        if not cases:
            raise CommandError("no labelled trace of the project matches these filters: nothing to export")
        manifest = export_manifest(project=project, filters=filters, cases=cases, fmt=options["format"])
        manifest["counts"]["steps_written"] = write_atomically(out, cases, manifest, options["format"])
        Path(f"{out}.manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        seconds = time.perf_counter() - started
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    manifest | {"out": str(out), "bytes": out.stat().st_size, "seconds": round(seconds, 3)},
                    indent=2,
                )
            )
        else:
            splits, steps = manifest["split_sizes"], manifest["counts"]["steps_written"]
            self.stdout.write(
                f"wrote {out} ({out.stat().st_size:,} bytes): {len(cases)} case(s), {steps:,} steps, "
                f"train {splits['train']} / test {splits['test']}, in {seconds:.1f} s"
            )


def _out_path(value: str) -> Path:
    """Where to write: a new file or a regular file to replace, in a folder that exists. The export is renamed into
    place, so anything else there -- a device such as /dev/null, a folder, a socket -- would be replaced by a file
    (``-`` is not standard output here: it would be a file called "-")."""
    if value in ("", "-"):
        raise CommandError(
            "--out needs a file name (the export is written to a file, with its manifest beside it)"
        )
    out = Path(value).resolve()
    if out.exists() and not out.is_file():
        raise CommandError(
            f"--out {value}: exists and is not a regular file; name a new file or one to replace"
        )
    if not out.parent.is_dir():
        raise CommandError(f"--out {value}: the folder {out.parent} does not exist")
    manifest = Path(f"{out}.manifest.json")
    if manifest.exists() and not manifest.is_file():
        raise CommandError(f"--out {value}: {manifest} exists and is not a regular file")
    return out
