"""A learned run is scored without the traces its model learned from: on them a model shows what it remembers, not
how it attributes a new failure (the demo's model scored 54% agent / 46% step on its own 46 training labels, against
41% / 26% cross-validated). The page says how many it left out and shows the model's cross-validated figures."""

from __future__ import annotations

import pytest

from attribution.learning.selectors import in_sample_traces, trained_on
from attribution.learning.services import attributor_create, attributor_train
from attribution.models import AttributorModel, AttributorStatus
from tests.attribution.test_evaluation_page import chart_of, make_run, make_traces, page
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import JobStatus, Trace

pytestmark = pytest.mark.django_db


def trained_model(project, traces, **fields) -> AttributorModel:
    return AttributorModel.objects.create(
        project=project,
        name="triage",
        training_projects=[{"id": project.pk, "name": project.name}],
        label_sources=["imported"],
        status=AttributorStatus.SUCCEEDED,
        cv={"n": len(traces), "agent_accuracy": 0.413, "step_accuracy": 0.261},
        trained_trace_ids=[t.pk for t in traces],
        **fields,
    )


def learned_run(model: AttributorModel, traces, *, right: int):
    """A finished learned run of ``model`` over ``traces``, right on the first ``right`` (``make_run``)."""
    run = make_run(model.project, "learned", traces, right=right)
    run.params = {"attributor": model.pk}
    run.save(update_fields=["params"])
    return run


def test_a_learned_run_is_scored_only_on_traces_its_model_never_saw(owner_client, project):
    traces = make_traces(project, 30)
    model = trained_model(project, traces[:18])
    run = learned_run(model, traces, right=18)  # right on every trace it learned from, wrong on the rest
    make_run(project, "heuristic", traces, right=6)

    body = page(owner_client, project, method="learned")
    assert f'learned <span class="muted">run #{run.pk}, n=12</span>' in body
    assert "Leaves out 18 labelled traces that" in body and "triage v1</a> learned from" in body
    assert "Its cross-validated figures (n=18): agent 41.3%, step 26.1%." in body
    # 0 of 12 out-of-sample traces right: ranked below the heuristic's 6 of 30, not above it at 18 of 30.
    assert body.index(">learned</a>") > body.index(">heuristic</a>")
    assert "without the 18 traces its model learned from" in body
    assert "0.0%" in chart_of(body)


def test_a_run_over_nothing_but_its_model_s_training_traces_has_no_figure(owner_client, project):
    traces = make_traces(project, 12)
    model = trained_model(project, traces)
    run = learned_run(model, traces, right=12)
    make_run(project, "heuristic", traces, right=6)

    body = page(owner_client, project, method="learned")
    assert f"learned run #{run.pk} has no figure here" in body
    assert (
        "all 12 labelled traces it covered in this split are ones" in body and "(n=12): agent 41.3%" in body
    )
    assert "100.0%" not in body  # what it would have claimed
    assert ">learned</a>" not in body  # not in the comparison, nor in the chart
    assert "learned" not in chart_of(body)


def test_copies_derived_from_a_training_trace_count_as_seen(project):
    traces = make_traces(project, 3)
    copy = Trace.objects.create(project=project, name="task-0-injected", derived_from=traces[0])
    unrelated = Trace.objects.create(project=project, name="other")
    model = trained_model(project, traces[:1])
    seen = in_sample_traces([traces[0].pk, traces[1].pk, copy.pk, unrelated.pk], trained_on(model))
    assert seen == {traces[0].pk, copy.pk}


def test_a_model_trained_before_its_traces_were_kept_is_read_from_the_labels(project):
    traces = make_traces(project, 4)
    model = trained_model(
        project,
        traces,
    )
    AttributorModel.objects.filter(pk=model.pk).update(trained_trace_ids=None, label_sources=[])
    model.refresh_from_db()
    assert trained_on(model) == {t.pk for t in traces}  # every labelled trace of its training projects


def test_a_run_whose_model_was_deleted_says_its_figures_may_be_in_sample(owner_client, project):
    traces = make_traces(project, 12)
    model = trained_model(project, traces)
    learned_run(model, traces, right=12)
    model.delete()
    body = page(owner_client, project, method="learned")
    assert (
        "The model this run used is deleted" in body and "its model is deleted: may be in-sample" not in body
    )
    assert "n=12" in body


def test_training_keeps_the_traces_a_model_learned_from(project, owner):
    files = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:6]
    jobs = import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files))
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs)
    row = attributor_train(
        model_id=attributor_create(project=project, name="triage", user=owner, folds=3, enqueue=False).pk
    )
    assert row.status == AttributorStatus.SUCCEEDED, row.error
    assert sorted(row.trained_trace_ids) == sorted(
        Trace.objects.filter(project=project).values_list("pk", flat=True)
    )


def test_the_api_scores_a_learned_run_without_its_training_traces_and_says_how_many(client, project, owner):
    from attribution import selectors
    from tracing import services

    traces = make_traces(project, 30)
    model = trained_model(project, traces[:18])
    run = learned_run(model, traces, right=18)
    score = selectors.run_score(run=run)
    assert (score["n"], score["left_out"], score["step_accuracy"]) == (12, 18, 0.0)
    token = services.api_token_create(project=project, name="ci", user=owner)[1]
    body = client.get(f"/api/runs/{run.pk}", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert body["score"]["n"] == 12 and body["score"]["left_out"] == 18


def test_evaluate_leaves_out_what_the_model_trained_on_and_says_how_many(project, owner):
    import io
    import json

    from django.core.management import call_command

    files = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:10]
    first = import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files[:6]))
    assert all(j.status == JobStatus.SUCCEEDED for j in first)
    attributor_train(
        model_id=attributor_create(project=project, name="triage", user=owner, folds=3, enqueue=False).pk
    )
    later = import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files[6:]))
    assert all(j.status == JobStatus.SUCCEEDED for j in later)
    out = io.StringIO()
    call_command(
        "evaluate",
        "--project",
        project.name,
        "--method",
        "learned",
        "--model",
        "triage",
        "--json",
        stdout=out,
    )
    result = json.loads(out.getvalue())
    assert (result["n"], result["left_out"]) == (4, 6)
    assert "6 trace(s) the model trained on are left out" in result["warning"]


def test_on_a_split_the_page_counts_only_that_split_s_left_out_traces(owner_client, project):
    from attribution.splits import split_of

    traces = make_traces(project, 40)
    model = trained_model(project, traces[:30])
    learned_run(model, traces, right=30)
    held = sum(
        1
        for t in traces[:30]
        if split_of(source_format=t.source_format, external_id=t.external_id, name=t.name) == "heldout"
    )
    assert 0 < held < 30
    body = page(owner_client, project, method="learned", split="heldout")
    assert f"Leaves out {held} labelled trace{'s' if held != 1 else ''} that" in body


def _import(project, files) -> None:
    jobs = import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files))
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]


def _trained_on_six_then_four_more(project, owner) -> AttributorModel:
    files = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:10]
    _import(project, files[:6])
    model = attributor_train(
        model_id=attributor_create(project=project, name="triage", user=owner, folds=3, enqueue=False).pk
    )
    _import(project, files[6:])
    return model


def test_the_model_page_scores_it_on_the_labels_it_never_saw(owner_client, project, owner):
    from django.urls import reverse

    from attribution import services
    from attribution.models import AttributionRun

    model = _trained_on_six_then_four_more(project, owner)
    body = owner_client.get(reverse("attribution:model_detail", args=[model.pk])).content.decode()
    assert "4 labelled traces of Alpha are not among those it learned from" in body
    assert "Score it on those traces" in body

    response = owner_client.post(reverse("attribution:model_score_unseen", args=[model.pk]))
    run = AttributionRun.objects.get()
    assert response["Location"] == reverse("attribution:run_detail", args=[run.pk])
    unseen = set(Trace.objects.filter(project=project).values_list("pk", flat=True)) - set(
        model.trained_trace_ids
    )
    assert set(run.trace_ids) == unseen and len(unseen) == 4
    assert run.params["attributor"] == model.pk and "never learned from" in run.description

    services.run_execute_inline(run=run)
    page_body = owner_client.get(reverse("attribution:run_detail", args=[run.pk])).content.decode()
    assert "On its 4 labelled traces: agent <strong>" in page_body
    assert "Leaves out" not in page_body  # nothing of it was seen in training


def test_a_model_that_saw_every_label_has_nothing_to_be_scored_on(owner_client, project, owner):
    from django.urls import reverse

    from attribution import services
    from attribution.models import AttributionRun

    _import(project, [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:6])
    model = attributor_train(
        model_id=attributor_create(project=project, name="triage", user=owner, folds=3, enqueue=False).pk
    )
    body = owner_client.get(reverse("attribution:model_detail", args=[model.pk])).content.decode()
    assert "Every labelled trace of Alpha is one it learned from" in body
    response = owner_client.post(reverse("attribution:model_score_unseen", args=[model.pk]), follow=True)
    assert "every labelled trace of Alpha is one triage v1 learned from" in response.content.decode()
    assert not AttributionRun.objects.exists()

    # Run over its own labels anyway (the evaluation page's button): the run's page has no figure and says why.
    run = services.run_create(
        project=project, method="learned", trace_ids=model.trained_trace_ids, attributor=model, enqueue=False
    )
    services.run_execute_inline(run=run)
    page_body = owner_client.get(reverse("attribution:run_detail", args=[run.pk])).content.decode()
    assert "No figure: all 6 labelled traces of this run are ones" in page_body
    assert "On its" not in page_body


def test_the_evaluation_page_runs_the_default_model_on_the_labels_it_never_saw(owner_client, project, owner):
    from django.urls import reverse

    from attribution.learning.services import attributor_make_default
    from attribution.models import AttributionRun

    model = _trained_on_six_then_four_more(project, owner)
    attributor_make_default(model=model, actor=owner)
    body = page(owner_client, project, method="learned")
    assert "Run learned on the 4 labelled traces triage v1 never learned from" in body
    owner_client.post(reverse("attribution:evaluation_start", args=[project.slug]), {"method": "learned"})
    run = AttributionRun.objects.get()
    assert set(run.trace_ids).isdisjoint(model.trained_trace_ids) and len(run.trace_ids) == 4
    assert run.description == "evaluation (the labels triage v1 never learned from)"
    # Other methods still run on every labelled trace.
    assert "Run heuristic on all labelled traces" in page(owner_client, project, method="heuristic")
