"""Who&When JSON, one file per case, in a zip: ``train/<name>.json`` and ``test/<name>.json``, as in the original
dataset's folders, plus ``.manifest.json``.

Read back by uploading the zip (or ``import_traces``): the Who&When reader names a trace after the last two parts of
its path, so ``train/Hand-Crafted/16.json`` comes back as ``Hand-Crafted/16``. Names of other shapes are made safe
for a path and come back as ``<split>/<name>``. The manifest's name starts with a dot because importers skip dot
files as metadata, so the archive re-imports without a failed member.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from ..selectors import ExportCase
from .rows import Progress, write_whowhen_document

MANIFEST_MEMBER = ".manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


class WhoWhenZipExporter:
    name = "whowhen-zip"
    extension = "zip"
    content_type = "application/zip"
    label = "Who&When JSON, one file per case (zip)"
    description = (
        "One Who&When JSON document per case in train/ and test/ folders, as the original dataset ships; "
        "re-imports as it is."
    )

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        steps = 0
        used: set[str] = set()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for case in cases:
                member = member_name(case, used)
                # force_zip64: the member's size is unknown until it is written, and may pass 4 GB.
                with archive.open(member, "w", force_zip64=True) as raw:
                    out = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
                    steps += write_whowhen_document(out, case, with_name=False, progress=progress)
                    out.flush()
                    out.detach()
            archive.writestr(MANIFEST_MEMBER, json.dumps(manifest, indent=2, ensure_ascii=False))
        return steps


def member_name(case: ExportCase, used: set[str]) -> str:
    """``<split>/<safe name>.json``, unique in the archive (a clash gets the trace id appended)."""
    parts = [_safe_part(p) for p in case.name.replace("\\", "/").split("/") if p.strip()] or [
        f"case-{case.trace_id}"
    ]
    stem = f"{case.split}/{'/'.join(parts)}"
    member = f"{stem}.json"
    if member.lower() in used:
        member = f"{stem}-{case.trace_id}.json"
    used.add(member.lower())
    return member


def _safe_part(part: str) -> str:
    # No leading dots: a dot file is skipped on import, and ".." must never reach a path.
    return _UNSAFE.sub("_", part).strip().lstrip(".") or "case"


EXPORTER = WhoWhenZipExporter()
