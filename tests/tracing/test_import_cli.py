from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import DEMO_DATA, ROOT, process_env, sample_file
from tracing.models import Project, Trace

GOOD = sample_file("Hand-Crafted")


def _run(*args: str) -> list[dict]:
    out = io.StringIO()
    call_command("import_traces", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_it_imports_a_folder_recursively_and_creates_the_project(tmp_path):
    shutil.copytree(DEMO_DATA, tmp_path / "runs")
    (tmp_path / "runs" / "README.md").write_text("not a trace; skipped: folders take trace extensions only")
    results = _run(str(tmp_path / "runs"), "--project", "Fresh")
    files = sorted((tmp_path / "runs").rglob("*.json"))
    assert [r["path"] for r in results] == [str(p) for p in files]
    assert {r["status"] for r in results} == {"imported"}
    project = Project.objects.get(name="Fresh")
    assert Trace.objects.filter(project=project).count() == len(files)
    for result, path in zip(results, files):
        document = json.loads(path.read_text())
        assert result["format"] == "whowhen"
        assert result["steps"] == len(document["history"])
        assert result["labels"] == 1
        assert result["gold"] == [
            {
                "trace_id": result["trace_ids"][0],
                "agent": document["mistake_agent"],
                "step": int(document["mistake_step"]),
            }
        ]
        assert result["error"] == ""
        assert set(result) == {
            "path",
            "status",
            "format",
            "confidence",
            "trace_ids",
            "steps",
            "agents",
            "labels",
            "gold",
            "warnings",
            "error",
        }


@pytest.mark.django_db
def test_a_second_run_reports_duplicates(tmp_path):
    first = _run(str(GOOD), "--project", "P")
    second = _run(str(GOOD), "--project", "P")
    assert second[0]["status"] == "duplicate"
    assert second[0]["trace_ids"] == first[0]["trace_ids"]
    assert Trace.objects.count() == 1


@pytest.mark.django_db
def test_duplicates_import_writes_a_run_already_in_the_project_again(tmp_path):
    _run(str(GOOD), "--project", "P")
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(json.loads(GOOD.read_text()), indent=3))  # other bytes, same run
    (skipped,) = _run(str(copy), "--project", "P")
    assert skipped["status"] == "duplicate" and Trace.objects.count() == 1
    again = tmp_path / "again.json"
    again.write_text(json.dumps(json.loads(GOOD.read_text()), indent=5))
    (imported,) = _run(str(again), "--project", "P", "--duplicates", "import")
    assert imported["status"] == "imported" and Trace.objects.count() == 2
    with pytest.raises(CommandError):
        call_command("import_traces", str(again), "--project", "P", "--duplicates", "maybe")


@pytest.mark.django_db
def test_it_imports_the_members_of_a_zip(tmp_path):
    archive = tmp_path / "runs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(GOOD, "a/one.json")
        zf.writestr("a/bad.json", "{")
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 file"):
        call_command("import_traces", str(archive), "--project", "Z", "--json", stdout=out)
    results = {r["path"]: r for r in json.loads(out.getvalue())}
    assert results[f"{archive}/a/one.json"]["status"] == "imported"
    assert results[f"{archive}/a/bad.json"]["status"] == "failed"
    assert results[f"{archive}/a/bad.json"]["error"].startswith(f"{archive}/a/bad.json: ")


@pytest.mark.django_db(transaction=True)
def test_a_failed_file_exits_non_zero_with_a_message_and_no_traceback(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.json"
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "import_traces",
            str(GOOD),
            str(empty),
            str(missing),
            "--project",
            "CLI",
        ],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"{empty}: the file is empty" in result.stderr
    assert f"{missing}: no such file or directory" in result.stderr
    assert "2 of 3 file(s) failed" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "imported" in result.stdout
    assert Trace.objects.filter(project__name="CLI").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_json_output_is_one_parseable_list_even_when_a_file_fails(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"unknown": true}')
    result = subprocess.run(
        [sys.executable, "manage.py", "import_traces", str(bad), str(GOOD), "--project", "J", "--json"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    results = json.loads(result.stdout)
    assert [r["status"] for r in results] == ["failed", "imported"]
    assert "JSON of an unknown shape" in results[0]["error"]
