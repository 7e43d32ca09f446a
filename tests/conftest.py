from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from tracing import services
from tracing.models import IngestJob, JobStatus, Project, Role, Trace

# Hashing with the production hasher costs ~0.4 s per user; tests create many users and prove nothing by it.
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
WHO_AND_WHEN = SHARED / "who_and_when"
DEMO_DATA = ROOT / "tracing" / "demo_data"


def whowhen_files() -> list[Path]:
    """Every Who&When file we have: the shared collection when it is beside the project, else the demo copies."""
    files = sorted(WHO_AND_WHEN.rglob("*.json")) if WHO_AND_WHEN.exists() else []
    return files or sorted(DEMO_DATA.rglob("*.json"))


def sample_file(subset: str = "Hand-Crafted") -> Path:
    return next(p for p in sorted(DEMO_DATA.rglob("*.json")) if p.parent.name == subset)


@pytest.fixture
def make_user(db: Any):
    counter = iter(range(10_000))

    def make(username: str | None = None, **extra: Any):
        name = username or f"user{next(counter)}"
        return get_user_model().objects.create_user(username=name, password="pw-for-tests-1", **extra)

    return make


@pytest.fixture
def make_project(db: Any):
    def make(name: str, members: dict[Any, str] | None = None) -> Project:
        project = services.project_create(name=name)
        for user, role in (members or {}).items():
            services.membership_set(project=project, user=user, role=role)
        return project

    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def project(make_project, owner) -> Project:
    return make_project("Alpha", {owner: Role.OWNER})


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def incoming_bytes(name: str, data: bytes) -> services.IncomingFile:
    import io

    return services.IncomingFile(name=name, size=len(data), open=lambda: io.BytesIO(data))


def incoming_path(path: Path, name: str | None = None) -> services.IncomingFile:
    return services.IncomingFile(
        name=name or path.name, size=path.stat().st_size, open=lambda: path.open("rb")
    )


def import_now(project: Project, *files: services.IncomingFile) -> list[IngestJob]:
    """Create jobs and run them in this process, as the CLI does."""
    jobs = services.ingest_jobs_create(project=project, files=files, user=None, enqueue=False)
    return [services.ingest_job_run(job_id=j.pk) if j.status == JobStatus.QUEUED else j for j in jobs]


@pytest.fixture
def imported_trace(project) -> Trace:
    path = sample_file("Hand-Crafted")
    (job,) = import_now(project, incoming_path(path, f"Hand-Crafted/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return Trace.objects.get(pk=job.trace_ids[0])


# --- real processes ------------------------------------------------------------------------------------------------


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without the servers' addresses (so settings fall back to SQLite and the
    filesystem broker) and with its var/ folder in ``tmp_path``: what ``make run`` sees on a new machine."""
    servers = (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "REDIS_URL",
        "MEDIA_ROOT",
        "CELERY_TASK_DEFAULT_QUEUE",
        "CULPRIT_LLM_CACHE_URL",
    )
    env = {k: v for k, v in os.environ.items() if k not in servers}
    env["CULPRIT_VAR_DIR"] = str(tmp_path / "var")
    return env


def process_env(**overrides: str) -> dict[str, str]:
    env = os.environ.copy()
    env["DATABASE_URL"] = test_database_url()
    env.update(overrides)
    return env


class WorkerProcess:
    """A real Celery worker process on the real Redis broker, working on the test database.

    Crash tests kill it with SIGKILL and start it again; later tests get a live one either way. The visibility
    timeout is short so a task the killed worker held comes back within seconds instead of an hour.
    """

    VISIBILITY_TIMEOUT = "8"

    def __init__(self, log: Path, name: str = "") -> None:
        self.log = log
        self.name = name  # a node name of its own, for a second worker beside the first
        self.env: dict[str, str] = {}  # overrides: another broker, database or queue (chaos tests)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--pool=solo",
                    "--loglevel=INFO",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    *([f"--hostname={self.name}@%h"] if self.name else []),
                ],
                cwd=ROOT,
                env=process_env(
                    CELERY_VISIBILITY_TIMEOUT=self.VISIBILITY_TIMEOUT,
                    CELERY_UNACKED_RESTORE_INTERVAL="2",
                    CELERY_UNACKED_RESTORE_THROTTLE="1",
                    # A worker killed during a restore sweep holds its lock until this expires.
                    CELERY_UNACKED_MUTEX_EXPIRE="5",
                    **self.env,
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while b"ready." not in self.log.read_bytes()[offset:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"the Celery worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="session")
def _worker_process(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log")
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker(_worker_process: WorkerProcess) -> WorkerProcess:
    _worker_process.ensure_running()
    return _worker_process


def wait_for(
    probe, timeout: float = 60, worker: WorkerProcess | None = None, reap_after: float | None = None
):
    """Poll ``probe`` until it returns something truthy (work done by another process), or fail (with the end of
    ``worker``'s log, which says why a job stalled). From ``reap_after`` seconds on, play Celery beat: the
    attribution reaper runs every 2 s (with a 5 s quiet period instead of production's 45), restarting a run or
    campaign whose task the broker lost -- Redis loses a task handed to a worker killed before it recorded it."""
    deadline = time.monotonic() + timeout
    reap_at = None if reap_after is None else time.monotonic() + reap_after
    while time.monotonic() < deadline:
        if result := probe():
            return result
        if reap_at is not None and time.monotonic() >= reap_at:
            from attribution.services import jobs_reap

            jobs_reap(stale_after=3600, running_after=5)
            reap_at = time.monotonic() + 2
        time.sleep(0.2)
    raise AssertionError(
        f"nothing after {timeout}s"
        + (f"; the broker holds {broker_state()}; the worker's log ends:\n{worker.tail()}" if worker else "")
    )


def broker_state() -> str:
    """What Redis holds for this session's queue: why a task the worker should have had never reached it."""
    import redis

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        now = time.time()
        ages = [round(now - score, 1) for _, score in client.zrange("unacked_index", 0, -1, withscores=True)]
        return (
            f"{client.llen(queue)} queued, {len(ages)} unacknowledged (ages {ages[:10]} s), "
            f"bindings {sorted(client.smembers('_kombu.binding.' + queue))}, "
            f"restore lock ttl {client.ttl('unacked_mutex')} s"
        )
    except redis.RedisError as exc:
        return f"(Redis did not answer: {exc})"


def wait_for_jobs(jobs: list[IngestJob], timeout: float = 60) -> list[IngestJob]:
    ids = [j.pk for j in jobs]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = list(IngestJob.objects.filter(pk__in=ids).order_by("pk"))
        if all(j.is_finished for j in fresh):
            return fresh
        time.sleep(0.2)
    raise AssertionError(f"jobs still pending after {timeout}s: {[(j.filename, j.status) for j in fresh]}")


@pytest.fixture
def slow_system():
    """A team's multi-agent system behind a replay hook on 127.0.0.1 whose replays take a moment, so a worker, a
    broker or a database can be stopped in the middle of a campaign (tests/attribution/test_campaign_worker.py)."""
    from tests.attribution.test_campaign_worker import SlowSystem
    from tests.attribution.test_http_hook import serving

    with serving(SlowSystem()) as state:
        yield state
