"""The export format registry (issue 12): one registry drives the form's choices, the model's validation, the
command line and the API; the database column lists no formats."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from annotations.exporters import all_exporters, format_names, get_exporter
from annotations.forms import ExportForm
from annotations.models import DatasetExport
from tracing import services as tracing_services

pytestmark = pytest.mark.django_db


def test_every_registered_exporter_describes_itself():
    names = format_names()
    assert names == ["whowhen-zip", "whowhen-jsonl", "parquet", "csv"]
    for exporter in all_exporters():
        assert exporter.label and exporter.description and exporter.extension and exporter.content_type
        assert get_exporter(exporter.name) is exporter
    with pytest.raises(KeyError, match="known: whowhen-zip"):
        get_exporter("xlsx")


def test_the_form_offers_the_registrys_formats_with_their_descriptions():
    form = ExportForm()
    assert [value for value, _ in form.fields["format"].choices] == format_names()
    assert not ExportForm(
        {"format": "xlsx", "sources": ["imported"], "seed": 0, "test_percent": 20}
    ).is_valid()


def test_the_model_validates_against_the_registry_and_the_table_has_no_format_constraint(project):
    export = DatasetExport(project=project, format="xlsx")
    with pytest.raises(ValidationError) as refused:
        export.full_clean(exclude=["file"])
    assert "format" in refused.value.message_dict
    DatasetExport(project=project, format="csv").full_clean(exclude=["file"])
    assert DatasetExport(project=project, format="csv").format_label == "CSV (one row per label)"
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, DatasetExport._meta.db_table)
    assert not any("format" in name for name, c in constraints.items() if c["check"])


def test_the_api_lists_the_formats_and_the_openapi_document_names_them(client, project, owner):
    token = tracing_services.api_token_create(project=project, name="ci", user=owner)[1]
    response = client.get("/api/export-formats", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    body = response.json()
    assert [f["name"] for f in body] == format_names()
    assert body[3] == {
        "name": "csv",
        "label": "CSV (one row per label)",
        "extension": "csv",
        "content_type": "text/csv",
        "description": get_exporter("csv").description,
    }
    schema = client.get("/api/openapi.json").json()
    assert schema["components"]["schemas"]["ExportFormatOut"]["properties"]["name"]["enum"] == format_names()
    assert "`parquet` (.parquet" in schema["paths"]["/api/export-formats"]["get"]["description"]
