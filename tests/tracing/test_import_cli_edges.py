"""import_traces at its edges: a bad file fails alone by name, unusable paths fail before anything is created, and
Ctrl-C leaves no job for a worker to finish later."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import ROOT, process_env, sample_file
from tracing import services
from tracing.models import IngestJob, JobStatus, Project, Trace

GOOD = sample_file("Hand-Crafted")
OTHER = sample_file("Algorithm-Generated")


def _call(*args: str) -> tuple[list | dict, CommandError | None]:
    """Run the command with --json: (its parsed stdout, the CommandError it ended with or None)."""
    out = io.StringIO()
    error = None
    try:
        call_command("import_traces", *args, "--json", stdout=out)
    except CommandError as exc:
        error = exc
    return json.loads(out.getvalue()), error


# --- defect 4: one bad file fails alone --------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unreadable_file_fails_alone_and_its_sibling_imports(tmp_path, monkeypatch):
    shutil.copy(GOOD, tmp_path / "good.json")
    locked = tmp_path / "locked.json"
    locked.write_text(OTHER.read_text())
    real_open = Path.open

    def guarded_open(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded_open)
    results, error = _call(str(tmp_path), "--project", "P")
    assert error is not None and error.returncode == 1 and "1 of 2 file(s) failed" in str(error)
    by_path = {r["path"]: r for r in results}
    assert by_path[str(tmp_path / "good.json")]["status"] == "imported"
    assert by_path[str(locked)]["status"] == "failed"
    assert by_path[str(locked)]["error"] == f"{locked}: cannot read it: permission denied"
    jobs = {job.filename: job for job in IngestJob.objects.all()}
    assert jobs[str(tmp_path / "good.json")].status == JobStatus.SUCCEEDED
    assert jobs[str(locked)].status == JobStatus.FAILED
    assert not IngestJob.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists()


@pytest.mark.django_db
def test_a_file_whose_name_is_not_utf8_is_imported_under_a_replaced_name(tmp_path):
    shutil.copy(GOOD, tmp_path / "good.json")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff\xfe.json"), "wb") as fh:
        fh.write(OTHER.read_bytes())
    results, error = _call(str(tmp_path), "--project", "P")
    assert error is None
    shown = f"{tmp_path}/bad\ufffd\ufffd.json"
    by_path = {r["path"]: r for r in results}
    assert set(by_path) == {shown, str(tmp_path / "good.json")}
    assert {r["status"] for r in results} == {"imported"}
    assert by_path[shown]["warnings"][0] == f"its name is not valid UTF-8; it was imported as {shown!r}"
    assert IngestJob.objects.get(filename=shown).status == JobStatus.SUCCEEDED
    assert Trace.objects.count() == 2


@pytest.mark.django_db
def test_a_file_named_explicitly_with_a_name_that_is_not_utf8_prints_as_text(tmp_path):
    bad = os.path.join(os.fsencode(tmp_path), b"bad\xff.json")
    with open(bad, "wb") as fh:
        fh.write(GOOD.read_bytes())
    out = io.StringIO()
    call_command("import_traces", os.fsdecode(bad), "--project", "P", stdout=out)
    assert f"imported   {tmp_path}/bad\ufffd.json" in out.getvalue()
    assert "not valid UTF-8" in out.getvalue()


# --- defect 5: special files and empty folders -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null"])
def test_a_path_that_is_not_a_regular_file_fails_by_name_without_being_read(tmp_path, special):
    if special == "fifo":
        special = str(tmp_path / "pipe.json")
        os.mkfifo(special)  # opening it would block: the test hangs if the command ever reads it
    results, error = _call(special, str(GOOD), "--project", "P")
    assert error is not None and error.returncode == 1
    assert [r["status"] for r in results] == ["failed", "imported"]
    assert results[0]["path"] == special
    assert results[0]["error"].startswith(f"{special}: not a regular file")
    assert IngestJob.objects.count() == 1


@pytest.mark.django_db
def test_a_fifo_or_socket_inside_a_folder_fails_by_name_and_the_rest_imports(tmp_path):
    folder = tmp_path / "logs"
    (folder / "deeper").mkdir(parents=True)
    shutil.copy(GOOD, folder / "good.json")
    fifo = folder / "deeper" / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it would block: the test hangs if the command ever reads it
    sock = socket.socket(socket.AF_UNIX)
    sock_path = folder / "live.log"
    try:
        sock.bind(str(sock_path))
        results, error = _call(str(folder), "--project", "P")
    finally:
        sock.close()
    assert error is not None and error.returncode == 1 and "2 of 3 file(s) failed" in str(error)
    by_path = {r["path"]: r for r in results}
    assert by_path[str(folder / "good.json")]["status"] == "imported"
    assert by_path[str(fifo)]["status"] == "failed"
    assert by_path[str(fifo)]["error"] == f"{fifo}: not a regular file (a FIFO); it was not read"
    assert by_path[str(sock_path)]["error"] == f"{sock_path}: not a regular file (a socket); it was not read"
    assert [job.filename for job in IngestJob.objects.all()] == [str(folder / "good.json")]


@pytest.mark.django_db
def test_a_folder_holding_only_a_fifo_fails_it_by_name_and_creates_no_project(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 file"):
        call_command("import_traces", str(tmp_path), "--project", "P", stdout=out, stderr=out)
    assert f"failed     {fifo}: not a regular file (a FIFO)" in out.getvalue()
    assert "0 imported, 0 duplicate, 1 failed" in out.getvalue()
    assert not Project.objects.exists() and not IngestJob.objects.exists()


@pytest.mark.django_db
def test_a_folder_with_no_trace_files_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no traces here")
    (empty / ".hidden.json").write_bytes(GOOD.read_bytes())
    results, error = _call(str(empty), "--project", "P")
    assert error is not None and error.returncode == 1
    assert [r["status"] for r in results] == ["failed"]
    assert results[0]["error"].startswith(f"{empty}: no trace files in this folder")
    assert not Project.objects.exists()  # nothing to import: no project made for it


@pytest.mark.django_db(transaction=True)
def test_a_fifo_and_an_empty_folder_exit_non_zero_with_one_line_each_and_no_traceback(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "manage.py", "import_traces", str(fifo), str(empty), "--project", "CLI"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"{fifo}: not a regular file" in result.stderr
    assert f"{empty}: no trace files in this folder" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not Project.objects.filter(name="CLI").exists()


# --- defect 10: project names and paths checked first ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_project_name_is_refused(name):
    result, error = _call(str(GOOD), "--project", name)
    assert error is not None and "blank" in str(error)
    assert result == {"error": str(error)}
    assert not Project.objects.exists() and not IngestJob.objects.exists()


@pytest.mark.django_db
def test_no_project_is_created_when_no_path_exists(tmp_path):
    missing = tmp_path / "missing.json"
    results, error = _call(str(missing), "--project", "Ghost")
    assert error is not None and error.returncode == 1
    assert results[0]["error"] == f"{missing}: no such file or directory"
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_the_project_is_created_when_one_path_exists(tmp_path):
    results, error = _call(str(tmp_path / "missing.json"), str(GOOD), "--project", "Real")
    assert error is not None and "1 of 2" in str(error)
    assert [r["status"] for r in results] == ["failed", "imported"]
    assert Project.objects.get().name == "Real"


# --- defect 3: Ctrl-C --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ctrl_c_fails_the_unfinished_jobs_of_this_run_and_exits_130(tmp_path, monkeypatch):
    for i, source in enumerate([GOOD, OTHER, sample_file("Hand-Crafted")]):
        (tmp_path / f"{i}.json").write_text(json.dumps(json.loads(source.read_text()), indent=i + 1))
    # Another run's queued job in the same project: not this command's to fail.
    project, _ = services.project_get_or_create(name="P")
    foreign = IngestJob.objects.create(project=project, filename="elsewhere.json", status=JobStatus.QUEUED)
    real_run = services.ingest_job_run
    calls = []

    def interrupted_run(*, job_id):
        calls.append(job_id)
        if len(calls) == 2:  # half-way through the second file
            IngestJob.objects.filter(pk=job_id).update(status=JobStatus.RUNNING)
            raise KeyboardInterrupt
        return real_run(job_id=job_id)

    monkeypatch.setattr(services, "ingest_job_run", interrupted_run)
    results, error = _call(str(tmp_path), "--project", "P")
    assert error is not None and error.returncode == 130
    assert "interrupted (Ctrl-C)" in str(error) and "\n" not in str(error)
    assert [r["status"] for r in results] == ["imported", "failed", "failed"]
    jobs = list(IngestJob.objects.exclude(pk=foreign.pk).order_by("pk"))
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.FAILED]
    for job in jobs[1:]:
        assert job.error == f"{job.filename}: interrupted (Ctrl-C) before it was imported"
        assert job.finished_at is not None
    assert IngestJob.objects.get(pk=foreign.pk).status == JobStatus.QUEUED
    assert Trace.objects.count() == 1


@pytest.mark.django_db
def test_ctrl_c_without_json_prints_one_line(tmp_path, monkeypatch):
    def interrupted_run(*, job_id):
        raise KeyboardInterrupt

    monkeypatch.setattr(services, "ingest_job_run", interrupted_run)
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("import_traces", str(GOOD), "--project", "P", stdout=out)
    assert caught.value.returncode == 130
    assert out.getvalue() == "Created project 'P'\n"
    assert IngestJob.objects.get().status == JobStatus.FAILED
