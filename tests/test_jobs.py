"""One job base for every long job (tracing.jobs.Job, tracing.job_tasks.JobTask) and one recovery for all of them: a
job whose worker died is queued again by the reaper, its attempts counted and shown, and after the last attempt it
fails with a readable reason. The last test kills a worker with SIGKILL in the middle of an attribution run."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from celery import shared_task
from django.core.management import call_command
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from annotations import services as annotation_services
from annotations.models import DatasetExport, ExportStatus
from annotations.selectors import ExportFilters
from attribution import services as attribution_services
from attribution.models import (
    AttributionRun,
    CampaignStatus,
    Injection,
    InjectionCampaign,
    InjectionStatus,
    RunStatus,
    Verdict,
)
from tests.conftest import WorkerProcess, import_now, incoming_path, sample_file, wait_for, whowhen_files
from tracing import services
from tracing.job_tasks import JobTask
from tracing.jobs import Job, JobStatusChoices
from tracing.models import IngestJob, JobStatus, Trace

JOB_MODELS = (IngestJob, AttributionRun, InjectionCampaign, DatasetExport)
QUIET = timedelta(seconds=60)  # older than the running threshold the tests pass (45 s)


# --- the model -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", JOB_MODELS, ids=lambda m: m.__name__)
def test_every_job_table_shares_the_base_and_its_one_implementation(model):
    assert issubclass(model, Job) and model.MAX_ATTEMPTS == 3
    for name in ("is_finished", "percent", "attempt_shown", "retrying_attempt"):
        assert getattr(model, name) is getattr(Job, name), f"{model.__name__}.{name} is its own again"
    choices = type(model._meta.get_field("status").default)
    assert issubclass(choices, JobStatusChoices)
    assert {"queued", "running", "succeeded", "failed"} <= set(choices.values)
    for name in ("status", "attempts", "heartbeat_at", "created_at", "started_at", "finished_at", "error"):
        model._meta.get_field(name)


@pytest.mark.django_db
def test_the_columns_and_their_data_stay_where_they_were():
    # Runs and campaigns counted restarts in "reaped"; the base's attempts live in that same column, and the
    # migration that renamed the field touches nothing in the database.
    assert AttributionRun._meta.get_field("attempts").column == "reaped"
    assert InjectionCampaign._meta.get_field("attempts").column == "reaped"
    assert IngestJob._meta.get_field("steps_done").column == "steps_done"
    output = _sqlmigrate("attribution", "0010_job_attempts")
    statements = [line for line in output.splitlines() if line.strip() and not line.startswith("--")]
    assert statements == ["BEGIN;", "COMMIT;"] and output.count("(no-op)") == 4


def _sqlmigrate(app: str, name: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("sqlmigrate", app, name, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("status", "attempts", "shown", "retrying"),
    [
        ("queued", 0, None, None),
        ("running", 1, 1, None),
        ("queued", 1, 2, 2),
        ("queued", 2, 3, 3),
        ("failed", 3, None, None),
        ("succeeded", 1, None, None),
    ],
)
def test_a_page_names_the_attempt_running_or_coming(status, attempts, shown, retrying):
    for job in (
        IngestJob(status=status, attempts=attempts),
        AttributionRun(status=status, attempts=attempts),
    ):
        assert (job.attempt_shown, job.retrying_attempt) == (shown, retrying)


def test_progress_is_read_from_each_tables_own_columns():
    assert IngestJob(status="running", steps_done=50, steps_total=200).percent == 25
    assert DatasetExport(status="running", steps_done=200, steps_total=200).percent == 99  # not finished yet
    assert AttributionRun(status="running", done=3, total=4).percent == 75
    assert InjectionCampaign(status="stopped", done=1, total=4).percent == 100
    assert (
        AttributionRun(status="cancelled").is_finished and not InjectionCampaign(status="queued").is_finished
    )


# --- the task base ---------------------------------------------------------------------------------------------------


def test_every_job_task_acknowledges_late_and_retries_only_named_transient_errors():
    from annotations.tasks import export_dataset_task
    from attribution import tasks as attribution_tasks
    from tracing.tasks import build_otlp_traces_task, ingest_file_task, rebuild_otlp_trace_task

    tasks = [
        ingest_file_task,
        rebuild_otlp_trace_task,
        build_otlp_traces_task,
        export_dataset_task,
        attribution_tasks.start_run_task,
        attribution_tasks.attribute_trace_task,
        attribution_tasks.attribute_traces_task,
        attribution_tasks.start_campaign_task,
        attribution_tasks.inject_task,
        attribution_tasks.train_attributor_task,
        attribution_tasks.distill_schemas_task,
    ]
    for task in (t._get_current_object() for t in tasks):
        assert isinstance(task, JobTask), task.name
        assert task.acks_late and task.reject_on_worker_lost and task.max_retries == 5, task.name
        assert task.retry_backoff and task.retry_backoff_max == 30 and not task.retry_jitter, task.name
        assert hasattr(task, "_orig_run"), f"{task.name} does not retry on its own"


attempts_seen: list[int] = []


def _fail_ingest(job_id: int, reason: str) -> None:
    services.ingest_job_fail(job=IngestJob.objects.get(pk=job_id), reason=reason)


@shared_task(base=JobTask, bind=True, name="tests.database_always_times_out", fail_job=_fail_ingest)
def database_always_times_out_task(self, job_id: int) -> None:
    attempts_seen.append(self.request.retries)
    with transaction.atomic(), connection.cursor() as cursor:  # a real OperationalError from PostgreSQL
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SELECT pg_sleep(1)")


@pytest.mark.django_db
def test_a_task_out_of_retries_on_a_transient_error_fails_its_job_with_the_reason(project):
    (job,) = services.ingest_jobs_create(
        project=project, files=[incoming_path(sample_file())], user=None, enqueue=False
    )
    attempts_seen.clear()
    result = database_always_times_out_task.apply((job.pk,))
    assert attempts_seen == [0, 1, 2, 3, 4, 5]  # the first run and five retries
    assert result.failed()
    job.refresh_from_db()
    assert (
        job.status == JobStatus.FAILED and "the database stayed unavailable (OperationalError)" in job.error
    )


# --- the reaper, for every kind ------------------------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch) -> dict[str, list[int]]:
    """Messages the reaper sends, kept from the broker: a live worker would run them while the test reads."""
    from annotations.tasks import export_dataset_task
    from attribution.tasks import start_campaign_task, start_run_task

    kept: dict[str, list[int]] = {"run": [], "campaign": [], "export": []}
    monkeypatch.setattr(start_run_task, "delay", kept["run"].append)
    monkeypatch.setattr(start_campaign_task, "delay", kept["campaign"].append)
    monkeypatch.setattr(export_dataset_task, "delay", kept["export"].append)
    return kept


def _run(project, **fields: Any) -> AttributionRun:
    return AttributionRun.objects.create(
        project=project, method="heuristic", trace_ids=[1], total=1, **fields
    )


@pytest.mark.django_db
def test_a_running_run_gone_quiet_is_queued_again_keeping_its_attempts_and_the_page_says_so(
    project, owner_client, sent, django_capture_on_commit_callbacks
):
    run = _run(project, status=RunStatus.RUNNING, attempts=1, heartbeat_at=timezone.now() - QUIET)
    assert attribution_services.jobs_reap(stale_after=3600, running_after=120) == {"requeued": 0, "failed": 0}
    with django_capture_on_commit_callbacks(execute=True):  # the message is sent once the update commits
        assert attribution_services.jobs_reap(stale_after=3600, running_after=45) == {
            "requeued": 1,
            "failed": 0,
        }
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.attempts == 1 and sent["run"] == [run.pk]
    page = owner_client.get(reverse("attribution:run_detail", args=[run.pk])).content.decode()
    assert "the worker stopped; retrying (attempt 2 of 3)" in page
    # Queued again, it waits the long threshold: its message may be behind others.
    AttributionRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - QUIET)
    assert attribution_services.jobs_reap(stale_after=3600, running_after=45) == {"requeued": 0, "failed": 0}


@pytest.mark.django_db
def test_a_running_run_with_a_fresh_heartbeat_is_left_alone(project, sent):
    _run(project, status=RunStatus.RUNNING, attempts=1, heartbeat_at=timezone.now())
    assert attribution_services.jobs_reap(stale_after=3600, running_after=45) == {"requeued": 0, "failed": 0}


@pytest.mark.django_db
def test_a_run_whose_last_attempt_stopped_fails_with_a_clear_reason(project, sent):
    run = _run(project, status=RunStatus.RUNNING, attempts=3, heartbeat_at=timezone.now() - QUIET)
    assert attribution_services.jobs_reap(stale_after=3600, running_after=45) == {"requeued": 0, "failed": 1}
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.is_finished and sent["run"] == []
    assert run.error.startswith("gave up after 3 attempts: the worker running it stopped each time")


@pytest.mark.django_db
def test_claiming_counts_attempts_and_a_run_queued_with_none_left_fails(project):
    run = _run(project)
    assert attribution_services.run_claim(run_id=run.pk) and not attribution_services.run_claim(run_id=run.pk)
    assert AttributionRun.objects.get(pk=run.pk).attempts == 1
    spent = _run(project, status=RunStatus.QUEUED, attempts=3)
    assert not attribution_services.run_claim(run_id=spent.pk)
    spent.refresh_from_db()
    assert spent.status == RunStatus.FAILED and "gave up" in spent.error


@pytest.mark.django_db
def test_a_campaign_gone_quiet_is_queued_again_and_fails_after_its_last_attempt(
    project, owner_client, sent, django_capture_on_commit_callbacks
):
    quiet = timezone.now() - QUIET
    campaign = InjectionCampaign.objects.create(
        project=project, status=CampaignStatus.RUNNING, attempts=1, heartbeat_at=quiet
    )
    spent = InjectionCampaign.objects.create(
        project=project, status=CampaignStatus.RUNNING, attempts=3, heartbeat_at=quiet
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert attribution_services.jobs_reap(stale_after=3600, running_after=45) == {
            "requeued": 1,
            "failed": 1,
        }
    campaign.refresh_from_db()
    spent.refresh_from_db()
    assert (
        campaign.status == CampaignStatus.QUEUED
        and campaign.attempts == 1
        and sent["campaign"] == [campaign.pk]
    )
    assert spent.status == CampaignStatus.FAILED and "gave up after 3 attempts" in spent.error
    page = owner_client.get(reverse("attribution:campaign_detail", args=[campaign.pk])).content.decode()
    assert "the worker stopped; retrying (attempt 2 of 3)" in page


@pytest.mark.django_db
def test_a_campaign_queued_again_by_the_reaper_still_settles_its_injections(project):
    attribution_services.sandbox_clean_runs_generate(project=project, runs=1, seed=5)
    clean = Trace.objects.get(project=project, name="sandbox/task-5")
    campaign = attribution_services.campaign_create(
        project=project, trace_ids=[clean.pk], faults_per_trace=2, enqueue=False
    )
    assert attribution_services.campaign_claim(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    attribution_services.campaign_plan(campaign=campaign)
    InjectionCampaign.objects.filter(pk=campaign.pk).update(
        status=CampaignStatus.QUEUED
    )  # what the reaper does
    first = Injection.objects.filter(campaign=campaign).order_by("pk").first()
    settled = attribution_services.injection_execute(injection_id=first.pk)
    assert settled.status in (InjectionStatus.KEPT, InjectionStatus.DISCARDED), settled.error
    # The restart claims it again (attempt 2) and finishes what is pending.
    assert attribution_services.campaign_claim(campaign_id=campaign.pk)
    for injection in Injection.objects.filter(campaign=campaign, status=InjectionStatus.PENDING):
        attribution_services.injection_execute(injection_id=injection.pk)
    done = InjectionCampaign.objects.get(pk=campaign.pk)
    assert done.status == CampaignStatus.SUCCEEDED and done.attempts == 2 and done.done == done.total == 2


@pytest.mark.django_db
def test_an_export_gone_quiet_is_queued_again_and_the_builder_says_so(
    project, owner_client, sent, django_capture_on_commit_callbacks
):
    export = annotation_services.export_create(
        project=project, fmt="csv", filters=ExportFilters(), user=None, enqueue=False
    )
    DatasetExport.objects.filter(pk=export.pk).update(
        status=ExportStatus.RUNNING, attempts=1, heartbeat_at=timezone.now() - QUIET
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert annotation_services.exports_reap(stale_after=3600, running_after=45) == {
            "requeued": 1,
            "failed": 0,
        }
    export.refresh_from_db()
    assert export.status == ExportStatus.QUEUED and export.attempts == 1 and sent["export"] == [export.pk]
    page = owner_client.get(reverse("annotations:export_builder", args=[project.slug])).content.decode()
    assert "the worker stopped; retrying (attempt 2 of 3)" in page


@pytest.mark.django_db(transaction=True)
def test_a_trace_task_beats_its_runs_heartbeat_while_it_works(project, settings):
    settings.CULPRIT_JOB_HEARTBEAT_EVERY = 0.05
    long_ago = timezone.now() - timedelta(hours=1)
    run = _run(project, status=RunStatus.RUNNING, attempts=1, heartbeat_at=long_ago)
    with JobTask.heartbeat(AttributionRun.live_rows(run.pk)):
        wait_for(
            lambda: AttributionRun.objects.filter(pk=run.pk, heartbeat_at__gt=long_ago).exists(), timeout=30
        )
    AttributionRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED, heartbeat_at=long_ago)
    with JobTask.heartbeat(AttributionRun.live_rows(run.pk)):  # a finished run is never moved
        time.sleep(0.3)
    assert AttributionRun.objects.get(pk=run.pk).heartbeat_at == long_ago
    assert not any(t.name == "culprit-heartbeat" for t in threading.enumerate())


# --- kill -9 in the middle of an attribution run --------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_is_recovered_by_the_reaper_with_one_verdict_per_trace(
    project, owner_client, _worker_process, tmp_path
):
    """The broker would give the lost message back only after an hour (its visibility timeout): the run's heartbeat
    going quiet and the reaper, called every few seconds as beat does, bring the run back in seconds."""
    from attribution.models import ProjectLlmSettings
    from attribution.selectors import trace_view
    from attribution.tasks import reap_jobs_task
    from tests.attribution.test_llm_http import MODEL, judge
    from tests.llm_server import fake_llm_server

    jobs = import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in whowhen_files()[:4]])
    ids = [j.trace_ids[0] for j in jobs]
    answer = judge(trace_view(Trace.objects.get(pk=ids[0])).agents)
    _worker_process.stop()  # this test's worker, with the production visibility timeout, is the only one
    worker = WorkerProcess(tmp_path / "worker.log", name="reaped-run")
    worker.VISIBILITY_TIMEOUT = "3600"
    worker.env = {"CULPRIT_JOB_HEARTBEAT_EVERY": "1", "CULPRIT_LLM_CACHE_URL": "off"}
    asked: list[float] = []

    def slow(messages: list[dict[str, Any]]) -> str:
        asked.append(time.monotonic())
        time.sleep(1.5)  # a model takes its time: the worker is killed while it waits for an answer
        return answer(messages)

    worker.start()
    try:
        with fake_llm_server(context=32768, respond=slow) as server:
            ProjectLlmSettings.objects.create(
                project=project, model=MODEL, api_base=server.url, max_retries=0, context_tokens=32768
            )
            run = attribution_services.run_create(project=project, method="all_at_once", trace_ids=ids)
            wait_for(lambda: len(asked) >= 2, timeout=60)  # the second trace is in flight
            worker.kill()
            killed_at = time.monotonic()
            assert Verdict.objects.filter(run=run).count() < len(ids), "the run finished before the kill"

            def reaped() -> bool:
                reap_jobs_task(running_after=5)  # what beat sends every CULPRIT_REAP_EVERY seconds
                if AttributionRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).exists():
                    return True
                time.sleep(1)
                return False

            wait_for(reaped, timeout=60)
            page = owner_client.get(reverse("attribution:run_detail", args=[run.pk])).content.decode()
            assert "the worker stopped; retrying (attempt 2 of 3)" in page
            worker.start()
            done = wait_for(
                lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(),
                timeout=max(1.0, 90 - (time.monotonic() - killed_at)),
            )
    finally:
        worker.stop()
    print(f"kill -9 to finished run: {time.monotonic() - killed_at:.1f} s")
    assert done.attempts == 2 and done.done == done.total == len(ids)
    # Exactly one verdict per trace: the attempt killed mid-trace left nothing half-written behind.
    assert sorted(Verdict.objects.filter(run=run).values_list("trace_id", flat=True)) == sorted(ids)
