"""CSV, one row per step (``rows.STEP_COLUMNS``), with a header row; the case's fields repeat on each of its steps.

For spreadsheets and pandas. Cells are quoted as needed (contents hold newlines and commas); booleans are
``True``/``False``, which pandas reads as booleans. The manifest is on the export's page and beside the file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..selectors import ExportCase
from .rows import STEP_COLUMNS, Progress, step_rows


class CsvExporter:
    name = "csv"
    extension = "csv"
    content_type = "text/csv"

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        rows = 0
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(STEP_COLUMNS)
            for row in step_rows(cases, progress):
                writer.writerow(row)
                rows += 1
        return rows


EXPORTER = CsvExporter()
