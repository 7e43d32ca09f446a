"""The reaper: jobs whose worker vanished (or whose message the broker lost) are re-enqueued from the database rows,
and jobs out of attempts fail with a readable reason. The last test runs real Celery beat beside the real worker."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from attribution import services as attribution_services
from attribution.models import AttributionRun, CampaignStatus, InjectionCampaign, RunStatus, Verdict
from attribution.services import reaper
from tests.conftest import ROOT, incoming_path, process_env, sample_file, wait_for
from tracing import services
from tracing.jobs import JobBusy
from tracing.models import IngestJob, JobStatus, Trace
from tracing.services.reaper import heartbeat

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LONG_AGO = timezone.now() - timedelta(hours=3)


def lost_ingest_job(project) -> IngestJob:
    """A job whose message never reached a worker (a broker restarted without persistence, say)."""
    (job,) = services.ingest_jobs_create(
        project=project, files=[incoming_path(sample_file())], user=None, enqueue=False
    )
    IngestJob.objects.filter(pk=job.pk).update(created_at=LONG_AGO)
    return job


def test_a_lost_ingest_job_is_reenqueued_and_imported(project, celery_worker):
    job = lost_ingest_job(project)
    assert services.ingest_jobs_reap(stale_after=600) == {"requeued": 1, "failed": 0}
    done = wait_for(
        lambda: IngestJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEEDED).first(), timeout=60
    )
    assert len(done.trace_ids) == 1 and Trace.objects.filter(project=project).count() == 1
    assert services.ingest_jobs_reap(stale_after=600) == {"requeued": 0, "failed": 0}  # finished: left alone


def test_a_job_that_kept_losing_its_worker_fails_with_a_reason(project):
    job = lost_ingest_job(project)
    IngestJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, attempts=services.MAX_INGEST_ATTEMPTS, heartbeat_at=LONG_AGO
    )
    assert services.ingest_jobs_reap(stale_after=600) == {"requeued": 0, "failed": 1}
    job.refresh_from_db()
    assert (
        job.status == JobStatus.FAILED
        and "gave up after 3 attempts" in job.error
        and job.filename in job.error
    )


def test_a_job_with_a_recent_heartbeat_is_left_alone(project):
    job = lost_ingest_job(project)
    IngestJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    assert services.ingest_jobs_reap(stale_after=600) == {"requeued": 0, "failed": 0}


def test_a_running_job_whose_heartbeat_went_quiet_is_queued_again_keeping_its_attempts(project, monkeypatch):
    from tracing.tasks import ingest_file_task

    sent: list[int] = []  # kept from a live worker: it would import the job while this test reads its state
    monkeypatch.setattr(ingest_file_task, "delay", sent.append)
    job = lost_ingest_job(project)
    quiet = timezone.now() - timedelta(seconds=60)
    IngestJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=1, heartbeat_at=quiet)
    assert services.ingest_jobs_reap(stale_after=600, running_after=120) == {"requeued": 0, "failed": 0}
    assert services.ingest_jobs_reap(stale_after=600, running_after=45) == {"requeued": 1, "failed": 0}
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempts == 1 and job.heartbeat_at > quiet
    assert job.retrying_attempt == 2 and sent == [job.pk]
    # Queued again, it waits the long threshold: its message may be behind others.
    IngestJob.objects.filter(pk=job.pk).update(heartbeat_at=quiet)
    assert services.ingest_jobs_reap(stale_after=600, running_after=45) == {"requeued": 0, "failed": 0}


def test_the_import_page_says_the_worker_stopped_and_which_attempt_comes(project, owner_client):
    job = lost_ingest_job(project)
    url = reverse("tracing:upload_batch", args=[project.slug, job.batch])
    assert "the worker stopped" not in owner_client.get(url).content.decode()
    IngestJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, attempts=1)
    assert "the worker stopped; retrying (attempt 2 of 3)" in owner_client.get(url).content.decode()


def test_the_import_page_says_when_no_worker_has_started_a_job_for_longer_than_one_takes(
    project, owner_client, settings
):
    settings.CULPRIT_WORKER_STALLED_AFTER = 60
    job = lost_ingest_job(project)
    url = reverse("tracing:upload_batch", args=[project.slug, job.batch])
    IngestJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, attempts=0, created_at=timezone.now())
    assert "no worker has started it" not in owner_client.get(url).content.decode()
    IngestJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    page = owner_client.get(url).content.decode()
    assert "queued for 5 min and no worker has started it" in page and "Celery worker is running" in page
    IngestJob.objects.filter(pk=job.pk).update(attempts=1)  # a worker took it once: the retry message instead
    page = owner_client.get(url).content.decode()
    assert "no worker has started it" not in page and "retrying (attempt 2 of 3)" in page


def test_a_job_running_on_a_live_worker_is_never_claimed_twice(project):
    job = lost_ingest_job(project)
    IngestJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, attempts=1, heartbeat_at=timezone.now()
    )
    with pytest.raises(JobBusy) as busy:
        services.ingest_job_run(job_id=job.pk)
    assert 5 <= busy.value.retry_in <= 60
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.attempts == 1 and not job.trace_ids
    # Once its heartbeat is stale the worker is gone: the next delivery claims it and finishes it.
    IngestJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    done = services.ingest_job_run(job_id=job.pk)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2 and len(done.trace_ids) == 1


def test_a_stale_job_out_of_attempts_fails_when_its_message_comes_back(project):
    job = lost_ingest_job(project)
    IngestJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, attempts=services.MAX_INGEST_ATTEMPTS, heartbeat_at=LONG_AGO
    )
    done = services.ingest_job_run(job_id=job.pk)
    assert done.status == JobStatus.FAILED and "gave up after 3 interrupted attempts" in done.error


def test_the_heartbeat_thread_moves_a_running_job_and_stops(project):
    job = lost_ingest_job(project)
    IngestJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, heartbeat_at=LONG_AGO)
    running = IngestJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING)
    with heartbeat(running, every=0.1):
        wait_for(lambda: IngestJob.objects.filter(pk=job.pk, heartbeat_at__gt=LONG_AGO).exists(), timeout=30)
    IngestJob.objects.filter(pk=job.pk).update(heartbeat_at=LONG_AGO)
    assert not any(t.name == "culprit-heartbeat" for t in threading.enumerate())
    assert IngestJob.objects.get(pk=job.pk).heartbeat_at == LONG_AGO


@override_settings(CULPRIT_JOB_HEARTBEAT_EVERY=1)
def test_a_heartbeat_error_never_stops_the_import(project, caplog):
    job = lost_ingest_job(project)
    broken = IngestJob.objects.extra(where=["no_such_column = 1"])  # every beat fails in the database
    with heartbeat(broken, every=0.1):
        wait_for(lambda: "heartbeat of IngestJob not moved" in caplog.text, timeout=30)
    assert services.ingest_job_run(job_id=job.pk).status == JobStatus.SUCCEEDED


def test_a_lost_run_and_a_lost_campaign_are_restarted(project, celery_worker):
    trace_ids = []
    for subset in ("Hand-Crafted", "Algorithm-Generated"):
        (job,) = services.ingest_jobs_create(
            project=project, files=[incoming_path(sample_file(subset))], user=None, enqueue=False
        )
        trace_ids += services.ingest_job_run(job_id=job.pk).trace_ids
    run = attribution_services.run_create(
        project=project, method="heuristic", trace_ids=trace_ids, enqueue=False
    )
    attribution_services.sandbox_clean_runs_generate(project=project, runs=1, seed=5)
    clean = Trace.objects.get(project=project, name="sandbox/task-5")
    campaign = attribution_services.campaign_create(
        project=project, trace_ids=[clean.pk], faults_per_trace=2, enqueue=False
    )
    AttributionRun.objects.filter(pk=run.pk).update(created_at=LONG_AGO)
    InjectionCampaign.objects.filter(pk=campaign.pk).update(created_at=LONG_AGO)

    assert attribution_services.jobs_reap(stale_after=600) == {"requeued": 2, "failed": 0}
    wait_for(
        lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).exists(), timeout=60
    )
    wait_for(
        lambda: InjectionCampaign.objects.filter(pk=campaign.pk, status=CampaignStatus.SUCCEEDED).exists(),
        timeout=60,
    )
    assert Verdict.objects.filter(run=run).count() == len(trace_ids)
    assert AttributionRun.objects.get(pk=run.pk).attempts == 1  # re-sent while queued: its first start


def test_a_run_restarted_too_often_fails_with_a_reason(project):
    run = AttributionRun.objects.create(
        project=project,
        method="heuristic",
        trace_ids=[1],
        total=1,
        status=RunStatus.RUNNING,
        heartbeat_at=LONG_AGO,
        attempts=AttributionRun.MAX_ATTEMPTS,
    )
    assert attribution_services.jobs_reap(stale_after=600) == {"requeued": 0, "failed": 1}
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "gave up after 3 attempts" in run.error


def test_celery_beat_runs_the_reaper_on_its_own(project, celery_worker, tmp_path):
    job = lost_ingest_job(project)
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--loglevel=INFO",
            f"--schedule={tmp_path / 'beat-schedule'}",
        ],
        cwd=ROOT,
        env=process_env(CULPRIT_REAP_EVERY="1", CULPRIT_REAP_INGEST_AFTER="60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        done = wait_for(
            lambda: IngestJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEEDED).first(), timeout=60
        )
    finally:
        beat.terminate()
        beat.wait(timeout=15)
    assert done.attempts == 1


def test_a_lost_export_is_rebuilt_and_an_export_out_of_attempts_fails(project, celery_worker):
    from annotations import services as annotation_services
    from annotations.models import DatasetExport, ExportStatus
    from annotations.selectors import ExportFilters

    import_now_files = [incoming_path(sample_file("Hand-Crafted"))]
    services.ingest_job_run(
        job_id=services.ingest_jobs_create(project=project, files=import_now_files, user=None, enqueue=False)[
            0
        ].pk
    )
    lost = annotation_services.export_create(
        project=project, fmt="csv", filters=ExportFilters(), user=None, enqueue=False
    )
    hopeless = annotation_services.export_create(
        project=project, fmt="csv", filters=ExportFilters(), user=None, enqueue=False
    )
    DatasetExport.objects.filter(pk=lost.pk).update(created_at=LONG_AGO)
    DatasetExport.objects.filter(pk=hopeless.pk).update(
        status=ExportStatus.RUNNING, attempts=3, heartbeat_at=LONG_AGO
    )
    assert annotation_services.exports_reap(stale_after=600) == {"requeued": 1, "failed": 1}
    done = wait_for(
        lambda: DatasetExport.objects.filter(pk=lost.pk, status=ExportStatus.SUCCEEDED).first(), timeout=60
    )
    assert done.cases_total == 1 and done.file
    assert "gave up after 3 attempts" in DatasetExport.objects.get(pk=hopeless.pk).error


def test_a_lost_model_training_starts_over_and_finishes(project, celery_worker):
    from attribution.learning.services import attributor_create
    from attribution.models import AttributorModel

    for subset in ("Hand-Crafted", "Algorithm-Generated"):
        for path in sorted((ROOT / "tracing" / "demo_data").rglob("*.json")):
            if path.parent.name == subset:
                (job,) = services.ingest_jobs_create(
                    project=project, files=[incoming_path(path)], user=None, enqueue=False
                )
                services.ingest_job_run(job_id=job.pk)
    model = attributor_create(project=project, name="lost", folds=2, enqueue=False)
    AttributorModel.objects.filter(pk=model.pk).update(status="running", heartbeat_at=LONG_AGO)
    assert attribution_services.jobs_reap(stale_after=600) == {"requeued": 1, "failed": 0}
    done = wait_for(
        lambda: AttributorModel.objects.filter(pk=model.pk, status__in=["succeeded", "failed"]).first(),
        timeout=120,
    )
    assert done.status == "succeeded", done.error
    assert done.reaped == 1 and done.parameters["format"] == "culprit-attributor"


def test_a_training_restarted_too_often_fails_with_a_reason(project):
    from attribution.learning.services import attributor_create
    from attribution.models import AttributorModel

    model = attributor_create(project=project, name="doomed", enqueue=False)
    AttributorModel.objects.filter(pk=model.pk).update(
        status="running", heartbeat_at=LONG_AGO, reaped=attribution_services.MAX_REAPS
    )
    assert attribution_services.jobs_reap(stale_after=600) == {"requeued": 0, "failed": 1}
    model.refresh_from_db()
    assert model.status == "failed" and "gave up after" in model.error


def _running_run(project, *, quiet_for: float) -> AttributionRun:
    return AttributionRun.objects.create(
        project=project,
        method="heuristic",
        trace_ids=[1],
        total=1,
        status=RunStatus.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=quiet_for),
        attempts=1,
    )


@pytest.fixture
def runs_sent(monkeypatch) -> list[int]:
    """The runs the reaper sends again, held back from the broker: the session's worker would otherwise claim a
    requeued run (queued -> running) before the test reads its row."""
    from attribution.tasks import start_run_task

    sent: list[int] = []
    monkeypatch.setattr(start_run_task, "delay", sent.append)
    return sent


def test_a_run_waiting_behind_a_busy_worker_is_not_called_lost(project, monkeypatch, runs_sent):
    """Quiet while another run visibly progresses: it waits behind it (no spurious "retrying"); once the workers fall
    quiet too, or the longer wait runs out, it is restarted. (The rows' states are checked, not the reaper's counts:
    a worker of an earlier test may still be finishing its rows.)"""
    quiet = _running_run(project, quiet_for=120)
    busy = _running_run(project, quiet_for=0)
    attribution_services.jobs_reap(stale_after=600, running_after=45)
    quiet.refresh_from_db()
    assert quiet.status == RunStatus.RUNNING and quiet.retrying_attempt is None

    AttributionRun.objects.filter(pk=busy.pk).update(status=RunStatus.SUCCEEDED)
    # The workers fall quiet (fixed, so rows another test's worker may still be writing cannot change the answer).
    monkeypatch.setattr(reaper, "workers_busy", lambda *, within: False)
    attribution_services.jobs_reap(stale_after=600, running_after=45)
    quiet.refresh_from_db()
    assert (quiet.status, quiet.retrying_attempt) == (RunStatus.QUEUED, 2)
    assert runs_sent == [quiet.pk]


def test_a_run_quiet_far_longer_than_the_wait_is_restarted_even_while_others_work(project, runs_sent):
    _running_run(project, quiet_for=0)
    lost = _running_run(project, quiet_for=45 * 11)
    attribution_services.jobs_reap(stale_after=600, running_after=45)
    lost.refresh_from_db()
    assert lost.status == RunStatus.QUEUED and runs_sent == [lost.pk]
