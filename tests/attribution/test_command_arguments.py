"""Management commands refuse bad arguments with one clear line (a CommandError, or argparse's error: exit non-zero, no
traceback), write nothing for refused input and never run unbounded on a typo; a sound call of each still works."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotations.models import ReviewQueue
from attribution import services
from attribution.management.commands import evaluate, schema_benchmark
from attribution.models import (
    AttributionRun,
    AutoAttribute,
    ErrorSchema,
    InjectionCampaign,
    ProjectAttribution,
    ProjectLlmSettings,
)
from tests.conftest import process_env
from tracing.models import Project, Trace

ROOT = Path(__file__).resolve().parents[2]


def refused(capsys, name: str, *args: str, **options) -> str:
    """The one line ``name`` refuses the call with (from the CommandError, or argparse's message on stderr)."""
    with pytest.raises((CommandError, SystemExit)) as caught:
        call_command(name, *args, stdout=StringIO(), **options)
    message = str(caught.value) if isinstance(caught.value, CommandError) else capsys.readouterr().err.strip()
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture
def clean_runs(project) -> list[int]:
    """Two fault-free sandbox runs to inject faults into."""
    services.sandbox_clean_runs_generate(project=project, runs=2, seed=1)
    return list(Trace.objects.filter(project=project).values_list("pk", flat=True))


# --- inject_faults ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--max-replays", "-5", "between 1 and 1,000,000"),
        ("--max-replays", "0", "between 1"),
        ("--max-tokens", "-1", "between 1"),
        ("--max-tokens", "0", "between 1"),
        ("--max-tokens", "lots", "not a whole number"),
        ("--max-cost", "nan", "between $0.0001"),
        ("--max-cost", "inf", "between $0.0001"),
        ("--max-cost", "-1", "between $0.0001"),
        ("--max-cost", "0", "between $0.0001"),
        ("--max-cost", "10000000", "999,999.9999"),
        ("--faults-per-trace", "0", "between 1 and 20"),
        ("--faults-per-trace", "1000000000", "between 1 and 20"),
    ],
)
def test_inject_faults_refuses_a_budget_that_is_not_one(capsys, project, clean_runs, option, value, says):
    message = refused(capsys, "inject_faults", "--project", project.name, option, value)
    assert option in message and says in message
    assert InjectionCampaign.objects.count() == 0


@pytest.mark.django_db
def test_inject_faults_checks_keyword_options_too(capsys, project, clean_runs):
    for options in ({"max_cost": -1.0}, {"max_replays": -5}, {"max_tokens": float("nan")}):
        assert "--max-" in refused(capsys, "inject_faults", project=project.name, **options)
    assert InjectionCampaign.objects.count() == 0


@pytest.mark.django_db
def test_inject_faults_refuses_a_money_budget_for_a_model_without_a_price_as_the_form_does(
    capsys, project, clean_runs
):
    # litellm's map has no price for a made-up model (an Ollama model is in it, at $0, so it is priced).
    ProjectLlmSettings.objects.create(project=project, model="openai/made-up-model")
    message = refused(capsys, "inject_faults", "--project", project.name, "--max-cost", "0.5")
    assert message.startswith("--max-cost: No price is known for the project's model (openai/made-up-model)")
    assert "--max-tokens" in message
    assert InjectionCampaign.objects.count() == 0
    # the same rule as the campaign form: a token budget works for every model, and prices make a money cap work
    call_command(
        "inject_faults", "--project", project.name, "--max-tokens", "5000", "--json", stdout=StringIO()
    )
    ProjectLlmSettings.objects.filter(project=project).update(input_price_per_mtok=1, output_price_per_mtok=2)
    call_command("inject_faults", "--project", project.name, "--max-cost", "0.5", "--json", stdout=StringIO())
    assert InjectionCampaign.objects.count() == 2


@pytest.mark.django_db
def test_inject_faults_with_a_budget_still_runs(project, clean_runs):
    out = StringIO()
    call_command(
        "inject_faults",
        "--project",
        project.name,
        "--faults-per-trace",
        "2",
        "--max-replays",
        "2",
        "--max-cost",
        "0.5",
        "--json",
        stdout=out,
    )
    summary = json.loads(out.getvalue())
    campaign = InjectionCampaign.objects.get()
    assert summary["campaign"] == campaign.pk and summary["replays"] <= 2
    assert campaign.max_replays == 2 and float(campaign.max_cost) == 0.5


def test_a_refused_argument_is_one_line_from_the_command_line():
    """Run as a person would: argparse's usage and one error line, exit code 2, no traceback."""
    done = subprocess.run(
        [sys.executable, "manage.py", "inject_faults", "--project", "P", "--max-cost", "nan"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "argument --max-cost: must be between $0.0001" in done.stderr.splitlines()[-1]


# --- schema_benchmark -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ("--queries", "0"),
        ("--queries", "-3"),
        ("--schemas", "0"),
        ("--schemas", "-1"),
        ("--schemas", "1000000000"),
    ],
)
def test_schema_benchmark_refuses_sizes_out_of_range(capsys, args):
    before = Project.objects.count()
    message = refused(capsys, "schema_benchmark", *args)
    assert args[0] in message and "must be between 1 and" in message
    assert Project.objects.count() == before and ErrorSchema.objects.count() == 0


@pytest.mark.django_db
def test_schema_benchmark_checks_keyword_options_too(capsys):
    assert "--schemas" in refused(capsys, "schema_benchmark", schemas=10**9, queries=10)
    assert "--queries" in refused(capsys, "schema_benchmark", schemas=10, queries=0)
    assert not Project.objects.filter(name__startswith="schema-benchmark").exists()


@pytest.mark.django_db
def test_schema_benchmark_says_it_writes_and_still_runs():
    parser = schema_benchmark.Command().create_parser("manage.py", "schema_benchmark")
    assert "Writes into the configured database" in " ".join(parser.format_help().split())
    out = StringIO()
    call_command("schema_benchmark", "--schemas", "30", "--queries", "3", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["schemas"] == 30 and result["queries"] == 3
    assert Project.objects.filter(name="schema-benchmark-30").exists()


# --- sandbox_benchmark and sandbox_generate -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--runs", "0"),
        ("--runs", "-1"),
        ("--runs", "1000000000"),
        ("--runs", "3", "--seed", "-1"),
        ("--version", "2", "--runs", "1000000000"),
    ],
)
def test_sandbox_benchmark_refuses_runs_out_of_range(capsys, args):
    message = refused(capsys, "sandbox_benchmark", *args)
    assert "must be between" in message


def test_sandbox_benchmark_checks_keyword_options_too(capsys):
    assert "--runs" in refused(capsys, "sandbox_benchmark", runs=10**9)


def test_sandbox_benchmark_refuses_a_judge_model_litellm_cannot_route(capsys):
    message = refused(
        capsys, "sandbox_benchmark", "--runs", "2", "--version", "1", "--judge-model", "bogus/model"
    )
    assert message.startswith("--judge-model 'bogus/model':") and "LLM Provider NOT provided" in message


def test_sandbox_benchmark_still_runs():
    out = StringIO()
    call_command("sandbox_benchmark", "--runs", "4", "--seed", "1", "--json", stdout=out)
    assert json.loads(out.getvalue())["runs"] == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, says",
    [
        (("--runs", "-1"), "--runs"),
        (("--clean", "-2"), "--clean"),
        (("--runs", "1000000000"), "--runs"),
        (("--runs", "2", "--clean", "1000000000"), "--clean"),
        (("--runs", "2", "--seed", "-4"), "--seed"),
        (("--runs", "0"), "nothing to generate"),
    ],
)
def test_sandbox_generate_refuses_counts_out_of_range_and_creates_no_project(capsys, args, says):
    message = refused(capsys, "sandbox_generate", "--project", "Never made", *args)
    assert says in message
    assert not Project.objects.filter(name="Never made").exists() and Trace.objects.count() == 0


@pytest.mark.django_db
def test_sandbox_generate_checks_keyword_options_too(capsys):
    assert "--runs" in refused(capsys, "sandbox_generate", project="Never made", runs=-1)
    assert not Project.objects.filter(name="Never made").exists()


@pytest.mark.django_db
def test_sandbox_generate_fault_free_runs_only_still_works():
    out = StringIO()
    call_command(
        "sandbox_generate", "--project", "Clean", "--version", "1", "--runs", "0", "--clean", "2", stdout=out
    )
    assert Trace.objects.filter(project__name="Clean", outcome="succeeded").count() == 2


# --- evaluate --jobs ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("jobs", ["-1", "65", "many"])
def test_evaluate_refuses_a_number_of_jobs_out_of_range(capsys, project, jobs):
    message = refused(capsys, "evaluate", "--project", project.name, "--method", "heuristic", "--jobs", jobs)
    assert "--jobs" in message
    assert AttributionRun.objects.count() == 0


@pytest.mark.parametrize("jobs", ["0", "1", "64"])
def test_evaluate_takes_jobs_from_0_the_default_to_64(jobs):
    parser = evaluate.Command().create_parser("manage.py", "evaluate")
    assert parser.parse_args(["--project", "P", "--method", "heuristic", "--jobs", jobs]).jobs == int(jobs)


# --- auto_attribute -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("with_traces", [True, False])
@pytest.mark.parametrize(
    "method, says", [("all_at_once", "needs a model"), ("learned", "needs a trained model")]
)
def test_auto_attribute_refuses_a_method_whose_runs_could_not_start(
    capsys, project, method, says, with_traces
):
    if with_traces:
        services.sandbox_clean_runs_generate(project=project, runs=1, seed=1)
    traces = Trace.objects.count()
    message = refused(
        capsys, "auto_attribute", "--project", project.name, "--mode", "failed", "--method", method
    )
    assert says in message
    assert (
        ProjectAttribution.objects.filter(project=project).exclude(auto_attribute=AutoAttribute.OFF).count()
        == 0
    )
    assert AttributionRun.objects.count() == 0 and Trace.objects.count() == traces  # the dry run left nothing


@pytest.mark.django_db
def test_auto_attribute_refuses_a_default_method_that_could_not_start(capsys, project):
    ProjectAttribution.objects.create(project=project, default_method="all_at_once")
    assert "needs a model" in refused(capsys, "auto_attribute", "--project", project.name, "--mode", "all")
    assert ProjectAttribution.objects.get(project=project).auto_attribute == AutoAttribute.OFF


@pytest.mark.django_db
def test_auto_attribute_still_turns_on_a_method_that_can_start(project, clean_runs):
    out = StringIO()
    call_command(
        "auto_attribute", "--project", project.name, "--mode", "failed", "--method", "heuristic", stdout=out
    )
    ProjectLlmSettings.objects.create(project=project, model="openai/gpt-4o-mini")
    call_command(
        "auto_attribute", "--project", project.name, "--mode", "all", "--method", "all_at_once", stdout=out
    )
    settings = ProjectAttribution.objects.get(project=project)
    assert (settings.auto_attribute, settings.default_method) == (AutoAttribute.ALL, "all_at_once")
    assert AttributionRun.objects.count() == 0
    call_command(
        "auto_attribute", "--project", project.name, "--mode", "off", "--method", "learned", stdout=out
    )
    assert (
        ProjectAttribution.objects.get(project=project).auto_attribute == AutoAttribute.OFF
    )  # off needs nothing


# --- create_queue ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_queue_refuses_an_unknown_format(capsys, project, clean_runs):
    args = ("--project", project.name, "--name", "Q", "--source", "search")
    message = refused(capsys, "create_queue", *args, "--format", "nosuchformat")
    assert "unknown format 'nosuchformat'" in message and "sandbox" in message
    assert ReviewQueue.objects.count() == 0
    out = StringIO()
    call_command("create_queue", *args, "--format", "sandbox", "--json", stdout=out)
    assert json.loads(out.getvalue())["items"] == len(clean_runs)
