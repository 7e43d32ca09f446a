"""Every management command that takes ``--json`` prints pure JSON on stdout, whatever it logs or prints on the way:
messages and log lines go to stderr. Each command runs as its own process (as a user or a script runs it), with the
log level at DEBUG so that any log line aimed at stdout would show.

The LLM commands with a model over HTTP are covered in tests/attribution/test_llm_http.py; here every command runs
offline on a small input.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, import_now, incoming_path, process_env
from tracing.models import JobStatus

DEMO = ROOT / "tracing" / "demo_data" / "Hand-Crafted"


def _run_json(*args: str) -> object:
    env = process_env(LOG_LEVEL="DEBUG", CULPRIT_LLM_CACHE_URL="off", LITELLM_LOCAL_MODEL_COST_MAP="True")
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr[-3000:]}"
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"{args[0]} --json printed more than JSON on stdout: {done.stdout[:500]!r}")


def _json_commands() -> set[str]:
    """Every command module whose source offers --json (so a new one cannot be forgotten here)."""
    found = set()
    for app in ("tracing", "attribution", "annotations"):
        for path in (ROOT / app / "management" / "commands").glob("*.py"):
            if not path.name.startswith("_") and '"--json"' in path.read_text():
                found.add(path.stem)
    return found


@pytest.mark.django_db(transaction=True)
def test_every_command_with_json_prints_pure_json_on_stdout(project, tmp_path: Path):
    from attribution.services import sandbox_clean_runs_generate

    files = sorted(DEMO.glob("*.json"))[:4]
    # Four labelled runs: cross-validation, like training, needs at least four.
    algo = sorted((DEMO.parent / "Algorithm-Generated").glob("*.json"))[0]
    for path, name in [
        *((p, f"Hand-Crafted/{p.name}") for p in files[:3]),
        (algo, f"Algorithm-Generated/{algo.name}"),
    ]:
        (job,) = import_now(project, incoming_path(path, name))
        assert job.status == JobStatus.SUCCEEDED, job.error
    sandbox_clean_runs_generate(project=project, runs=1, seed=3)
    trace_id = project.traces.filter(gold_labels__isnull=False).values_list("pk", flat=True).first()
    out = tmp_path / "export.jsonl"

    ran: dict[str, object] = {
        # a project that does not exist yet: "Created project" must not reach stdout
        "import_traces": _run_json("import_traces", str(files[3]), "--project", "json-output-new", "--json"),
        "attribute": _run_json("attribute", "--trace", str(trace_id), "--method", "heuristic", "--json"),
        "evaluate": _run_json("evaluate", "--project", project.name, "--method", "heuristic", "--json"),
        "evaluate --cv": _run_json(
            "evaluate", "--project", project.name, "--method", "heuristic", "--cv", "2", "--json"
        ),
        "distill_schemas": _run_json("distill_schemas", "--project", project.name, "--offline", "--json"),
        "inject_faults": _run_json(
            "inject_faults", "--project", project.name, "--faults-per-trace", "1", "--json"
        ),
        "train_attributor": _run_json(
            "train_attributor", "--project", project.name, "--name", "json-check", "--folds", "2", "--json"
        ),
        "export_dataset": _run_json(
            "export_dataset",
            "--project",
            project.name,
            "--format",
            "whowhen-jsonl",
            "--out",
            str(out),
            "--json",
        ),
        "create_queue": _run_json(
            "create_queue",
            "--project",
            project.name,
            "--name",
            "json-check",
            "--source",
            "disagree",
            "--json",
        ),
        "sandbox_benchmark": _run_json("sandbox_benchmark", "--runs", "2", "--json"),
        "schema_benchmark": _run_json("schema_benchmark", "--schemas", "40", "--queries", "5", "--json"),
    }
    assert {name.split()[0] for name in ran} == _json_commands()
    imported = ran["import_traces"]
    assert isinstance(imported, list) and imported[0]["status"] == "imported"
    assert isinstance(ran["inject_faults"], dict) and ran["inject_faults"]["planned"] >= 1
    assert isinstance(ran["export_dataset"], dict) and out.exists()
    assert ran["create_queue"]["created"] and ran["create_queue"]["name"] == "json-check"


def test_whatever_prints_inside_a_json_command_goes_to_stderr(capsys):
    from django.core.management import call_command
    from django.core.management.base import BaseCommand

    from tracing.management.commands._pure_json import PureJsonMixin

    class Noisy(PureJsonMixin, BaseCommand):
        def add_arguments(self, parser):
            parser.add_argument("--json", action="store_true")

        def handle(self, *args, **options):
            print("a library chatting on stdout")
            self.stdout.write(json.dumps({"ok": True}))

    call_command(Noisy(), "--json")
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ok": True} and "chatting" in err
    call_command(Noisy())  # without --json nothing is moved
    assert "chatting" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_a_command_that_fails_with_json_still_prints_json_and_exits_non_zero():
    env = process_env(CULPRIT_LLM_CACHE_URL="off", LITELLM_LOCAL_MODEL_COST_MAP="True")
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "train_attributor",
            "--project",
            "no such project",
            "--name",
            "m",
            "--json",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "no project called" in done.stderr
    assert json.loads(done.stdout) == {"error": "no project called 'no such project'"}
