"""Exports carry every labelled error of a case, not only the decisive one: Who&When documents as an ``errors`` list
(re-imported into the same error labels and the same gold label), Parquet/CSV rows as their step's ``error_labels``."""

from __future__ import annotations

import csv
import io
import json

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
    return list(ErrorLabel.objects.filter(trace__project=project).order_by("position").values_list(
        "position", "step_index", "span_id", "agent_name", "family", "category", "impact", "description", "evidence",
        "decisive"))


def _gold(project: Project) -> list[tuple]:
    return list(GoldLabel.objects.filter(trace__project=project).values_list("agent_name", "step_index", "reason",
                                                                             "category"))


@pytest.mark.parametrize(("fmt", "suffix", "streamed"), [
    ("whowhen-jsonl", "jsonl", False), ("whowhen-zip", "zip", False), ("whowhen-zip", "zip", True)],
    ids=["jsonl", "zip", "zip-streamed"])
def test_every_error_label_survives_a_who_and_when_round_trip(source_project, tmp_path, monkeypatch, fmt, suffix,
                                                              streamed):
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
        "step": None, "span_id": "ffffffffffffffff", "agent": "", "family": "TRAIL", "category": "Goal Deviation",
        "impact": "MEDIUM", "description": "A span that is not in the trace.", "evidence": "-", "decisive": False}


def test_csv_rows_carry_the_errors_of_their_step(source_project, tmp_path):
    out = tmp_path / "dataset.csv"
    _run("export_dataset", "--project", "Source", "--format", "csv", "--out", str(out))
    rows = {int(r["step_index"]): r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert json.loads(rows[3]["error_labels"]) == [
        {"family": "TRAIL", "category": "Tool-related", "impact": "HIGH", "agent": "manager", "decisive": True}]
    assert [e["category"] for e in json.loads(rows[8]["error_labels"])] == ["Formatting Errors"]
    assert rows[0]["error_labels"] == ""
