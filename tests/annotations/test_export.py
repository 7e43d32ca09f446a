"""Dataset export: which cases, which label, which split, the manifest, the four formats, the job and the pages."""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.utils import timezone

from annotations import services
from annotations.exporters.parquet import MANIFEST_KEY
from annotations.exporters.rows import LABEL_COLUMNS
from annotations.models import DatasetExport, ExportStatus
from annotations.selectors import ExportFilters, assign_splits, export_cases, export_manifest
from attribution.taxonomy import TAXONOMY_VERSION
from tests.conftest import import_now, incoming_path, sample_file
from tracing.models import GoldLabel, LabelSource, Role, Trace

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def traces(project) -> list[Trace]:
    """Both demo subsets: each file one trace with one imported label."""
    paths = sorted(p for p in sample_file().parent.parent.rglob("*.json"))
    jobs = import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
    assert all(j.status == "succeeded" for j in jobs), [j.error for j in jobs]
    return list(Trace.objects.filter(project=project).order_by("name"))


def label(trace: Trace, source: str, step: int = 0, agent: str = "Someone", **extra) -> GoldLabel:
    return GoldLabel.objects.create(trace=trace, agent_name=agent, step_index=step, source=source, **extra)


# --- selection -------------------------------------------------------------------------------------------------


def test_each_case_carries_its_most_curated_label(project, traces):
    first, second = traces[:2]
    label(first, LabelSource.ANNOTATOR, step=2, agent="Annotated")
    label(first, LabelSource.ADJUDICATED, step=1, agent="Adjudicated")
    label(second, LabelSource.INJECTED, step=0, agent="Injected")
    cases = {c.trace_id: c for c in export_cases(project=project, filters=ExportFilters())}
    assert len(cases) == len(traces)
    assert (cases[first.pk].label.agent_name, cases[first.pk].label.source) == ("Adjudicated", "adjudicated")
    assert cases[second.pk].label.source == "imported"  # imported outranks injected
    only_injected = export_cases(project=project, filters=ExportFilters(sources=["injected"]))
    assert [(c.trace_id, c.label.agent_name) for c in only_injected] == [(second.pk, "Injected")]


def test_verified_only_keeps_cases_a_person_labelled_in_culprit(project, traces):
    label(traces[0], LabelSource.ANNOTATOR)
    label(traces[1], LabelSource.ADJUDICATED)
    cases = export_cases(project=project, filters=ExportFilters(verified_only=True))
    assert sorted(c.trace_id for c in cases) == sorted([traces[0].pk, traces[1].pk])


def test_a_minimum_agreement_leaves_out_traces_nobody_has_annotated(project, traces):
    assert export_cases(project=project, filters=ExportFilters(min_agreement=0.0)) == []
    assert len(export_cases(project=project, filters=ExportFilters(min_agreement=None))) == len(traces)


def test_the_date_range_applies_to_the_import_date(project, traces):
    old = traces[0]
    Trace.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    today = timezone.localdate()
    recent = export_cases(project=project, filters=ExportFilters(date_from=today - timedelta(days=1)))
    assert old.pk not in {c.trace_id for c in recent} and len(recent) == len(traces) - 1
    older = export_cases(project=project, filters=ExportFilters(date_to=today - timedelta(days=29)))
    assert [c.trace_id for c in older] == [old.pk]


def test_another_projects_traces_are_never_exported(project, traces, make_project):
    other = make_project("Other")
    path = sample_file()
    import_now(other, incoming_path(path, f"Hand-Crafted/{path.name}"))
    ids = {c.trace_id for c in export_cases(project=project, filters=ExportFilters())}
    assert ids == {t.pk for t in traces}


# --- split and manifest ----------------------------------------------------------------------------------------


def test_the_split_is_fixed_by_the_seed_and_has_the_asked_size(project, traces):
    def split(seed: int) -> dict[str, str]:
        cases = export_cases(project=project, filters=ExportFilters(seed=seed, test_percent=50))
        return {c.name: c.split for c in cases}

    first = split(1)
    assert split(1) == first
    assert sum(s == "test" for s in first.values()) == round(len(traces) / 2)
    assert any(split(seed) != first for seed in range(2, 12))  # another seed, another split


def test_the_split_does_not_depend_on_database_ids_or_order(project, traces):
    cases = export_cases(project=project, filters=ExportFilters(seed=3, test_percent=40))
    before = {c.name: c.split for c in cases}
    for c in cases:
        c.trace_id += 1000
    reversed_cases = list(reversed(cases))
    assign_splits(reversed_cases, seed=3, test_percent=40)
    assert {c.name: c.split for c in reversed_cases} == before


def test_the_manifest_counts_cases_steps_splits_and_label_provenance(project, traces):
    label(traces[0], LabelSource.ADJUDICATED)
    filters = ExportFilters(seed=5, test_percent=25)
    cases = export_cases(project=project, filters=filters)
    manifest = export_manifest(project=project, filters=filters, cases=cases, fmt="csv")
    assert manifest["format_version"] == "culprit-export/3"
    assert manifest["taxonomy_version"] == TAXONOMY_VERSION
    assert manifest["counts"]["cases"] == len(traces)
    assert manifest["counts"]["steps"] == sum(t.step_count for t in traces)
    assert manifest["label_provenance"] == {"adjudicated": 1, "imported": len(traces) - 1}
    assert manifest["split_sizes"] == {
        "train": len(traces) - round(len(traces) / 4),
        "test": round(len(traces) / 4),
    }
    assert manifest["seed"] == 5 and manifest["filters"]["test_percent"] == 25
    assert ExportFilters.from_json(json.loads(json.dumps(manifest["filters"]))) == filters


# --- formats ---------------------------------------------------------------------------------------------------


def cli(tmp_path: Path, fmt: str, name: str, *extra: str) -> tuple[Path, dict]:
    out = tmp_path / name
    stdout = io.StringIO()
    call_command(
        "export_dataset",
        "--project",
        "Alpha",
        "--format",
        fmt,
        "--out",
        str(out),
        "--json",
        *extra,
        stdout=stdout,
    )
    return out, json.loads(stdout.getvalue())


def test_parquet_has_one_row_per_label_a_fixed_schema_and_the_manifest(project, traces, tmp_path):
    out, manifest = cli(tmp_path, "parquet", "data.parquet")
    table = pq.read_table(out)
    assert tuple(table.column_names) == LABEL_COLUMNS
    # Who&When traces carry one label each (no listed errors): one row per trace, for its gold label.
    assert table.num_rows == len(traces) == manifest["counts"]["cases"]
    assert manifest["counts"]["steps_written"] == sum(t.step_count for t in traces)
    assert json.loads(table.schema.metadata[MANIFEST_KEY])["counts"] == {
        k: v for k, v in manifest["counts"].items() if k != "steps_written"
    }
    rows = table.to_pylist()
    gold = traces[0].gold_labels.get()
    (mine,) = [r for r in rows if r["trace_name"] == traces[0].name]
    step = traces[0].steps.get(index=gold.step_index)
    assert mine | {"split": "", "description": ""} == {
        "split": "",
        "trace_name": traces[0].name,
        "trace_external_id": traces[0].external_id,
        "question": traces[0].question,
        "ground_truth": traces[0].ground_truth,
        "label_position": 0,
        "decisive": True,
        "label_source": "imported",
        "family": "",
        "category": gold.category,
        "step_index": gold.step_index,
        "span_id": "",
        "agent": gold.agent_name,
        "impact": "",
        "description": "",
        "evidence": "",
        "step_speaker": step.speaker,
        "step_content": step.content,
        "mistake_agent": gold.agent_name,
        "mistake_step": gold.step_index,
        "mistake_category": gold.category,
    }
    assert mine["description"] == gold.reason and mine["split"] in ("train", "test")
    assert Path(f"{out}.manifest.json").is_file()


def test_parquet_loads_with_the_datasets_library(project, traces, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    out, manifest = cli(tmp_path, "parquet", "data.parquet", "--test-percent", "50")
    import datasets

    dataset = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert dataset.num_rows == manifest["counts"]["cases"]
    assert list(dataset.features) == list(LABEL_COLUMNS)
    test = dataset.filter(lambda row: row["split"] == "test")
    assert test.num_rows == manifest["split_sizes"]["test"]


def test_csv_has_a_header_and_one_row_per_label(project, traces, tmp_path):
    out, manifest = cli(tmp_path, "csv", "data.csv")
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert len(rows) == manifest["counts"]["cases"]
    gold = traces[-1].gold_labels.get()
    step = traces[-1].steps.get(index=gold.step_index)
    (row,) = [r for r in rows if r["trace_name"] == traces[-1].name]
    assert (row["step_index"], row["agent"], row["decisive"]) == (
        str(gold.step_index),
        gold.agent_name,
        "True",
    )
    assert row["step_content"] == step.content and row["step_speaker"] == step.speaker


def test_zip_member_names_stay_inside_the_archive_and_unique(project, traces, tmp_path):
    Trace.objects.filter(pk=traces[0].pk).update(name="../../etc/passwd")
    Trace.objects.filter(pk=traces[1].pk).update(name=traces[2].name)
    out, _ = cli(tmp_path, "whowhen-zip", "data.zip", "--test-percent", "0")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert len(set(names)) == len(names) == len(traces) + 1
    assert all(n.startswith("train/") or n == ".manifest.json" for n in names)
    assert not any(".." in n.split("/") for n in names)


def test_the_command_refuses_an_empty_selection(project, traces, tmp_path):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="nothing to export"):
        cli(tmp_path, "csv", "empty.csv", "--min-agreement", "0.5")
    assert not (tmp_path / "empty.csv").exists()


def test_the_builder_refuses_an_empty_selection(owner_client, project, traces):
    response = owner_client.post(
        f"/annotations/projects/{project.slug}/exports/",
        {"format": "csv", "sources": ["adjudicated"], "seed": "0", "test_percent": "20"},
    )
    assert response.status_code == 400 and b"No labelled trace matches these filters" in response.content
    assert not DatasetExport.objects.exists()


@pytest.mark.django_db(transaction=True)  # the child process must see the traces
def test_the_command_runs_as_a_program_and_prints_a_summary(project, traces, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT, process_env

    out = tmp_path / "cli.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "export_dataset",
            "--project",
            "Alpha",
            "--format",
            "whowhen-jsonl",
            "--out",
            str(out),
            "--seed",
            "2",
        ],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(traces)} case(s)" in done.stdout and str(out) in done.stdout
    assert len(out.read_text().splitlines()) == len(traces)
    assert json.loads(Path(f"{out}.manifest.json").read_text())["seed"] == 2


def test_the_command_refuses_an_unknown_project(tmp_path):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="no project named"):
        call_command(
            "export_dataset", "--project", "Nope", "--format", "csv", "--out", str(tmp_path / "x.csv")
        )


# --- the job ---------------------------------------------------------------------------------------------------


def make_export(project, fmt: str = "whowhen-jsonl", **filters) -> DatasetExport:
    return services.export_create(
        project=project, fmt=fmt, filters=ExportFilters(**filters), user=None, enqueue=False
    )


def test_an_export_job_writes_its_file_once_and_a_redelivery_writes_nothing(project, traces, media):
    export = services.export_run(export_id=make_export(project).pk)
    assert export.status == ExportStatus.SUCCEEDED, export.error
    path = Path(media) / export.file.name
    assert export.file_size == path.stat().st_size > 0
    assert export.steps_done == export.steps_total == sum(t.step_count for t in traces)
    assert export.manifest["counts"]["cases"] == export.cases_total == len(traces)
    os.utime(path, (0, 0))
    again = services.export_run(export_id=export.pk)
    assert again.status == ExportStatus.SUCCEEDED and again.attempts == 1
    assert path.stat().st_mtime == 0  # not rewritten
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_an_export_interrupted_mid_write_is_written_whole_by_the_next_attempt(project, traces, media):
    export = make_export(project)
    # The first attempt claimed the row and died (kill -9) after leaving a partial temporary file.
    DatasetExport.objects.filter(pk=export.pk).update(status=ExportStatus.RUNNING, attempts=1, steps_done=123)
    folder = Path(media) / "exports" / str(project.pk)
    folder.mkdir(parents=True)
    leftover = folder / f".{export.pk}-alpha.jsonl.999.attempt1.tmp"
    leftover.write_text('{"trunc')
    os.utime(leftover, (0, 0))  # older than any attempt could still be running
    export = services.export_run(export_id=export.pk)
    assert export.status == ExportStatus.SUCCEEDED and export.attempts == 2
    assert [p.name for p in folder.iterdir()] == [Path(export.file.name).name]
    lines = (Path(media) / export.file.name).read_text().splitlines()
    assert len(lines) == len(traces) and all(json.loads(line)["history"] for line in lines)


def test_a_redelivered_export_waits_while_a_live_worker_writes_it(project, traces, media, monkeypatch):
    """A second message for an export a live worker is writing (fresh heartbeat) does not start it again: the task
    looks again once that heartbeat would be stale; nothing is written or counted meanwhile."""
    from annotations import tasks
    from tracing.jobs import JobBusy

    export = make_export(project)
    DatasetExport.objects.filter(pk=export.pk).update(
        status=ExportStatus.RUNNING, attempts=1, heartbeat_at=timezone.now()
    )
    with pytest.raises(JobBusy) as busy:
        services.export_run(export_id=export.pk)
    assert 5 <= busy.value.retry_in <= 60
    export.refresh_from_db()
    assert (export.status, export.attempts, export.file.name) == (ExportStatus.RUNNING, 1, "")

    sent = []
    monkeypatch.setattr(
        tasks.export_dataset_task, "apply_async", lambda args, kwargs, countdown: sent.append((args, kwargs))
    )
    tasks.export_dataset_task.run(export.pk)
    assert sent == [((export.pk,), {"busy_retries": 1})]

    # Its worker died: the heartbeat goes stale and the next message writes it.
    DatasetExport.objects.filter(pk=export.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    export = services.export_run(export_id=export.pk)
    assert export.status == ExportStatus.SUCCEEDED and export.attempts == 2


def test_an_export_that_keeps_dying_fails_with_a_reason(project, traces):
    export = make_export(project)
    DatasetExport.objects.filter(pk=export.pk).update(status=ExportStatus.RUNNING, attempts=3)
    export = services.export_run(export_id=export.pk)
    assert export.status == ExportStatus.FAILED and "gave up after 3 interrupted attempts" in export.error


def test_deleting_an_export_removes_its_file(project, traces, media):
    export = services.export_run(export_id=make_export(project, fmt="csv").pk)
    path = Path(media) / export.file.name
    assert path.is_file()
    services.export_delete(export=export)
    assert not path.exists() and not DatasetExport.objects.filter(pk=export.pk).exists()


# --- pages -----------------------------------------------------------------------------------------------------


def test_the_builder_starts_an_export_with_the_chosen_filters(owner_client, project, traces):
    response = owner_client.get(f"/annotations/projects/{project.slug}/exports/")
    assert response.status_code == 200 and b"Build a dataset" in response.content
    response = owner_client.post(
        f"/annotations/projects/{project.slug}/exports/",
        {
            "format": "parquet",
            "sources": ["imported", "adjudicated"],
            "min_agreement": "",
            "date_from": "2020-01-01",
            "date_to": "2030-01-01",
            "seed": "9",
            "test_percent": "30",
        },
    )
    export = DatasetExport.objects.get(project=project)
    assert response.status_code == 302 and response["Location"].endswith(f"#export-{export.pk}")
    assert export.format == "parquet" and export.status == ExportStatus.QUEUED
    assert export.filters == {
        "sources": ["imported", "adjudicated"],
        "verified_only": False,
        "min_agreement": None,
        "date_from": "2020-01-01",
        "date_to": "2030-01-01",
        "seed": 9,
        "test_percent": 30,
        "scope": "",  # every labelled trace, not a trace-list scope
    }


def test_the_form_reads_every_filter():
    from annotations.forms import ExportForm

    form = ExportForm(
        {
            "format": "csv",
            "sources": ["annotator"],
            "verified_only": "on",
            "min_agreement": "0.75",
            "date_from": "2026-01-02",
            "date_to": "2026-02-03",
            "seed": "11",
            "test_percent": "10",
        }
    )
    assert form.is_valid(), form.errors
    assert form.filters() == ExportFilters(
        sources=["annotator"],
        verified_only=True,
        min_agreement=0.75,
        date_from=date(2026, 1, 2),
        date_to=date(2026, 2, 3),
        seed=11,
        test_percent=10,
    )
    backwards = ExportForm(
        {
            "format": "csv",
            "sources": ["annotator"],
            "date_from": "2026-02-03",
            "date_to": "2026-01-02",
            "seed": "0",
            "test_percent": "10",
        }
    )
    assert not backwards.is_valid() and "date_to" in backwards.errors


def test_the_builder_shows_form_errors(owner_client, project):
    response = owner_client.post(
        f"/annotations/projects/{project.slug}/exports/",
        {"format": "xml", "sources": [], "seed": "0", "test_percent": "101"},
    )
    assert response.status_code == 400
    assert not DatasetExport.objects.exists()


def test_a_finished_export_downloads_as_an_attachment(owner_client, project, traces):
    export = services.export_run(export_id=make_export(project).pk)
    response = owner_client.get(f"/annotations/exports/{export.pk}/download/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{export.filename}"'
    body = b"".join(response.streaming_content).decode()
    assert len(body.splitlines()) == len(traces)
    manifest = owner_client.get(f"/annotations/exports/{export.pk}/manifest/")
    assert manifest["Content-Disposition"].startswith("attachment;")
    assert json.loads(manifest.content)["counts"]["cases"] == len(traces)


def test_an_unfinished_export_has_nothing_to_download(owner_client, project, traces):
    export = make_export(project)
    assert owner_client.get(f"/annotations/exports/{export.pk}/download/").status_code == 404


def test_another_projects_export_is_a_404_and_a_viewer_gets_a_403(
    client, project, traces, make_user, make_project
):
    export = services.export_run(export_id=make_export(project).pk)
    stranger = make_user("stranger")
    make_project("Theirs", {stranger: Role.OWNER})
    client.force_login(stranger)
    for url in (
        f"/annotations/exports/{export.pk}/download/",
        f"/annotations/exports/{export.pk}/manifest/",
        f"/annotations/projects/{project.slug}/exports/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/annotations/exports/{export.pk}/delete/").status_code == 404
    viewer = make_user("viewer")
    from tracing.services import membership_set

    membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(f"/annotations/exports/{export.pk}/download/").status_code == 403
    assert client.get(f"/annotations/projects/{project.slug}/exports/").status_code == 403
    assert DatasetExport.objects.filter(pk=export.pk).exists()


def test_an_annotator_can_export_and_delete(client, project, traces, make_user, media):
    annotator = make_user("annie")
    from tracing.services import membership_set

    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    export = services.export_run(export_id=make_export(project, fmt="whowhen-zip").pk)
    assert client.get(f"/annotations/exports/{export.pk}/download/").status_code == 200
    response = client.post(f"/annotations/exports/{export.pk}/delete/")
    assert response.status_code == 302 and not DatasetExport.objects.exists()
    assert not (Path(media) / export.file.name).exists()


def test_the_export_list_partial_polls_while_an_export_runs(owner_client, project, traces):
    make_export(project)
    response = owner_client.get(f"/annotations/projects/{project.slug}/exports/", HTTP_HX_REQUEST="true")
    assert b'hx-trigger="every 1s"' in response.content and b"Build a dataset" not in response.content


def test_the_builder_previews_what_the_filters_select(owner_client, project, traces):
    label(traces[0], LabelSource.ADJUDICATED)
    page = owner_client.get(f"/annotations/projects/{project.slug}/exports/")
    assert f"{len(traces)} cases".encode() in page.content  # the defaults: every label source
    url = f"/annotations/projects/{project.slug}/exports/preview/"
    query = {"format": "csv", "sources": ["adjudicated"], "seed": "0", "test_percent": "0"}
    partial = owner_client.get(url, query, HTTP_HX_REQUEST="true")
    text = partial.content.decode()
    assert partial.status_code == 200 and "Build a dataset" not in text
    assert "1 case<" in text and f"{traces[0].step_count} steps" in text and "adjudicated 1" in text
    full = owner_client.get(url, query)
    assert b"Build a dataset" in full.content and b"1 case<" in full.content
    invalid = owner_client.get(url, {"format": "csv", "test_percent": "300"}, HTTP_HX_REQUEST="true")
    assert b"Fix the filters" in invalid.content


def test_an_attempt_that_lost_its_row_while_writing_throws_its_file_away(project, traces, tmp_path):
    """A redelivered task took the export over (or it was deleted) while this attempt was writing: the attempt's
    file must neither replace the winner's nor stay behind as a temporary file."""
    from annotations.services import write_atomically

    filters = ExportFilters()
    cases = export_cases(project=project, filters=filters)
    manifest = export_manifest(project=project, filters=filters, cases=cases, fmt="csv")
    final = tmp_path / "out" / "data.csv"
    final.parent.mkdir()
    final.write_text("the winner's file")
    assert write_atomically(final, cases, manifest, "csv", tag="attempt1", still_wanted=lambda: False) is None
    assert final.read_text() == "the winner's file"
    assert [p.name for p in final.parent.iterdir()] == ["data.csv"]
    written = write_atomically(final, cases, manifest, "csv", tag="attempt2", still_wanted=lambda: True)
    assert written == sum(t.step_count for t in traces) and final.read_text().startswith("split,trace_name")


def test_minimum_agreement_reads_the_review_queues(project, make_user):
    """Two annotators who agree make a trace pass a high minimum; two who disagree keep it out."""
    from annotations import services as annotation_services
    from annotations.selectors import agreement_for_traces
    from tracing.models import Role, Trace
    from tracing.services import membership_set

    traces = (
        list(Trace.objects.filter(project=project).order_by("pk")[:2])
        if Trace.objects.filter(project=project).count() >= 2
        else None
    )
    if traces is None:
        from tests.conftest import import_now, incoming_path, sample_file

        import_now(
            project,
            incoming_path(sample_file("Hand-Crafted")),
            incoming_path(sample_file("Algorithm-Generated")),
        )
        traces = list(Trace.objects.filter(project=project).order_by("pk")[:2])
    ann, bob = make_user("ann"), make_user("bob")
    for user in (ann, bob):
        membership_set(project=project, user=user, role=Role.ANNOTATOR)
    queue = annotation_services.queue_create(
        project=project, user=None, name="agree", source="search", filter={"q": ""}, overlap=2
    )
    answers = {ann: {traces[0].pk: 1, traces[1].pk: 1}, bob: {traces[0].pk: 1, traces[1].pk: 2}}
    for user in (ann, bob):
        while (copy := annotation_services.annotation_claim(queue=queue, user=user)) is not None:
            step = answers[user].get(copy.item.trace_id, 0)
            annotation_services.annotation_submit(annotation=copy, user=user, step_index=step)
    agreement = agreement_for_traces(trace_ids=[t.pk for t in traces])
    assert agreement[traces[0].pk] == 1.0 and agreement[traces[1].pk] == 0.0
