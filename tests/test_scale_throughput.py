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
from tracing.models import GoldLabel, IngestJob, JobStatus, Trace
from tracing.services.ingest import BATCH_TRACES

pytestmark = pytest.mark.django_db


def bundle(n: int) -> bytes:
    """n Who&When records as JSON Lines, each its own run (a name and question of its own)."""
    document = json.loads(sample_file().read_text())
    lines = [
        json.dumps(document | {"trace_name": f"bundle-{i:04d}", "question": f"{document['question']} #{i}"})
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
