"""The dataset exporter registry: one module per format, each exporting ``EXPORTER``; the one list of formats.

An exporter writes the chosen cases to a local path; it never decides which cases (``annotations.selectors``) nor
where the file ends up (``annotations.services`` writes to a temporary name and renames it into place). Adding a
format is one new module and one line in ``_MODULES``: the registry drives the export form's choices, the command
line's ``--format``, the API's ``/export-formats`` and the validation of ``DatasetExport.format``, whose column is
plain text with no database constraint listing the formats (a new format needs no migration).

Exporter modules are imported on first use, not here, because the model validator lives in this package and the
exporters import the selectors, which import the models.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ValidationError

if TYPE_CHECKING:
    from ..selectors import ExportCase
    from .rows import Progress

_MODULES = ["whowhen_zip", "whowhen_jsonl", "parquet", "csv"]
DEFAULT_FORMAT = "whowhen-jsonl"


class Exporter(Protocol):
    name: str  # as on the command line, in the API and in DatasetExport.format
    label: str  # shown in the export form
    extension: str
    content_type: str
    description: str  # one sentence for the form's help and the API docs

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        """Write the dataset to ``path``; returns the number of steps written."""
        ...


@cache
def _registry() -> dict[str, Exporter]:
    exporters = [import_module(f"{__name__}.{module}").EXPORTER for module in _MODULES]
    return {exporter.name: exporter for exporter in exporters}


def all_exporters() -> list[Exporter]:
    return list(_registry().values())


def format_names() -> list[str]:
    return list(_registry())


def format_choices() -> list[tuple[str, str]]:
    return [(exporter.name, exporter.label) for exporter in all_exporters()]


def get_exporter(name: str) -> Exporter:
    try:
        return _registry()[name]
    except KeyError:
        raise KeyError(f"unknown export format {name!r} (known: {', '.join(format_names())})") from None


def validate_export_format(value: str) -> None:
    """The model field's validator (``DatasetExport.format``)."""
    if value not in _registry():
        raise ValidationError(
            "%(value)r is not an export format (known: %(known)s).",
            code="invalid_choice",
            params={"value": value, "known": ", ".join(format_names())},
        )
