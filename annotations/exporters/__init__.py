"""The dataset exporter registry: one module per format, each exporting ``EXPORTER``.

An exporter writes the chosen cases to a local path; it never decides which cases (``annotations.selectors``) nor
where the file ends up (``annotations.services`` writes to a temporary name and renames it into place). Adding a
format is one new module and one line in ``_MODULES``.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

from ..selectors import ExportCase
from .rows import Progress

_MODULES = ["whowhen_zip", "whowhen_jsonl", "parquet", "csv"]


class Exporter(Protocol):
    name: str  # as on the command line and in DatasetExport.format
    extension: str
    content_type: str

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        """Write the dataset to ``path``; returns the number of steps written."""
        ...


def all_exporters() -> list[Exporter]:
    return [import_module(f"{__name__}.{module}").EXPORTER for module in _MODULES]


def get_exporter(name: str) -> Exporter:
    for exporter in all_exporters():
        if exporter.name == name:
            return exporter
    raise KeyError(f"unknown export format {name!r} (known: {', '.join(e.name for e in all_exporters())})")
