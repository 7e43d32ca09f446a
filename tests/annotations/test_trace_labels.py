"""A person's own label from the trace page: confirming a verdict, correcting it, taking it back -- the service and
its pages, and what the label then means for attribution (the trace's gold, the learned model's training set)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotations import services
from annotations.models import QueueItem, ReviewQueue
from attribution.learning.selectors import labelled_traces_count, training_examples
from attribution.selectors import gold_for
from tracing.models import AuditEvent, GoldLabel, LabelSource

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _label(client, trace, **data):
    return client.post(reverse("annotations:trace_label", args=[trace.pk]), data, HTTP_HX_REQUEST="true")


def test_confirming_a_verdict_makes_it_the_traces_verified_gold(project, make_trace, make_verdict, ann):
    trace = make_trace(steps=6, gold_step=1)  # an imported label, Planner at step 1
    verdict = make_verdict(trace, "heuristic", "Checker", 2)
    assert gold_for(trace).source == LabelSource.IMPORTED

    response = _label(_client(ann), trace, verdict=verdict.pk)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="verdicts"' in page and "Labelled: Checker at step 2." in page and "by ann" in page
    gold = gold_for(trace)
    assert (gold.source, gold.agent_name, gold.step_index, gold.created_by) == (
        "annotator",
        "Checker",
        2,
        ann,
    )
    assert GoldLabel.objects.filter(trace=trace, source=LabelSource.IMPORTED).count() == 1  # kept beside it
    event = AuditEvent.objects.get(action="label.confirmed")
    assert event.details["verdict"] == verdict.pk and event.details["step"] == 2
    # It is a verified label: the learned model trains on it, with the corrected answer.
    (example,) = training_examples(project_ids=[project.pk], sources=[LabelSource.ANNOTATOR])
    assert (example.agent, example.step) == ("Checker", 2)


def test_a_correction_replaces_the_persons_own_label_and_leaves_others(project, make_trace, ann, bob):
    trace = make_trace(steps=6)
    ann_client = _client(ann)
    _label(_client(bob), trace, step_index=4)
    _label(ann_client, trace, step_index=2)
    response = _label(ann_client, trace, step_index=3, agent_name="Planner", reason="<b>wrong plan</b>")

    assert response.status_code == 200
    own = GoldLabel.objects.filter(trace=trace, created_by=ann)
    assert [(g.agent_name, g.step_index) for g in own] == [("Planner", 3)]
    assert GoldLabel.objects.filter(trace=trace, created_by=bob).count() == 1
    assert "&lt;b&gt;wrong plan&lt;/b&gt;" in response.content.decode()  # the reason is shown, escaped
    assert labelled_traces_count(project_ids=[project.pk]) == 1
    replaced = AuditEvent.objects.filter(action="label.given").order_by("-pk").first()
    assert replaced.details["replaced"] == [{"agent": "Checker", "step": 2}]  # step 2's agent, filled in


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"step_index": 6}, "Step 6 is outside this trace"),
        ({"step_index": 1, "agent_name": "Stranger"}, "&#x27;Stranger&#x27; is not an agent of this trace"),
        ({"step_index": 1, "category": "no.such"}, "Unknown category"),
        ({}, "Give the step with the decisive error, or confirm a verdict."),
        ({"verdict": 10**9}, "That verdict is not on this trace."),
    ],
)
def test_a_bad_label_is_refused_with_a_reason_and_writes_nothing(make_trace, ann, data, message):
    trace = make_trace(steps=6)
    response = _label(_client(ann), trace, **data)
    assert response.status_code == 200 and message in response.content.decode()
    assert not GoldLabel.objects.filter(trace=trace).exists()


def test_a_verdict_of_another_trace_cannot_be_confirmed_here(make_trace, make_verdict, ann):
    trace, other = make_trace(steps=6), make_trace(steps=6)
    verdict = make_verdict(other, "heuristic", "Coder", 1)
    response = _label(_client(ann), trace, verdict=verdict.pk)
    assert "That verdict is not on this trace." in response.content.decode()
    assert not GoldLabel.objects.exists()


def test_taking_a_label_back_removes_only_ones_own_and_never_a_queues_decision(
    project, make_trace, ann, owner
):
    trace = make_trace(steps=6, gold_step=1)
    ann_client = _client(ann)
    _label(ann_client, trace, step_index=3)
    response = ann_client.post(
        reverse("annotations:trace_label_remove", args=[trace.pk]), HTTP_HX_REQUEST="true"
    )
    assert "Your label is taken back." in response.content.decode()
    assert gold_for(trace).source == LabelSource.IMPORTED
    assert AuditEvent.objects.filter(action="label.removed").count() == 1

    # A label a review queue resolved is changed in its queue, not here -- even by the person who resolved it.
    queue = ReviewQueue.objects.create(project=project, name="Triage")
    item = QueueItem.objects.create(queue=queue, trace=trace)
    services.item_resolve(item=item, user=ann, step_index=2, source=LabelSource.ANNOTATOR)
    response = ann_client.post(
        reverse("annotations:trace_label_remove", args=[trace.pk]), HTTP_HX_REQUEST="true"
    )
    assert "no label of your own here" in response.content.decode()
    assert GoldLabel.objects.filter(trace=trace, source=LabelSource.ANNOTATOR).count() == 1
    # ... and a new label of one's own leaves the queue's decision in place.
    _label(ann_client, trace, step_index=4)
    assert sorted(
        GoldLabel.objects.filter(trace=trace, source=LabelSource.ANNOTATOR).values_list(
            "step_index", flat=True
        )
    ) == [2, 4]
    assert services.own_trace_label(trace=trace, user=ann).step_index == 4


def test_without_htmx_the_person_is_sent_back_to_the_trace_with_a_message(make_trace, ann):
    trace = make_trace(steps=6)
    client = _client(ann)
    response = client.post(
        reverse("annotations:trace_label", args=[trace.pk]), {"step_index": 9}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("tracing:trace_detail", args=[trace.pk])
    assert "Step 9 is outside this trace" in response.content.decode()


def test_the_panel_offers_confirm_and_correct_to_labellers_only(make_trace, make_verdict, ann, viewer):
    trace = make_trace(steps=6)
    make_verdict(trace, "heuristic", "Coder", 1)
    panel = reverse("attribution:trace_panel", args=[trace.pk])
    page = _client(ann).get(panel).content.decode()
    assert "Confirm: Coder at step 1" in page and "Label it yourself" in page
    page = _client(viewer).get(panel).content.decode()
    assert "Confirm:" not in page and "Label it yourself" not in page
    assert _label(_client(viewer), trace, step_index=1).status_code == 403
