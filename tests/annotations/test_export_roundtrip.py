"""Round trip: a Who&When export (JSONL and zip) re-imported with the ordinary importer gives back the same traces,
steps and gold labels, for every Who&When file we have (both subsets)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.management import call_command

from tests.conftest import WHO_AND_WHEN, whowhen_files
from tracing.models import GoldLabel, LabelSource, Project, Trace

pytestmark = pytest.mark.django_db


@pytest.fixture
def source_project(tmp_path) -> Project:
    folder = WHO_AND_WHEN if WHO_AND_WHEN.exists() else whowhen_files()[0].parent.parent
    call_command("import_traces", str(folder), "--project", "Source", "--json", stdout=io.StringIO())
    project = Project.objects.get(name="Source")
    assert Trace.objects.filter(project=project).count() == len(whowhen_files())
    return project


def snapshot(project: Project) -> dict[str, dict]:
    """Everything a dataset must carry, keyed by trace name: header, steps in order, agents, gold labels."""
    result = {}
    for trace in Trace.objects.filter(project=project).prefetch_related(
        "steps__agent", "agents", "gold_labels"
    ):
        result[trace.name] = {
            "header": (
                trace.question,
                trace.ground_truth,
                trace.outcome,
                trace.external_id,
                trace.step_count,
                trace.agent_count,
                trace.metadata.get("subset"),
            ),
            "steps": [
                (s.index, s.speaker, s.agent.name if s.agent else None, s.kind, s.recipient, s.content)
                for s in sorted(trace.steps.all(), key=lambda s: s.index)
            ],
            "agents": [(a.name, a.system_prompt, a.position) for a in trace.agents.all()],
            "gold": [(g.agent_name, g.step_index, g.reason, g.category) for g in trace.gold_labels.all()],
        }
    return result


def export(fmt: str, out, *extra: str) -> dict:
    stdout = io.StringIO()
    call_command(
        "export_dataset",
        "--project",
        "Source",
        "--format",
        fmt,
        "--out",
        str(out),
        "--json",
        *extra,
        stdout=stdout,
    )
    return json.loads(stdout.getvalue())


def reimport(path, project: str) -> list[dict]:
    stdout = io.StringIO()
    call_command("import_traces", str(path), "--project", project, "--json", stdout=stdout)
    return json.loads(stdout.getvalue())


@pytest.mark.parametrize("fmt, suffix", [("whowhen-jsonl", "jsonl"), ("whowhen-zip", "zip")])
def test_an_exported_dataset_reimports_into_identical_traces_steps_and_labels(
    source_project, tmp_path, fmt, suffix
):
    out = tmp_path / f"dataset.{suffix}"
    manifest = export(fmt, out)
    cases = len(whowhen_files())
    assert manifest["counts"]["cases"] == cases
    assert manifest["label_provenance"] == {"imported": cases}

    results = reimport(out, "Copy")
    assert {r["status"] for r in results} == {"imported"}, [r["error"] for r in results if r["error"]]
    copy = Project.objects.get(name="Copy")
    original, again = snapshot(source_project), snapshot(copy)
    assert sorted(again) == sorted(original)  # the same trace names, none lost, none added
    assert sum(len(t["steps"]) for t in again.values()) == manifest["counts"]["steps"] > 1000
    for name, expected in original.items():
        assert again[name] == expected, name
    assert GoldLabel.objects.filter(trace__project=copy).count() == cases


def test_the_zip_holds_one_who_and_when_file_per_case_under_its_split(source_project, tmp_path):
    out = tmp_path / "dataset.zip"
    manifest = export("whowhen-zip", out, "--seed", "7", "--test-percent", "25")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert names[-1] == ".manifest.json"
        assert json.loads(archive.read(".manifest.json"))["split_sizes"] == manifest["split_sizes"]
        cases = [n for n in names if not n.startswith(".")]
        assert len(cases) == manifest["counts"]["cases"]
        assert (
            sum(n.startswith("test/") for n in cases)
            == manifest["split_sizes"]["test"]
            == round(len(cases) / 4)
        )
        first = json.loads(archive.read(cases[0]))
    assert {"question", "ground_truth", "history", "mistake_agent", "mistake_step", "mistake_reason"} <= set(
        first
    )
    assert isinstance(first["mistake_step"], str)
    assert first["culprit"]["split"] == cases[0].split("/")[0]


def test_a_relabelled_case_exports_its_adjudicated_label_and_reimports_with_it(source_project, tmp_path):
    trace = Trace.objects.filter(project=source_project).order_by("name").first()
    GoldLabel.objects.create(
        trace=trace,
        agent_name="Someone",
        step_index=1,
        reason="decided by the owner",
        source=LabelSource.ADJUDICATED,
    )
    out = tmp_path / "adjudicated.jsonl"
    manifest = export("whowhen-jsonl", out, "--source", "adjudicated")
    assert manifest["counts"]["cases"] == 1 and manifest["label_provenance"] == {"adjudicated": 1}
    reimport(out, "Curated")
    copy = Trace.objects.get(project__name="Curated")
    assert copy.name == trace.name
    assert [(g.agent_name, g.step_index, g.reason) for g in copy.gold_labels.all()] == [
        ("Someone", 1, "decided by the owner")
    ]


@pytest.mark.parametrize(
    "fixture",
    [
        "openai_chat/refund_handoff.json",
        "langfuse/langgraph-python-2025-08-22.trace.json",
        "otlp/multi_agent_genai.json",
    ],
)
def test_traces_of_other_formats_export_as_who_and_when_with_the_same_speakers_and_contents(
    tmp_path, fixture
):
    from tests.conftest import ROOT

    path = ROOT / "tests" / "fixtures" / fixture
    call_command("import_traces", str(path), "--project", "Source", "--json", stdout=io.StringIO())
    traces = list(Trace.objects.filter(project__name="Source"))
    for trace in traces:  # an annotator's label outranks any label the format carried
        GoldLabel.objects.create(
            trace=trace,
            agent_name="someone",
            step_index=trace.step_count - 1,
            reason="annotated",
            source=LabelSource.ANNOTATOR,
        )
    out = tmp_path / "other.jsonl"
    export("whowhen-jsonl", out)
    (result,) = reimport(out, "Copy")
    assert result["status"] == "imported", result["error"]
    copies = {t.name: t for t in Trace.objects.filter(project__name="Copy")}
    assert sorted(copies) == sorted(t.name for t in traces)
    for trace in traces:
        copy = copies[trace.name]
        assert copy.question == trace.question
        assert list(copy.steps.order_by("index").values_list("speaker", "content")) == list(
            trace.steps.order_by("index").values_list("speaker", "content")
        )
        assert list(copy.gold_labels.values_list("agent_name", "step_index", "reason")) == [
            ("someone", trace.step_count - 1, "annotated")
        ]
