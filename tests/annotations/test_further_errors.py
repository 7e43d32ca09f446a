"""Several errors per trace in review (issue 14): an answer lists further errors besides the decisive one, agreement
stays on the decisive one, resolving writes them all as error labels, and an owner picks the decisive error among
every labelled error of the trace."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotations import selectors, services
from annotations.models import Annotation, AnnotationError, CopyStatus, QueueItem, QueueSource
from annotations.services import ErrorSpec, QueueError
from tracing.models import ErrorLabel, GoldLabel

pytestmark = pytest.mark.django_db

CAT = "action.invalid_action"  # of the default taxonomy (agent_error_taxonomy)


def _queue(project, owner, **kwargs):
    return services.queue_create(
        project=project, user=owner, name=kwargs.pop("name", "Q"), source=QueueSource.NO_GOLD, **kwargs
    )


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _submit(queue, user, step, further=(), **kwargs):
    copy = services.annotation_claim(queue=queue, user=user)
    return services.annotation_submit(annotation=copy, user=user, step_index=step, further=further, **kwargs)


def test_an_answer_keeps_its_further_errors_in_order_with_the_steps_agent_filled_in(
    project, owner, make_trace, ann
):
    make_trace(steps=6)
    queue = _queue(project, owner, overlap=1)
    answer = _submit(
        queue, ann, 1, further=[ErrorSpec(4, category=CAT, note="then this"), ErrorSpec(2, "Planner")]
    )
    rows = list(answer.further_errors.values_list("position", "step_index", "agent_name", "category", "note"))
    # Step 4's agent is filled in (Coder); a named agent is kept even on another agent's step.
    assert rows == [(0, 4, "Coder", CAT, "then this"), (1, 2, "Planner", "", "")]
    assert (answer.step_index, answer.agent_name) == (1, "Coder")


@pytest.mark.parametrize(
    "bad, message",
    [
        (ErrorSpec(6), "outside this trace"),
        (ErrorSpec(2, "Ghost"), "not an agent of this trace"),
        (ErrorSpec(2, category="mast.1.1"), "not a category of this queue"),
    ],
)
def test_a_further_error_that_does_not_fit_the_trace_refuses_the_answer_and_the_lease_stays(
    project, owner, make_trace, ann, bad, message
):
    make_trace(steps=6)
    queue = _queue(project, owner, overlap=1)
    copy = services.annotation_claim(queue=queue, user=ann)
    with pytest.raises(QueueError, match=message):
        services.annotation_submit(annotation=copy, user=ann, step_index=1, further=[ErrorSpec(3), bad])
    copy.refresh_from_db()
    assert copy.status == CopyStatus.LEASED and not AnnotationError.objects.exists()


def test_agreement_is_on_the_decisive_error_and_consensus_writes_every_error_label(
    project, owner, make_trace, ann, bob
):
    trace = make_trace(steps=8)
    queue = _queue(project, owner, overlap=2)
    _submit(queue, ann, 3, further=[ErrorSpec(5, category=CAT, note="late slip")], category=CAT)
    _submit(queue, bob, 3, further=[ErrorSpec(1)], category=CAT)  # other further errors: still unanimous
    (row,) = selectors.adjudication_rows(queue=queue)
    assert row.state == "unanimous"
    assert services.queue_accept_unanimous(queue=queue, user=owner) == 1
    gold = GoldLabel.objects.get(trace=trace)
    assert (gold.source, gold.step_index) == ("annotator", 3)
    labels = list(ErrorLabel.objects.filter(trace=trace).order_by("position"))
    # The first answer is the accepted one: its further errors ride along.
    assert [(e.step_index, e.decisive, e.source, e.category, e.family) for e in labels] == [
        (3, True, "annotator", CAT, "AgentErrorTaxonomy"),
        (5, False, "annotator", CAT, "AgentErrorTaxonomy"),
    ]
    assert labels[1].description == "late slip" and labels[1].agent_name == "Checker"


def test_the_further_errors_a_team_labels_reach_the_learned_models_training(project, owner, make_trace, ann):
    from attribution.learning.selectors import training_examples

    trace = make_trace(steps=8)
    queue = _queue(project, owner, overlap=1)
    _submit(queue, ann, 3, further=[ErrorSpec(5, category=CAT), ErrorSpec(1)], category=CAT)
    # An answer is not a verified label until it is accepted.
    assert training_examples(project_ids=[project.pk]) == []
    assert services.queue_accept_unanimous(queue=queue, user=owner) == 1
    (example,) = training_examples(project_ids=[project.pk])
    assert example.view.trace_id == trace.pk and example.step == 3
    # The decisive error and both further ones: the error detector's positives.
    assert sorted(example.errors) == [1, 3, 5]
    assert training_examples(project_ids=[project.pk], sources=["imported"]) == []


def test_an_owner_picks_the_decisive_error_among_every_labelled_error_and_can_change_it(
    project, owner, make_trace, ann, bob
):
    trace = make_trace(steps=8)
    imported = ErrorLabel.objects.create(
        trace=trace,
        step_index=2,
        agent_name="Checker",
        family="TRAIL",
        category="Tool-related",
        decisive=True,
        position=0,
    )
    ErrorLabel.objects.create(trace=trace, span_id="gone", family="TRAIL", category="Other", position=1)
    queue = _queue(project, owner, overlap=2)
    _submit(queue, ann, 1, further=[ErrorSpec(6, note="ann's second")])
    _submit(queue, bob, 4)
    item = QueueItem.objects.get(queue=queue)
    candidates = selectors.error_candidates(item=item)
    ann_answer = Annotation.objects.get(annotator=ann)
    further = ann_answer.further_errors.get()
    keys = [c.key for c in candidates]
    assert keys[:3] == [f"a{ann_answer.pk}", f"e{further.pk}", f"a{Annotation.objects.get(annotator=bob).pk}"]
    assert f"l{imported.pk}" in keys and len(keys) == 4  # the label with no step cannot be picked

    client = _client(owner)
    url = reverse("annotations:adjudicate_item", args=[item.pk])
    page = client.get(url).content.decode()
    assert 'id="error-candidates"' in page and "ann&#x27;s second" in page
    response = client.post(
        url, {"decisive": f"l{imported.pk}", "keep": [f"e{further.pk}", f"a{ann_answer.pk}"]}
    )
    assert response.status_code == 302
    gold = GoldLabel.objects.get(trace=trace, source="adjudicated")
    assert (gold.step_index, gold.agent_name, gold.category) == (2, "Checker", "Tool-related")
    adjudicated = list(ErrorLabel.objects.filter(trace=trace, source="adjudicated").order_by("position"))
    assert [(e.step_index, e.decisive) for e in adjudicated] == [
        (2, True),
        (1, False),
        (6, False),
    ]  # page order
    assert adjudicated[0].family == "TRAIL"

    # Changing the decision replaces the adjudicated labels and gold: still one decisive error per source.
    response = client.post(url, {"decisive": f"e{further.pk}", "keep": [f"l{imported.pk}"]})
    assert response.status_code == 302
    assert list(
        GoldLabel.objects.filter(trace=trace, source="adjudicated").values_list("step_index", flat=True)
    ) == [6]
    adjudicated = list(ErrorLabel.objects.filter(trace=trace, source="adjudicated").order_by("position"))
    assert [(e.step_index, e.decisive) for e in adjudicated] == [(6, True), (2, False)]
    imported.refresh_from_db()
    assert imported.decisive and imported.source == "imported"  # the dataset's own labels stay as they came


def test_an_unknown_candidate_key_is_refused(project, owner, make_trace, ann):
    make_trace(steps=4)
    queue = _queue(project, owner, overlap=1)
    _submit(queue, ann, 1)
    item = QueueItem.objects.get(queue=queue)
    other = ErrorLabel.objects.create(trace=make_trace(steps=4), step_index=1, position=0)
    response = _client(owner).post(
        reverse("annotations:adjudicate_item", args=[item.pk]), {"decisive": f"l{other.pk}"}
    )
    assert response.status_code == 400 and not GoldLabel.objects.filter(trace=item.trace).exists()


def test_accepting_one_answer_takes_its_further_errors(project, owner, make_trace, ann, bob):
    trace = make_trace(steps=8)
    queue = _queue(project, owner, overlap=2)
    _submit(queue, ann, 1, further=[ErrorSpec(5, category=CAT)])
    _submit(queue, bob, 4)
    item = QueueItem.objects.get(queue=queue)
    client = _client(owner)
    url = reverse("annotations:adjudicate_item", args=[item.pk])
    page = client.get(url).content.decode()
    assert 'name="error_step" value="5"' in page  # the accept button posts the answer with its further errors
    response = client.post(
        url,
        {
            "step_index": 1,
            "agent_name": "Coder",
            "category": "",
            "reason": "",
            "error_step": ["5"],
            "error_agent": ["Checker"],
            "error_category": [CAT],
            "error_note": [""],
        },
    )
    assert response.status_code == 302
    assert list(
        ErrorLabel.objects.filter(trace=trace).order_by("position").values_list("step_index", "decisive")
    ) == [(1, True), (5, False)]


def test_the_labelling_page_takes_further_errors_and_refuses_incomplete_ones(project, owner, make_trace, ann):
    make_trace(steps=6, content="<script>alert(1)</script>")
    queue = _queue(project, owner, overlap=1)
    client = _client(ann)
    url = client.get(reverse("annotations:queue_next", args=[queue.pk]))["Location"]
    page = client.get(url).content.decode()
    assert 'id="further-error-template"' in page and "<script>alert(1)" not in page
    refused = client.post(
        url,
        {
            "step_index": 1,
            "error_step": ["3", "4"],
            "error_agent": ["", ""],
            "error_category": [""],
            "error_note": ["", ""],
        },
    )
    assert refused.status_code == 400 and "incomplete" in refused.content.decode()
    bad_step = client.post(
        url,
        {
            "step_index": 1,
            "error_step": ["9"],
            "error_agent": [""],
            "error_category": [""],
            "error_note": ["<i>x</i>"],
        },
    )
    assert bad_step.status_code == 400 and "Further error 1: Step 9 is outside" in bad_step.content.decode()
    assert 'value="&lt;i&gt;x&lt;/i&gt;"' in bad_step.content.decode()  # shown again, escaped
    done = client.post(
        url,
        {
            "step_index": 1,
            "error_step": ["3"],
            "error_agent": [""],
            "error_category": [CAT],
            "error_note": ["also wrong"],
        },
    )
    assert done.status_code == 302
    (error,) = AnnotationError.objects.all()
    assert (error.step_index, error.agent_name, error.category, error.note) == (
        3,
        "Planner",
        CAT,
        "also wrong",
    )
