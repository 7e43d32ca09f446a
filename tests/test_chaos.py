"""Chaos with real processes: a worker killed with SIGKILL in the middle of an import, the broker's Redis restarted in
the middle of a campaign, and PostgreSQL restarted in the middle of a campaign. Each job finishes exactly once: no
missing rows and no duplicate rows.

The Redis and PostgreSQL tests start servers of their own (a Redis with an append-only file, as the team deployment
runs it, and a private PostgreSQL cluster) so restarting them disturbs nothing else on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from attribution import services as attribution_services
from attribution.models import CampaignStatus, Injection, InjectionCampaign, ReplayRecord
from tests.attribution.test_campaigns import real_trace, use_hook
from tests.conftest import ROOT, WorkerProcess, incoming_bytes, process_env, wait_for
from tracing import services
from tracing.models import IngestJob, JobStatus, Provenance, Step, Trace

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


# --- a worker killed in the middle of an import ----------------------------------------------------------------------


def whowhen_jsonl(traces: int, steps: int) -> bytes:
    lines = []
    for t in range(traces):
        history = [
            {
                "role": "assistant" if i else "user",
                "name": ["Planner", "Coder", "Checker"][i % 3],
                "content": f"trace {t} step {i}: " + "x" * 200,
            }
            for i in range(steps)
        ]
        lines.append(
            json.dumps(
                {
                    "question": f"task {t}",
                    "ground_truth": str(t),
                    "history": history,
                    "mistake_agent": "Coder",
                    "mistake_step": "4",
                    "mistake_reason": "wrong",
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


# The killed imports: big enough (about 12 batches of ingest.BATCH_STEPS, 14 MB) that the kill lands mid-import
# however fast the import gets -- at 120 traces, once the import read ahead in a forked process, the job could finish
# between its first committed batch and the kill.
TRACES, STEPS = 500, 120


def test_a_worker_killed_mid_import_leaves_every_trace_exactly_once(project, celery_worker):
    data = whowhen_jsonl(traces=TRACES, steps=STEPS)
    (job,) = services.ingest_jobs_create(
        project=project, files=[incoming_bytes("runs.jsonl", data)], user=None
    )
    wait_for(lambda: IngestJob.objects.filter(pk=job.pk, steps_done__gt=0).exists(), timeout=60)
    celery_worker.kill()
    assert IngestJob.objects.get(pk=job.pk).status == JobStatus.RUNNING, "the import finished before the kill"
    celery_worker.start()
    done = wait_for(
        lambda: IngestJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEEDED).first(),
        timeout=120,
        worker=celery_worker,
    )

    traces = Trace.objects.filter(project=project)
    assert traces.count() == TRACES == len(set(done.trace_ids))
    assert sorted(traces.values_list("ordinal", flat=True)) == list(range(TRACES))
    assert Step.objects.filter(trace__project=project).count() == TRACES * STEPS
    assert done.steps_done == TRACES * STEPS and done.attempts == 2


def test_a_worker_killed_mid_import_is_recovered_by_the_reaper_within_90_seconds(
    project, owner_client, _worker_process, tmp_path
):
    """The broker would give the message back only after an hour (its visibility timeout): the heartbeat going quiet
    and the reaper, called every few seconds as beat does, bring the import back within a minute or so."""
    from django.urls import reverse

    from tracing.tasks import reap_jobs_task

    _worker_process.stop()  # this test's worker, with the production visibility timeout, is the only one
    worker = WorkerProcess(tmp_path / "worker.log", name="reaped")
    worker.VISIBILITY_TIMEOUT = (
        "3600"  # the production default: the broker alone gives the message back in an hour
    )
    worker.start()
    try:
        data = whowhen_jsonl(traces=TRACES, steps=STEPS)
        (job,) = services.ingest_jobs_create(
            project=project, files=[incoming_bytes("runs.jsonl", data)], user=None
        )
        wait_for(lambda: IngestJob.objects.filter(pk=job.pk, steps_done__gt=0).exists(), timeout=60)
        worker.kill()
        killed_at = time.monotonic()
        assert IngestJob.objects.get(pk=job.pk).status == JobStatus.RUNNING, (
            "the import finished before the kill"
        )

        def reaped() -> bool:
            reap_jobs_task()  # what beat sends every CULPRIT_REAP_EVERY seconds
            if IngestJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).exists():
                return True
            time.sleep(3)
            return False

        wait_for(reaped, timeout=80)
        page = owner_client.get(
            reverse("tracing:upload_batch", args=[project.slug, job.batch])
        ).content.decode()
        assert "the worker stopped; retrying (attempt 2 of 3)" in page
        worker.start()
        done = wait_for(
            lambda: IngestJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEEDED).first(),
            timeout=max(1.0, 90 - (time.monotonic() - killed_at)),
            worker=worker,
        )
    finally:
        worker.stop()
    print(f"kill -9 to finished import: {time.monotonic() - killed_at:.1f} s")
    assert Trace.objects.filter(project=project).count() == TRACES == len(set(done.trace_ids))
    assert Step.objects.filter(trace__project=project).count() == TRACES * STEPS
    assert done.steps_done == TRACES * STEPS and done.attempts == 2


# --- the broker's Redis restarted in the middle of a campaign ---------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path) -> Iterator[dict]:
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    command = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(folder),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
    ]
    state = {"port": port, "url": f"redis://127.0.0.1:{port}/0", "proc": None}

    def start() -> None:
        state["proc"] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def restart() -> None:
        state["proc"].send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
        state["proc"].wait(timeout=10)
        time.sleep(1)
        start()

    state["restart"] = restart
    start()
    yield state
    state["proc"].kill()
    state["proc"].wait(timeout=10)


def test_the_broker_restarted_mid_campaign_resumes_the_work(project, private_redis, slow_system, tmp_path):
    queue = f"chaos-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(tmp_path / "worker.log", name="chaos")
    worker.env = {"CELERY_BROKER_URL": private_redis["url"], "CELERY_TASK_DEFAULT_QUEUE": queue}
    traces = [real_trace(project, f"crew/run-{i}") for i in range(5)]
    use_hook(project, slow_system)
    campaign = attribution_services.campaign_create(
        project=project, trace_ids=[t.pk for t in traces], faults_per_trace=4, enqueue=False
    )
    worker.start()
    try:
        from celery import current_app

        from attribution.tasks import start_campaign_task

        with current_app.connection_for_write(private_redis["url"]) as connection:
            start_campaign_task.apply_async((campaign.pk,), connection=connection, queue=queue)
        wait_for(lambda: ReplayRecord.objects.filter(campaign=campaign).count() >= 3, timeout=60)
        private_redis["restart"]()
        assert ReplayRecord.objects.filter(campaign=campaign).count() < 20, "finished before the restart"
        done = wait_for(
            lambda: (
                InjectionCampaign.objects.filter(pk=campaign.pk)
                .exclude(status__in=[CampaignStatus.QUEUED, CampaignStatus.RUNNING])
                .first()
            ),
            timeout=120,
            worker=worker,
        )
    finally:
        worker.stop()
    assert done.status == CampaignStatus.SUCCEEDED and done.done == done.total == 20
    assert ReplayRecord.objects.filter(campaign=campaign).count() == 20
    kept = Injection.objects.filter(campaign=campaign, status="kept").count()
    assert Trace.objects.filter(project=project, provenance=Provenance.INJECTED).count() == kept == done.kept


# --- PostgreSQL restarted in the middle of a campaign -----------------------------------------------------------------

POSTGRES_BIN = ([*sorted(Path("/usr/lib/postgresql").glob("*/bin"))] or [Path("/nonexistent")])[-1]


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture
def private_postgres() -> Iterator[dict]:
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    folder = Path(tempfile.mkdtemp(prefix="culprit-chaos-pg-"))
    os.chmod(folder, 0o777)
    data = folder / "data"
    port = free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    subprocess.run(
        _as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"

    def ctl(*args: str) -> None:
        subprocess.run(
            _as_postgres(
                str(POSTGRES_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(folder / "log"),
                "-o",
                options,
                "-w",
                *args,
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    ctl("start")
    url = f"postgres://postgres@127.0.0.1:{port}/postgres"
    yield {"url": url, "restart": lambda: ctl("restart", "-m", "fast"), "port": port}
    ctl("stop", "-m", "immediate")
    shutil.rmtree(folder, ignore_errors=True)


SETUP = """
from attribution import services
from attribution.models import ProjectLlmSettings
from tests.attribution.test_campaigns import real_trace
from tracing import services as tracing_services
project = tracing_services.project_create(name="Chaos")
traces = [real_trace(project, f"crew/run-{i}") for i in range(5)]
ProjectLlmSettings.objects.create(project=project, replay_hook_url=HOOK, timeout_seconds=10, max_retries=1)
campaign = services.campaign_create(project=project, trace_ids=[t.pk for t in traces], faults_per_trace=4)
print(campaign.pk)
"""


def test_postgresql_restarted_mid_campaign_the_worker_reconnects_and_finishes(
    private_postgres, slow_system, tmp_path
):
    queue = f"chaos-{uuid.uuid4().hex[:8]}"
    env = process_env(DATABASE_URL=private_postgres["url"], CELERY_TASK_DEFAULT_QUEUE=queue)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    worker = WorkerProcess(tmp_path / "worker.log", name="chaos-pg")
    worker.env = {"DATABASE_URL": private_postgres["url"], "CELERY_TASK_DEFAULT_QUEUE": queue}
    worker.start()

    def row(sql: str) -> tuple:
        with psycopg.connect(private_postgres["url"], autocommit=True) as conn:
            return conn.execute(sql).fetchone()

    try:
        created = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SETUP.replace("HOOK", repr(slow_system.url))],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        campaign_id = int(created.stdout.strip().splitlines()[-1])
        wait_for(lambda: row("SELECT count(*) FROM attribution_replayrecord")[0] >= 3, timeout=60)
        private_postgres["restart"]()
        assert row("SELECT count(*) FROM attribution_replayrecord")[0] < 20, "finished before the restart"
        wait_for(
            lambda: (
                row(f"SELECT status FROM attribution_injectioncampaign WHERE id = {campaign_id}")[0]
                not in ("queued", "running")
            ),
            timeout=180,
            worker=worker,
        )
    finally:
        worker.stop()
    status, done, total, kept = row(
        f"SELECT status, done, total, kept FROM attribution_injectioncampaign WHERE id = {campaign_id}"
    )
    assert (status, done, total) == ("succeeded", 20, 20), worker.log.read_text()[-3000:]
    assert row("SELECT count(*) FROM attribution_replayrecord")[0] == 20
    assert row("SELECT count(*) FROM tracing_trace WHERE provenance = 'injected'")[0] == kept
    assert row("SELECT count(*) FROM attribution_injection WHERE status = 'pending'")[0] == 0
