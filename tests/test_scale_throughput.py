"""Team scale (issue 19): a bundle of many small traces is written in batches, and an offline method's run is
attributed in batches, with one update of the job or run row per batch, never per trace. Query counts, not timings."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from attribution import services as attribution_services
from attribution.models import AttributionRun, Verdict
from tests.conftest import import_now, incoming_bytes, sample_file
from tracing.models import Agent, GoldLabel, IngestJob, JobStatus, Step, Trace
from tracing.services import ingest

pytestmark = pytest.mark.django_db

# Small batches keep these tests quick; the code path is the one a 500-trace batch takes.
BATCH_TRACES = 20


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(ingest, "BATCH_TRACES", BATCH_TRACES)


def bundle(
    n: int, subset: str = "Hand-Crafted", names: list[str] | None = None, runs: list[int] | None = None
) -> bytes:
    """n Who&When records as JSON Lines, each its own run (a name and question of its own) unless ``runs`` says
    which run each record is (equal numbers: the same run again)."""
    document = json.loads(sample_file(subset).read_text())
    names = names or [f"bundle-{i:04d}" for i in range(n)]
    runs = runs or list(range(n))
    lines = [
        json.dumps(document | {"trace_name": names[i], "question": f"{document['question']} #{runs[i]}"})
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def updates_of(queries: list[dict], table: str) -> int:
    return sum(1 for q in queries if q["sql"].startswith(f'UPDATE "{table}"'))


def test_a_bundle_of_small_traces_is_written_in_batches_with_its_report_and_trace_list(project):
    n = 2 * BATCH_TRACES + 7
    with CaptureQueriesContext(connection) as queries:
        (job,) = import_now(project, incoming_bytes("bundle.jsonl", bundle(n)))
    assert job.status == JobStatus.SUCCEEDED, job.error
    traces = list(Trace.objects.filter(project=project).order_by("ordinal"))
    assert [t.name for t in traces] == [f"bundle-{i:04d}" for i in range(n)]
    stored = IngestJob.objects.get(pk=job.pk)
    assert stored.trace_ids == [t.pk for t in traces]  # in file order, each once
    assert stored.steps_done == sum(t.step_count for t in traces)
    assert stored.report["traces"] == n and stored.report["steps"] == stored.steps_done
    assert stored.report["labels"] == GoldLabel.objects.filter(trace__project=project).count() == n
    # The job row's progress and trace list move once per batch (3 batches), not once per trace.
    assert updates_of(queries.captured_queries, "tracing_ingestjob") <= 3 + 4


def test_a_redelivered_bundle_job_links_the_traces_it_wrote_and_writes_no_second_copy(project):
    (job,) = import_now(project, incoming_bytes("bundle.jsonl", bundle(BATCH_TRACES + 3)))
    first = list(IngestJob.objects.get(pk=job.pk).trace_ids)
    # A worker died after the last batch committed but before the job was marked done: once its heartbeat is stale,
    # the job runs again.
    IngestJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    from tracing import services

    again = services.ingest_job_run(job_id=job.pk)
    assert again.status in (JobStatus.SUCCEEDED, JobStatus.DUPLICATE)
    assert Trace.objects.filter(project=project).count() == BATCH_TRACES + 3
    assert IngestJob.objects.get(pk=job.pk).trace_ids == first


def make_labelled_traces(project, n: int) -> list[int]:
    (job,) = import_now(project, incoming_bytes("bundle.jsonl", bundle(n)))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return list(Trace.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))


def test_a_heuristic_run_is_attributed_in_batches_with_one_run_row_update_per_batch(project):
    ids = make_labelled_traces(project, 2 * attribution_services.OFFLINE_BATCH + 5)
    run = attribution_services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    assert attribution_services.is_offline(run)
    with CaptureQueriesContext(connection) as queries:
        run = attribution_services.run_execute_inline(run=run)
    assert run.status == "succeeded" and run.done == len(ids) and run.failed == 0
    assert Verdict.objects.filter(run=run).count() == len(ids)
    assert set(Verdict.objects.filter(run=run).values_list("trace_id", flat=True)) == set(ids)
    # 3 batches: claim, 3 counter updates, 3 finish checks and the final one; one per trace would be 55 x 2.
    assert updates_of(queries.captured_queries, "attribution_attributionrun") <= 1 + 3 + 3 + 1


def test_a_redelivered_batch_writes_nothing_twice(project):
    ids = make_labelled_traces(project, 6)
    run = attribution_services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    attribution_services.run_claim(run_id=run.pk)
    assert attribution_services.run_traces(run_id=run.pk, trace_ids=ids[:4]) == 4
    assert attribution_services.run_traces(run_id=run.pk, trace_ids=ids) == 2  # the first four are skipped
    assert attribution_services.run_traces(run_id=run.pk, trace_ids=ids) == 0
    run = AttributionRun.objects.get(pk=run.pk)
    assert run.done == 6 and run.status == "succeeded"
    assert Verdict.objects.filter(run=run).count() == 6


def test_a_batch_skips_a_trace_another_delivery_already_attributed(project):
    ids = make_labelled_traces(project, 4)
    run = attribution_services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    attribution_services.run_claim(run_id=run.pk)
    attribution_services.run_trace(run_id=run.pk, trace_id=ids[2])  # the other delivery wrote this one
    # The batch skips it and writes the other three; the counters count each verdict once.
    assert attribution_services.run_traces(run_id=run.pk, trace_ids=ids) == 3
    run = AttributionRun.objects.get(pk=run.pk)
    assert run.done == 4 and Verdict.objects.filter(run=run).count() == 4


def test_a_batch_is_written_with_the_same_number_of_queries_whatever_its_size(project, monkeypatch):
    monkeypatch.setattr(ingest, "BATCH_TRACES", 1000)

    def queries_for(n: int, first_run: int) -> int:
        data = bundle(
            n, names=[f"{first_run}-{i}" for i in range(n)], runs=list(range(first_run, first_run + n))
        )
        with CaptureQueriesContext(connection) as queries:
            (job,) = import_now(project, incoming_bytes(f"{first_run}.jsonl", data))
        assert job.status == JobStatus.SUCCEEDED and job.report["traces"] == n, job.error
        return len(queries.captured_queries)

    assert queries_for(40, 0) == queries_for(4, 100)


def test_a_batch_stores_the_rows_the_one_trace_at_a_time_writer_stores(project, monkeypatch):
    from tracing.formats import whowhen

    (batched,) = import_now(project, incoming_bytes("b.jsonl", bundle(3, "Algorithm-Generated")))
    # The streamed path writes one trace in step batches (tracing/services/writer.py, _write_contents).
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    document = json.loads(bundle(3, "Algorithm-Generated").splitlines()[1])
    (streamed,) = import_now(project, incoming_bytes("s.json", json.dumps(document, indent=1).encode()))
    assert streamed.status == JobStatus.DUPLICATE  # same content, found by the hash the batch stored
    one = Trace.objects.get(pk=batched.trace_ids[1])
    (again,) = import_anyway(project, "s2.json", json.dumps(document, indent=2).encode())
    assert again.status == JobStatus.SUCCEEDED, again.error
    other = Trace.objects.get(pk=again.trace_ids[0])
    assert (one.content_hash, one.totals, one.step_count, one.agent_count) == (
        other.content_hash,
        other.totals,
        other.step_count,
        other.agent_count,
    )
    agent_fields = ("name", "system_prompt", "position", "step_count")
    assert list(Agent.objects.filter(trace=one).values_list(*agent_fields)) == list(
        Agent.objects.filter(trace=other).values_list(*agent_fields)
    )
    step_fields = ("index", "agent__name", "speaker", "recipient", "kind", "content", "raw")
    assert list(Step.objects.filter(trace=one).values_list(*step_fields)) == list(
        Step.objects.filter(trace=other).values_list(*step_fields)
    )
    gold_fields = ("agent_name", "agent__name", "step_index", "category", "reason", "source")
    assert list(GoldLabel.objects.filter(trace=one).values_list(*gold_fields)) == list(
        GoldLabel.objects.filter(trace=other).values_list(*gold_fields)
    )


def import_anyway(project, name: str, data: bytes) -> list[IngestJob]:
    from tracing import services

    jobs = services.ingest_jobs_create(
        project=project, files=[incoming_bytes(name, data)], user=None, duplicates="import", enqueue=False
    )
    return [services.ingest_job_run(job_id=j.pk) for j in jobs]


def test_names_taken_in_the_project_or_earlier_in_the_batch_get_the_trace_id_appended(project):
    import_now(project, incoming_bytes("first.jsonl", bundle(1, names=["same"], runs=[100])))
    (job,) = import_now(project, incoming_bytes("second.jsonl", bundle(3, names=["same", "same", "other"])))
    assert job.status == JobStatus.SUCCEEDED, job.error
    names = list(
        Trace.objects.filter(pk__in=job.trace_ids).order_by("ordinal").values_list("name", flat=True)
    )
    external = json.loads(sample_file().read_text())["question_ID"][:40]
    assert names == [f"same [{external}]", f"same [{external}] (2)", "other"]


def test_a_run_twice_in_one_batch_is_written_once_and_the_copy_reported_as_its_duplicate(project):
    (job,) = import_now(project, incoming_bytes("twice.jsonl", bundle(3, runs=[1, 2, 1])))
    assert job.status == JobStatus.SUCCEEDED, job.error
    first, second = Trace.objects.filter(project=project).order_by("ordinal")
    assert (job.report["traces"], job.report["duplicates"]) == (2, 1)
    assert job.report["duplicate_of"] == [
        {"name": "bundle-0002", "trace_id": first.pk, "trace_name": first.name, "labels": 0}
    ]
    assert IngestJob.objects.get(pk=job.pk).trace_ids == [first.pk, second.pk]


def test_writing_a_trace_another_job_already_wrote_raises_the_integrity_error_the_job_handles(project):
    from django.db import IntegrityError, transaction

    from tracing.formats import Source, get_format
    from tracing.services.writer import trace_prepare, traces_create_prepared

    (job,) = import_now(project, incoming_bytes("b.jsonl", bundle(2)))
    parsed = list(get_format("whowhen-jsonl").parse(Source.from_bytes("b.jsonl", bundle(2))))
    with pytest.raises(IntegrityError), transaction.atomic():
        traces_create_prepared(project=project, upload=job.upload, items=[(1, trace_prepare(parsed[1]))])
    assert Trace.objects.filter(project=project).count() == 2
