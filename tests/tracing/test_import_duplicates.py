"""Duplicate detection on import (issue 19): a trace whose content is already in the project is not written again;
the job reports it as a duplicate of the trace that holds it, and "import anyway" writes it regardless."""

from __future__ import annotations

import io
import json
import zipfile
from importlib import import_module

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import import_now, incoming_bytes, sample_file
from tracing import services
from tracing.content_hash import STEP_KINDS
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import GoldLabel, IngestJob, JobStatus, StepKind, Trace
from tracing.services import ingest
from tracing.services.writer import trace_content_hash, trace_create_from_parsed

pytestmark = pytest.mark.django_db

DOCUMENT = json.loads(sample_file("Hand-Crafted").read_text())


def run(i: int, **changes: object) -> dict:
    """The sample Who&When run made into run ``i`` (a question of its own)."""
    return DOCUMENT | {"question": f"{DOCUMENT['question']} #{i}"} | changes


def as_json(document: dict, indent: int | None = None) -> bytes:
    return json.dumps(document, indent=indent).encode()


def as_jsonl(*documents: dict) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in documents).encode()


def as_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def traces_of(project) -> int:
    return Trace.objects.filter(project=project).count()


def test_the_same_file_again_is_reported_as_already_imported_and_adds_no_trace(project):
    (first,) = import_now(project, incoming_bytes("run.json", as_json(run(1))))
    (again,) = import_now(project, incoming_bytes("run.json", as_json(run(1))))
    assert first.status == JobStatus.SUCCEEDED and again.status == JobStatus.DUPLICATE
    assert again.trace_ids == first.trace_ids and traces_of(project) == 1


def test_the_same_run_in_another_file_is_a_duplicate_whatever_the_file_is_called(project):
    (first,) = import_now(project, incoming_bytes("Hand-Crafted/run.json", as_json(run(1))))
    original = Trace.objects.get(pk=first.trace_ids[0])
    # Other bytes (indented), another name, another folder: the same run.
    (again,) = import_now(project, incoming_bytes("copies/renamed.json", as_json(run(1), indent=2)))
    assert again.status == JobStatus.DUPLICATE, again.error
    assert again.trace_ids == [] and traces_of(project) == 1
    assert again.report["traces"] == 0 and again.report["duplicates"] == 1
    assert again.report["duplicate_of"] == [
        {"name": "copies/renamed", "trace_id": original.pk, "trace_name": original.name, "labels": 0}
    ]


def test_a_bundle_overlapping_an_earlier_one_adds_only_the_new_trace(project):
    (earlier,) = import_now(project, incoming_bytes("bundle.jsonl", as_jsonl(run(1), run(2))))
    assert earlier.status == JobStatus.SUCCEEDED and traces_of(project) == 2
    archive = as_zip({f"runs/{i}.json": as_json(run(i)) for i in (1, 2, 3)})
    jobs = import_now(project, incoming_bytes("overlap.zip", archive))
    assert [j.status for j in jobs] == [JobStatus.DUPLICATE, JobStatus.DUPLICATE, JobStatus.SUCCEEDED]
    assert traces_of(project) == 3
    assert [j.report["duplicates"] for j in jobs] == [1, 1, 0]
    assert Trace.objects.get(pk=jobs[2].trace_ids[0]).question.endswith("#3")


def test_one_file_overlapping_the_project_reports_its_duplicates_beside_its_new_traces(project):
    import_now(project, incoming_bytes("bundle.jsonl", as_jsonl(run(1), run(2))))
    # Run 3 twice in one file: its second copy is a duplicate of the first.
    (job,) = import_now(project, incoming_bytes("more.jsonl", as_jsonl(run(2), run(3), run(1), run(3))))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert traces_of(project) == 3
    assert (job.report["traces"], job.report["duplicates"]) == (1, 3)
    new = Trace.objects.get(pk=job.trace_ids[0])
    assert [d["trace_id"] for d in job.report["duplicate_of"]][-1] == new.pk
    assert IngestJob.objects.get(pk=job.pk).trace_ids == [new.pk]


def test_import_anyway_writes_the_run_again_through_the_api(client, project, owner):
    token = services.api_token_create(project=project, name="ci", user=owner)[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    import_now(project, incoming_bytes("run.json", as_json(run(1))))
    refused = client.post(
        "/api/uploads", {"files": [SimpleUploadedFile("a.json", b"{}")], "duplicates": "maybe"}, **auth
    )
    assert refused.status_code == 422 and "skip, import" in refused.json()["detail"]
    files = [SimpleUploadedFile("again.json", as_json(run(1), indent=1))]
    body = client.post("/api/uploads", {"files": files, "duplicates": "import"}, **auth).json()
    job = services.ingest_job_run(job_id=body["jobs"][0]["id"])
    assert job.status == JobStatus.SUCCEEDED and job.report["duplicates"] == 0
    hashes = list(Trace.objects.filter(project=project).values_list("content_hash", flat=True))
    assert len(hashes) == 2 and hashes[0] == hashes[1] != ""
    shown = client.get(f"/api/jobs/{job.pk}", **auth).json()
    assert shown["report"]["traces"] == 1 and shown["report"]["duplicate_of"] == []


def test_a_labelled_copy_gives_its_labels_to_a_run_imported_without_them(project):
    bare = {k: v for k, v in run(1).items() if not k.startswith("mistake_")}
    (first,) = import_now(project, incoming_bytes("bare.json", as_json(bare)))
    trace = Trace.objects.get(pk=first.trace_ids[0])
    assert not trace.gold_labels.exists()
    (labelled,) = import_now(project, incoming_bytes("labelled.json", as_json(run(1))))
    assert labelled.status == JobStatus.SUCCEEDED and traces_of(project) == 1
    assert labelled.report["duplicate_of"][0]["labels"] == 1 and labelled.report["labels"] == 1
    gold = trace.gold_labels.get()
    assert (gold.agent_name, gold.step_index) == (DOCUMENT["mistake_agent"], int(DOCUMENT["mistake_step"]))
    # A run that already has imported labels keeps them: a third copy attaches nothing.
    (third,) = import_now(project, incoming_bytes("third.json", as_json(run(1), indent=4)))
    assert third.status == JobStatus.DUPLICATE and third.report["duplicate_of"][0]["labels"] == 0
    assert GoldLabel.objects.filter(trace=trace).count() == 1


def test_a_streamed_duplicate_is_rolled_back_and_reported(project, monkeypatch):
    from tracing.formats import whowhen

    (first,) = import_now(project, incoming_bytes("run.json", as_json(run(1))))
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    (streamed,) = import_now(project, incoming_bytes("big.json", as_json(run(1), indent=2)))
    assert streamed.status == JobStatus.DUPLICATE, streamed.error
    assert traces_of(project) == 1 and streamed.report["duplicate_of"][0]["trace_id"] == first.trace_ids[0]
    (new,) = import_now(project, incoming_bytes("big2.json", as_json(run(2), indent=2)))
    assert new.status == JobStatus.SUCCEEDED and traces_of(project) == 2
    assert Trace.objects.get(pk=new.trace_ids[0]).content_hash == _parsed_hash(run(2))


def test_the_one_trace_at_a_time_path_skips_duplicates_too(project):
    (first,) = import_now(project, incoming_bytes("run.json", as_json(run(1))))
    job = ingest.ingest_jobs_create(
        project=project,
        files=[incoming_bytes("copy.json", as_json(run(1), indent=3))],
        user=None,
        enqueue=False,
    )[0]
    report = ingest._Report()
    ingest._import_one(job=job, ordinal=0, parsed=_parsed(run(1)), report=report)
    assert (report.traces, report.duplicates) == (0, 1) and traces_of(project) == 1
    assert report.duplicate_of[0]["trace_id"] == first.trace_ids[0]
    ingest._import_one(job=job, ordinal=1, parsed=_parsed(run(2)), report=report)
    assert (report.traces, report.duplicates) == (1, 1) and traces_of(project) == 2


# --- the hash ------------------------------------------------------------------------------------------------------


def _parsed(document: dict, name: str = "x") -> ParsedTrace:
    from tracing.formats import Source, get_format

    (parsed,) = get_format("whowhen").parse(Source.from_bytes(f"{name}.json", as_json(document)))
    return parsed


def _parsed_hash(document: dict) -> str:
    return trace_content_hash(_parsed(document))


def test_the_hash_counts_steps_question_and_answer_but_not_names_labels_or_metadata():
    base = _parsed_hash(run(1))
    assert trace_content_hash(_parsed(run(1), name="elsewhere/other")) == base
    assert _parsed_hash(run(1, mistake_agent="Nobody", mistake_step="0", mistake_reason="")) == base
    assert _parsed_hash(run(1, level=3, is_correct=True)) == base
    assert _parsed_hash(run(2)) != base
    assert _parsed_hash(run(1, ground_truth="something else")) != base
    history = [dict(m) for m in DOCUMENT["history"]]
    history[-1]["content"] += " (edited)"
    assert _parsed_hash(run(1, history=history)) != base
    assert _parsed_hash(run(1, history=history[:-1])) != base
    assert _parsed_hash(run(1, history=[history[1], history[0], *history[2:]])) != base


def test_the_hash_computed_before_writing_is_the_one_stored(project):
    steps = [
        ParsedStep(speaker="u", agent=None, kind="human", content="hi\x00there"),
        ParsedStep(speaker="a", agent="A" * 250, kind="made-up kind", content="answer"),
    ]
    parsed = ParsedTrace(name="t", source_format="openai_chat", steps=steps, question="q?", ground_truth="42")
    before = trace_content_hash(parsed)
    trace = trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)
    assert trace.content_hash == before == Trace.objects.get(pk=trace.pk).content_hash
    assert STEP_KINDS == set(StepKind.values)  # the hash normalises kinds exactly as the writer stores them


# --- the migration's backfill --------------------------------------------------------------------------------------


MIGRATION = import_module("tracing.migrations.0011_trace_content_hash")


def test_the_backfill_gives_existing_traces_the_hash_an_import_would(project, monkeypatch):
    backfill = MIGRATION.backfill_content_hashes
    backfill(apps, None)  # an empty project: nothing to do, nothing fails
    import_now(project, incoming_bytes("bundle.jsonl", as_jsonl(run(1), run(2), run(3))))
    bare = trace_create_from_parsed(
        project=project, upload=None, ordinal=0, parsed=ParsedTrace(name="empty", source_format="x", steps=[])
    )
    expected = dict(Trace.objects.values_list("pk", "content_hash"))
    assert len(set(expected.values())) == 4 and "" not in expected.values()
    Trace.objects.update(content_hash="")
    monkeypatch.setattr(MIGRATION, "BACKFILL_TRACES", 2)  # several batches, one cut inside the project
    backfill(apps, None)
    assert dict(Trace.objects.values_list("pk", "content_hash")) == expected
    assert bare.pk in expected


# --- the upload pages ----------------------------------------------------------------------------------------------


def test_the_import_page_sums_up_imported_and_skipped_traces_and_links_each_duplicate(client, project, owner):
    client.force_login(owner)
    import_now(project, incoming_bytes("bundle.jsonl", as_jsonl(run(1), run(2))))
    jobs = import_now(project, incoming_bytes("overlap.jsonl", as_jsonl(run(1), run(3), run(2))))
    page = client.get(reverse("tracing:upload_batch", args=[project.slug, jobs[0].batch])).content.decode()
    assert "1 imported, 2 duplicates skipped" in page
    for trace in Trace.objects.filter(question__in=[run(1)["question"], run(2)["question"]]):
        assert f'duplicate of <a href="{reverse("tracing:trace_detail", args=[trace.pk])}">' in page
    upload_page = client.get(reverse("tracing:upload", args=[project.slug])).content.decode()
    assert "2 duplicates skipped" in upload_page and 'name="duplicates"' in upload_page


def test_the_upload_form_passes_import_anyway_to_the_job(client, project, owner):
    client.force_login(owner)
    data = {"files": [SimpleUploadedFile("a.json", as_json(run(1)))], "duplicates": "import"}
    response = client.post(reverse("tracing:upload", args=[project.slug]), data)
    assert response.status_code == 302
    assert IngestJob.objects.get(project=project).duplicates == "import"
