"""Attribution runs: creation, idempotent per-trace work, cancellation, the CLI, and a real worker fan-out."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from attribution import services
from attribution.methods import MethodError
from attribution.models import AttributionRun, ProjectLlmSettings, RunStatus, Verdict
from tests.conftest import import_now, incoming_path, wait_for, whowhen_files
from tracing.models import Role, Trace

FILES = whowhen_files()


def _import(project, n: int = 3) -> list[Trace]:
    paths = [p for p in FILES if p.parent.name == "Hand-Crafted"][:n]
    jobs = import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
    return [Trace.objects.get(pk=j.trace_ids[0]) for j in jobs]


@pytest.mark.django_db
def test_a_run_writes_one_verdict_per_trace_and_finishes(project):
    traces = _import(project)
    run = services.run_create(
        project=project, method="heuristic", trace_ids=[t.pk for t in traces], enqueue=False
    )
    run = services.run_execute_inline(run=run)
    assert run.status == RunStatus.SUCCEEDED and run.done == 3 and run.failed == 0
    for verdict in Verdict.objects.filter(run=run):
        assert verdict.agent_name and 0 <= verdict.step_index < verdict.trace.step_count
        assert len(verdict.scores) == verdict.trace.step_count


@pytest.mark.django_db
def test_a_re_delivered_trace_task_does_not_write_a_second_verdict(project):
    (trace,) = _import(project, 1)
    run = services.run_create(project=project, method="heuristic", trace_ids=[trace.pk], enqueue=False)
    services.run_claim(run_id=run.pk)
    first = services.run_trace(run_id=run.pk, trace_id=trace.pk)
    again = services.run_trace(run_id=run.pk, trace_id=trace.pk)
    assert first.pk == again.pk
    assert Verdict.objects.filter(run=run).count() == 1
    run.refresh_from_db()
    assert run.done == 1 and run.status == RunStatus.SUCCEEDED


@pytest.mark.django_db
def test_a_cancelled_run_takes_no_more_traces(project):
    traces = _import(project, 2)
    run = services.run_create(
        project=project, method="heuristic", trace_ids=[t.pk for t in traces], enqueue=False
    )
    services.run_claim(run_id=run.pk)
    services.run_trace(run_id=run.pk, trace_id=traces[0].pk)
    assert services.run_cancel(run=run)
    assert services.run_trace(run_id=run.pk, trace_id=traces[1].pk) is None
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.done == 1


@pytest.mark.django_db
def test_another_projects_traces_are_not_taken_into_a_run(project, make_project):
    other = make_project("Other")
    (theirs,) = _import(other, 1)
    with pytest.raises(MethodError, match="selection is empty"):
        services.run_create(project=project, method="heuristic", trace_ids=[theirs.pk], enqueue=False)


@pytest.mark.django_db
def test_an_llm_method_without_a_model_is_refused_with_a_clear_message(project):
    (trace,) = _import(project, 1)
    with pytest.raises(MethodError, match="needs a model"):
        services.run_create(project=project, method="all_at_once", trace_ids=[trace.pk], enqueue=False)


@pytest.mark.django_db
def test_the_attribute_command_prints_one_verdict_per_trace(project):
    traces = _import(project, 2)
    out = io.StringIO()
    call_command(
        "attribute", "--trace", *[str(t.pk) for t in traces], "--method", "heuristic", "--json", stdout=out
    )
    rows = json.loads(out.getvalue())
    assert [r["trace_id"] for r in rows] == [t.pk for t in traces]
    assert all(r["status"] == "ok" and r["agent"] for r in rows)


@pytest.mark.django_db
def test_the_attribute_command_names_missing_traces(project):
    with pytest.raises(CommandError, match="no such trace: 999999"):
        call_command("attribute", "--trace", "999999", "--method", "heuristic")


@pytest.mark.django_db
def test_evaluate_prints_figures_beside_baselines(project):
    _import(project, 6)
    out = io.StringIO()
    call_command("evaluate", "--project", project.name, "--method", "heuristic", "--json", stdout=out)
    result = json.loads(out.getvalue())
    assert result["n"] == 6
    for key in ("agent_accuracy", "step_accuracy", "joint_accuracy"):
        assert 0 <= result[key] <= 1
    assert set(result["step_accuracy_within"]) == {"1", "3", "5"}
    assert set(result["baselines"]) == {"random", "random_blamed", "majority", "first", "last"}
    assert result["intervals"]["agent"][0] <= result["agent_accuracy"] <= result["intervals"]["agent"][1]
    table = io.StringIO()
    call_command("evaluate", "--project", project.name, "--method", "heuristic", stdout=table)
    text = table.getvalue()
    assert "baselines (fitted on training data only)" in text and "random acting agent" in text
    assert "95% interval" in text


@pytest.mark.django_db
def test_the_trace_page_panel_shows_verdicts_beside_the_gold_label(owner_client, project):
    (trace,) = _import(project, 1)
    run = services.run_create(project=project, method="heuristic", trace_ids=[trace.pk], enqueue=False)
    services.run_execute_inline(run=run)
    body = owner_client.get(reverse("attribution:trace_panel", args=[trace.pk])).content.decode()
    verdict = Verdict.objects.get(run=run)
    gold = trace.gold_labels.get()
    assert "Gold label" in body and gold.agent_name in body
    assert f"step {verdict.step_index}" in body and 'class="strip"' in body
    assert "Agent graph" in body and "<svg" in body
    page = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert reverse("attribution:trace_panel", args=[trace.pk]) in page


@pytest.mark.django_db
def test_starting_a_run_from_the_trace_page_queues_it(
    owner_client, project, django_capture_on_commit_callbacks
):
    (trace,) = _import(project, 1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            reverse("attribution:trace_attribute", args=[trace.pk]),
            {"method": "heuristic", "with_ground_truth": "on"},
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200 and len(callbacks) == 1
    assert AttributionRun.objects.get().trace_ids == [trace.pk]
    assert 'hx-trigger="every 2s"' in response.content.decode()  # polls until the verdict is in


@pytest.mark.django_db
def test_a_viewer_cannot_start_runs_and_a_stranger_sees_nothing(client, project, make_user):
    (trace,) = _import(project, 1)
    viewer = make_user("viewer")
    from tracing import services as tracing_services

    tracing_services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert (
        client.post(
            reverse("attribution:trace_attribute", args=[trace.pk]), {"method": "heuristic"}
        ).status_code
        == 403
    )
    assert client.get(reverse("attribution:trace_panel", args=[trace.pk])).status_code == 200
    client.force_login(make_user("stranger"))
    assert client.get(reverse("attribution:trace_panel", args=[trace.pk])).status_code == 404
    assert client.get(reverse("attribution:run_list", args=[project.slug])).status_code == 404


@pytest.mark.django_db
def test_a_run_over_a_filtered_set_and_its_evaluation_page(owner_client, project):
    _import(project, 4)
    response = owner_client.post(
        reverse("attribution:run_list", args=[project.slug]),
        {"method": "heuristic", "gold": "yes", "with_ground_truth": "on"},
    )
    run = AttributionRun.objects.get()
    assert response["Location"] == reverse("attribution:run_detail", args=[run.pk])
    assert run.total == 4 and run.description == "gold=yes"
    services.run_execute_inline(run=run)
    detail = owner_client.get(reverse("attribution:run_detail", args=[run.pk])).content.decode()
    assert "4 of 4 traces" in detail and "every 1s" not in detail
    page = owner_client.get(reverse("attribution:evaluation", args=[project.slug]), {"method": "heuristic"})
    body = page.content.decode()
    # Four traces are too few to be the project's score (issue 16): the run is listed apart, with its n.
    assert (
        "only a single-trace run (n=4" in body
        and f"run #{run.pk}</a>" in body.split("Single-trace runs", 1)[1]
    )
    assert "Every evaluated method" not in body  # one method: nothing to compare
    second = services.run_create(
        project=project,
        method="schema_guided",
        trace_ids=run.trace_ids,
        enqueue=False,
        description="evaluation",
    )
    services.run_execute_inline(run=second)
    body = owner_client.get(
        reverse("attribution:evaluation", args=[project.slug]), {"method": "heuristic"}
    ).content
    single = body.split(b"Single-trace runs", 1)[1]
    assert b"schema_guided" in single and f"run #{second.pk}</a>".encode() in single


@pytest.mark.django_db
def test_only_owners_set_the_model_and_the_key_is_stored_encrypted(owner_client, project, client, make_user):
    url = reverse("attribution:llm_settings", args=[project.slug])
    response = owner_client.post(
        url,
        {
            "model": "openai/gpt-4o-mini",
            "api_base": "",
            "temperature": "0",
            "timeout_seconds": "60",
            "max_retries": "2",
            "spending_cap_usd": "5",
            "api_key": "sk-secret-value-123",
        },
    )
    assert response.status_code == 302
    stored = ProjectLlmSettings.objects.get(project=project)
    assert stored.model == "openai/gpt-4o-mini" and stored.api_key_encrypted
    assert "sk-secret-value-123" not in stored.api_key_encrypted
    assert "sk-secret-value-123" not in owner_client.get(url).content.decode()
    annotator = make_user("ann")
    from tracing import services as tracing_services

    tracing_services.membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    assert client.get(url).status_code == 403


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_run_fans_out_over_a_real_worker(celery_worker, project):
    traces = _import(project, 3)
    run = services.run_create(project=project, method="heuristic", trace_ids=[t.pk for t in traces])
    finished = wait_for(lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first())
    assert finished.done == 3
    assert Verdict.objects.filter(run=run).count() == 3


@pytest.mark.django_db
def test_a_hook_url_the_worker_cannot_use_fails_the_trace_and_the_run_never_stays_running(project):
    """An ftp:// hook saved before the form checked schemes: the replayer's ValueError becomes the verdict's error."""
    (trace,) = _import(project, 1)
    ProjectLlmSettings.objects.create(project=project, replay_hook_url="ftp://hooks.example.com/replay")
    run = services.run_create(project=project, method="counterfactual", trace_ids=[trace.pk], enqueue=False)
    run = services.run_execute_inline(run=run)
    assert run.status != RunStatus.RUNNING and run.done == 1 and run.failed == 1
    verdict = Verdict.objects.get(run=run)
    assert "replay hook cannot be used" in verdict.error and "http(s)" in verdict.error
