"""The annotations app's part of the REST API: the dataset export formats, read from the exporter registry.

``tracing`` owns the API object and knows nothing of annotations, so this router is attached from
``AnnotationsConfig.ready`` (before the URL configuration builds the API's URLs).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema

from .exporters import all_exporters

router = Router(tags=["exports"])


class ExportFormatOut(Schema):
    name: str = Field(description="the value of an export's format, and of export_dataset --format")
    label: str
    extension: str = Field(description="the file's extension, without the dot")
    content_type: str = Field(description="the Content-Type of the downloaded file")
    description: str


@router.get(
    "/export-formats", response=list[ExportFormatOut], summary="Dataset export formats this server writes"
)
def list_export_formats(request: HttpRequest) -> list[dict[str, str]]:
    """Every registered exporter (annotations/exporters): a new format appears here without any other change."""
    return [
        {
            "name": e.name,
            "label": e.label,
            "extension": e.extension,
            "content_type": e.content_type,
            "description": e.description,
        }
        for e in all_exporters()
    ]


def openapi_extend(schema: dict[str, Any]) -> None:
    """Name the registered formats in the OpenAPI document: an enum on ``name`` and one line each in the operation's
    description, read from the registry when the document is built."""
    out = schema.get("components", {}).get("schemas", {}).get("ExportFormatOut")
    if out is not None:
        out["properties"]["name"]["enum"] = [e.name for e in all_exporters()]
    operation = schema.get("paths", {}).get("/api/export-formats", {}).get("get")
    if operation is not None:
        lines = [f"- `{e.name}` (.{e.extension}, {e.content_type}): {e.description}" for e in all_exporters()]
        operation["description"] = "Every registered dataset export format:\n\n" + "\n".join(lines)
