"""Exports carry every labelled error of a case, not only the decisive one: Who&When documents as an ``errors`` list
(re-imported into the same error labels and the same gold label), Parquet/CSV as one row per label."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from tests.conftest import ROOT
from tracing.formats import whowhen
from tracing.models import ErrorLabel, GoldLabel, Project, Trace

pytestmark = pytest.mark.django_db

TRAIL = ROOT / "tests" / "fixtures" / "trail"
SMALL = "0ebe673d64647ec44c370638b82d3c78"
FILES = [TRAIL / "gaia" / f"{SMALL}.trace.json", TRAIL / "label_cases" / "multi" / f"{SMALL}.labels.json"]


def _run(command: str, *args: str):
    out = io.StringIO()
    call_command(command, *args, "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def source_project() -> Project:
    results = _run("import_traces", *map(str, FILES), "--project", "Source")
    assert {r["status"] for r in results} == {"imported"}, results
    return Project.objects.get(name="Source")


def _errors(project: Project) -> list[tuple]:
    return list(
        ErrorLabel.objects.filter(trace__project=project)
        .order_by("position")
        .values_list(
            "position",
            "step_index",
            "span_id",
            "agent_name",
            "family",
            "category",
            "impact",
            "description",
            "evidence",
            "decisive",
        )
    )


def _gold(project: Project) -> list[tuple]:
    return list(
        GoldLabel.objects.filter(trace__project=project).values_list(
            "agent_name", "step_index", "reason", "category"
        )
    )


@pytest.mark.parametrize(
    ("fmt", "suffix", "streamed"),
    [("whowhen-jsonl", "jsonl", False), ("whowhen-zip", "zip", False), ("whowhen-zip", "zip", True)],
    ids=["jsonl", "zip", "zip-streamed"],
)
def test_every_error_label_survives_a_who_and_when_round_trip(
    source_project, tmp_path, monkeypatch, fmt, suffix, streamed
):
    out = tmp_path / f"dataset.{suffix}"
    manifest = _run("export_dataset", "--project", "Source", "--format", fmt, "--out", str(out))
    assert manifest["counts"]["cases"] == 1 and manifest["error_label_families"] == ["TRAIL"]
    if streamed:  # big Who&When files are read with ijson: the errors list must come through that path too
        monkeypatch.setattr(whowhen, "STREAM_ABOVE", 0)
    results = _run("import_traces", str(out), "--project", "Copy")
    assert {r["status"] for r in results} == {"imported"}, results
    copy = Project.objects.get(name="Copy")
    assert len(_errors(source_project)) == 4
    assert _errors(copy) == _errors(source_project)
    assert _gold(copy) == _gold(source_project) and _gold(copy)[0][1] == 3
    again = Trace.objects.get(project=copy)
    assert again.step_count == Trace.objects.get(project=source_project).step_count
    assert again.metadata.get("streamed", False) is streamed


def test_the_who_and_when_document_keeps_mistake_fields_for_the_decisive_error(source_project, tmp_path):
    out = tmp_path / "dataset.jsonl"
    _run("export_dataset", "--project", "Source", "--format", "whowhen-jsonl", "--out", str(out))
    (document,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (document["mistake_step"], document["mistake_type"]) == ("3", "Tool-related")
    assert [e["decisive"] for e in document["errors"]] == [False, False, True, False]
    assert document["errors"][3] == {
        "step": None,
        "span_id": "ffffffffffffffff",
        "agent": "",
        "family": "TRAIL",
        "category": "Goal Deviation",
        "impact": "MEDIUM",
        "description": "A span that is not in the trace.",
        "evidence": "-",
        "decisive": False,
    }


def _label_rows(fmt: str, out) -> list[dict]:
    if fmt == "parquet":
        return pq.read_table(out).to_pylist()
    with out.open(
        newline="", encoding="utf-8"
    ) as fh:  # CSV cells are strings: bring them back to their types
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("label_position", "step_index", "mistake_step"):
            row[key] = int(row[key]) if row[key] != "" else None
        row["decisive"] = {"True": True, "False": False}[row["decisive"]]
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_parquet_and_csv_give_every_error_label_its_own_row(source_project, tmp_path, fmt):
    out = tmp_path / f"dataset.{fmt}"
    manifest = _run("export_dataset", "--project", "Source", "--format", fmt, "--out", str(out))
    assert manifest["format_version"] == "culprit-export/3" and manifest["error_label_families"] == ["TRAIL"]
    rows = _label_rows(fmt, out)
    trace = Trace.objects.get(project=source_project)
    assert len(rows) == 4 == trace.error_labels.count()
    assert [
        (
            r["label_position"],
            r["step_index"],
            r["span_id"],
            r["agent"],
            r["family"],
            r["category"],
            r["impact"],
            r["description"],
            r["evidence"],
            r["decisive"],
        )
        for r in rows
    ] == _errors(source_project)
    assert [r["decisive"] for r in rows] == [False, False, True, False]
    assert {r["label_source"] for r in rows} == {"imported"}
    assert {(r["trace_name"], r["mistake_step"], r["mistake_category"]) for r in rows} == {
        (trace.name, 3, "Tool-related")
    }
    decisive = rows[2]
    step = trace.steps.get(index=3)
    assert (decisive["step_speaker"], decisive["step_content"]) == (step.speaker, step.content)
    assert (rows[3]["step_index"], rows[3]["span_id"], rows[3]["step_content"]) == (
        None,
        "ffffffffffffffff",
        "",
    )
