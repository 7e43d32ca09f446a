"""Who&When JSON Lines: one Who&When document per line, with ``trace_name`` so a re-import keeps every name.

Read back by ``tracing/formats/whowhen_jsonl.py``. The manifest is not a line of its own (it is not a case): it is
on the export's page and written beside the file by the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..selectors import ExportCase
from .rows import Progress, write_whowhen_document


class WhoWhenJsonlExporter:
    name = "whowhen-jsonl"
    extension = "jsonl"
    content_type = "application/x-ndjson"
    label = "Who&When JSON Lines"
    description = "One Who&When JSON document per line, with the trace name; re-imports as it is."

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        steps = 0
        with path.open("w", encoding="utf-8", newline="\n") as out:
            for case in cases:
                steps += write_whowhen_document(out, case, with_name=True, progress=progress)
                out.write("\n")
        return steps


EXPORTER = WhoWhenJsonlExporter()
