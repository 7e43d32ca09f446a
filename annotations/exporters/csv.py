"""CSV, one row per label (``rows.LABEL_COLUMNS``), with a header row; the case's fields repeat on each of its labels.

For spreadsheets and pandas. Cells are quoted as needed (contents hold newlines and commas); booleans are
``True``/``False``, which pandas reads as booleans; a label without a step has an empty ``step_index``. The manifest
is on the export's page and beside the file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..selectors import ExportCase
from .rows import LABEL_COLUMNS, Progress, label_rows


class CsvExporter:
    name = "csv"
    extension = "csv"
    content_type = "text/csv"
    label = "CSV (one row per label)"
    description = "One row per labelled error with a header row, for spreadsheets and pandas."

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        """Returns the steps of the cases written (as every exporter does); the rows are their labels."""
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(LABEL_COLUMNS)
            writer.writerows(label_rows(cases, progress))
        return sum(case.step_count for case in cases)


EXPORTER = CsvExporter()
