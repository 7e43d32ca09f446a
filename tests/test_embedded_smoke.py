"""The one test of the embedded mode `make run` uses: SQLite under var/ and the filesystem broker, no servers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, embedded_env

pytestmark = pytest.mark.embedded

ENQUEUE_AND_WAIT = """
import time
from django.db import transaction
from tracing import services
from tracing.models import IngestJob, Project
project = Project.objects.get(name="Demo")
data = b'{"question": "q", "ground_truth": "4", "mistake_agent": "B", "mistake_step": "1", "mistake_reason": "r",' \\
       b' "history": [{"role": "A", "content": "2+2?"}, {"role": "B", "content": "5"}]}'
import io
incoming = services.IncomingFile(name="smoke.json", size=len(data), open=lambda: io.BytesIO(data))
with transaction.atomic():
    (job,) = services.ingest_jobs_create(project=project, files=[incoming], user=None)
for _ in range(300):
    job.refresh_from_db()
    if job.is_finished:
        break
    time.sleep(0.2)
print("JOB", job.status, job.trace_ids, job.error)

# The same worker breaks sandbox runs on purpose and writes a dataset export (the other Celery jobs of the demo).
from attribution import services as attribution_services
from attribution.models import InjectionCampaign
from annotations import services as annotation_services
from annotations.models import DatasetExport
from annotations.selectors import ExportFilters
from tracing.models import Trace
attribution_services.sandbox_clean_runs_generate(project=project, runs=2, seed=1)
with transaction.atomic():
    campaign = attribution_services.campaign_create(
        project=project, trace_ids=list(Trace.objects.filter(project=project, outcome="succeeded")
                                        .values_list("pk", flat=True)), faults_per_trace=2)
    export = annotation_services.export_create(project=project, fmt="csv", filters=ExportFilters(), user=None)
for _ in range(300):
    campaign.refresh_from_db()
    export.refresh_from_db()
    if campaign.is_finished and export.is_finished:
        break
    time.sleep(0.2)
print("CAMPAIGN", campaign.status, campaign.done, campaign.total, campaign.kept)
print("EXPORT", export.status, export.cases_total, bool(export.file), export.error)
"""


LIVE_BANNER = """
from tests.tracing.test_otlp_incremental import SpanTree, request
from tracing import selectors
from tracing.models import Project
from tracing.services.otlp import otlp_spans_store_protobuf
project = Project.objects.get(slug="demo")
tree = SpanTree(agents=1, calls=2)
otlp_spans_store_protobuf(project=project, message=request(tree.by_start()))
a = selectors.otlp_arriving(project=project)
print("LIVE", a.spans == len(tree.spans), a.traces, a.ever, 0 <= a.waited < 60, a.stalled)
"""


def test_make_run_mode_imports_through_the_filesystem_broker(tmp_path):
    env = embedded_env(tmp_path)
    manage = [sys.executable, "manage.py"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*manage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )

    assert run("migrate", "--noinput", "-v0").returncode == 0
    demo = run("bootstrap_demo")
    assert demo.returncode == 0, demo.stderr
    assert "Log in at http://127.0.0.1:8000/ as  demo / " in demo.stdout
    assert (tmp_path / "var" / "culprit.sqlite3").exists()

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = run("shell", "-c", ENQUEUE_AND_WAIT)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert "JOB succeeded" in result.stdout, result.stdout + result.stderr
    assert "CAMPAIGN succeeded 4 4" in result.stdout, result.stdout + result.stderr
    assert "EXPORT succeeded" in result.stdout and "True" in result.stdout.split("EXPORT", 1)[1], (
        result.stdout
    )
    live = run(
        "shell", "-c", LIVE_BANNER
    )  # SQLite gives received_at back as text: the banner reads it as UTC
    assert "LIVE True 1 True True False" in live.stdout, live.stdout + live.stderr
    jobs = "from tracing.models import IngestJob; print('JOBS', IngestJob.objects.count())"
    before = run("shell", "-c", jobs).stdout
    again = run("bootstrap_demo")  # idempotent, same printed password
    assert demo.stdout.splitlines()[-1] == again.stdout.splitlines()[-1]
    assert "0 new trace file(s)" in again.stdout
    assert run("shell", "-c", jobs).stdout == before  # the demo files are not uploaded again


def _make_run_commands() -> list[list[str]]:
    """The ``manage.py`` commands of the Makefile's ``run`` recipe, in order (the demo ``make run`` sets up)."""
    import shlex

    recipe, lines, inside = (ROOT / "Makefile").read_text().splitlines(), [], False
    for line in recipe:
        if line.startswith("run:"):
            inside = True
            continue
        if inside and line and not line.startswith("\t"):
            break
        if inside:
            lines.append(line.strip())
    joined = "\n".join(lines).replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.strip().lstrip("@")
        if line.startswith("$(BIN)/python manage.py "):
            args = shlex.split(
                line.split("manage.py ", 1)[1].replace("$(HOST)", "127.0.0.1").replace("$(PORT)", "8000")
            )
            commands.append(args)
    return commands


def test_make_run_s_demo_set_up_succeeds_and_is_idempotent(tmp_path):
    """Every command ``make run`` runs before starting the servers, as it runs them, twice: a new user's first
    ``make run`` and their second must both reach the server."""
    env = embedded_env(tmp_path)
    commands = _make_run_commands()
    names = [c[0] for c in commands]
    assert names[:2] == ["migrate", "bootstrap_demo"] and "train_attributor" in names
    for attempt in (1, 2):
        for args in commands:
            done = subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, f"attempt {attempt}: {' '.join(args)}\n{done.stdout}\n{done.stderr}"
            if args[0] == "train_attributor":
                assert ("Already trained" in done.stdout) == (attempt == 2), done.stdout
