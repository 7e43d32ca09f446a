"""Queues: filling from filters, leases, skips, submissions and resolution into gold labels."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotations import selectors, services
from annotations.models import Annotation, CopyStatus, QueueItem, QueueSource, Skip
from tracing.models import GoldLabel, Membership

pytestmark = pytest.mark.django_db


def _queue(project, owner, **kwargs):
    kwargs.setdefault("name", "Q")
    kwargs.setdefault("source", QueueSource.NO_GOLD)
    return services.queue_create(project=project, user=owner, **kwargs)


def test_a_queue_of_traces_without_gold_skips_labelled_traces_and_makes_overlap_copies(
    project, owner, make_trace
):
    unlabelled = [make_trace(), make_trace()]
    make_trace(gold_step=2)
    queue = _queue(project, owner, overlap=3)
    assert set(QueueItem.objects.filter(queue=queue).values_list("trace_id", flat=True)) == {
        t.pk for t in unlabelled
    }
    assert Annotation.objects.filter(queue=queue).count() == 6
    assert set(Annotation.objects.filter(queue=queue).values_list("slot", flat=True)) == {0, 1, 2}


def test_adding_a_trace_twice_does_not_duplicate_items_or_copies(project, owner, make_trace):
    trace = make_trace()
    queue = _queue(project, owner)
    assert services.queue_fill(queue=queue) == 0
    assert services.queue_fill(queue=queue, trace_ids=[trace.pk, trace.pk]) == 0
    assert QueueItem.objects.filter(queue=queue).count() == 1
    assert Annotation.objects.filter(queue=queue).count() == 2
    newer = make_trace()
    assert services.queue_fill(queue=queue) == 1
    assert Annotation.objects.filter(queue=queue, item__trace=newer).count() == 2


def test_low_confidence_and_disagreement_filters_pick_the_right_traces(
    project, owner, make_trace, make_verdict
):
    sure, unsure, split, agreed = make_trace(), make_trace(), make_trace(), make_trace()
    make_verdict(sure, "heuristic", "Coder", 1, confidence=0.9)
    make_verdict(unsure, "heuristic", "Coder", 1, confidence=0.2)
    make_verdict(split, "heuristic", "Coder", 1)
    make_verdict(split, "all_at_once", "Planner", 3)
    make_verdict(agreed, "heuristic", "Coder", 4)
    make_verdict(agreed, "all_at_once", "Coder", 4)
    low = _queue(project, owner, name="low", source=QueueSource.LOW_CONFIDENCE, filter={"threshold": 0.5})
    disagree = _queue(project, owner, name="split", source=QueueSource.DISAGREE)
    assert list(low.items.values_list("trace_id", flat=True)) == [unsure.pk]
    assert list(disagree.items.values_list("trace_id", flat=True)) == [split.pk]


def test_a_search_filter_queue_takes_the_trace_lists_matches(project, owner, make_trace):
    traces = [make_trace() for _ in range(3)]
    queue = _queue(project, owner, source=QueueSource.SEARCH, filter={"q": traces[1].name})
    assert list(queue.items.values_list("trace_id", flat=True)) == [traces[1].pk]


def test_two_annotators_get_different_copies_and_a_reload_returns_the_same_one(
    project, owner, make_trace, ann, bob
):
    make_trace()
    queue = _queue(project, owner, overlap=2)
    first = services.annotation_claim(queue=queue, user=ann)
    second = services.annotation_claim(queue=queue, user=bob)
    assert first.pk != second.pk and first.item_id == second.item_id  # both copies of the one item
    assert services.annotation_claim(queue=queue, user=ann).pk == first.pk
    assert services.annotation_claim(queue=queue, user=owner) is None  # overlap 2: both copies are taken


def test_one_annotator_never_holds_two_copies_of_one_item(project, owner, make_trace, ann):
    make_trace()
    queue = _queue(project, owner, overlap=3)
    copy = services.annotation_claim(queue=queue, user=ann)
    services.annotation_submit(annotation=copy, user=ann, step_index=1)
    assert services.annotation_claim(queue=queue, user=ann) is None
    # The database refuses it too, whatever the code path.
    other = Annotation.objects.filter(queue=queue, status=CopyStatus.OPEN).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Annotation.objects.filter(pk=other.pk).update(annotator=ann, status=CopyStatus.LEASED)


def test_an_expired_lease_returns_to_the_pool_and_its_first_holder_can_no_longer_submit(
    project, owner, make_trace, ann, bob
):
    make_trace()
    queue = _queue(project, owner, overlap=1)
    copy = services.annotation_claim(queue=queue, user=ann)
    assert services.annotation_claim(queue=queue, user=bob) is None
    later = timezone.now() + timedelta(seconds=queue.lease_seconds + 1)
    taken = services.annotation_claim(queue=queue, user=bob, now=later)
    assert taken.pk == copy.pk and taken.annotator == bob
    with pytest.raises(services.QueueError, match="ran out"):
        services.annotation_submit(annotation=copy, user=ann, step_index=0)
    services.annotation_submit(annotation=taken, user=bob, step_index=0)
    assert Annotation.objects.get(pk=copy.pk).annotator == bob


def test_an_expired_lease_nobody_took_is_still_its_holders(project, owner, make_trace, ann):
    make_trace()
    queue = _queue(project, owner, overlap=1)
    copy = services.annotation_claim(queue=queue, user=ann)
    later = timezone.now() + timedelta(seconds=queue.lease_seconds + 5)
    again = services.annotation_claim(queue=queue, user=ann, now=later)
    assert again.pk == copy.pk and again.lease_expires_at > later


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_a_copy_another_transaction_has_locked(project, owner, make_trace, ann, bob):
    make_trace()
    make_trace()
    queue = _queue(project, owner, overlap=1)
    locked, release = threading.Event(), threading.Event()
    first_copy = Annotation.objects.filter(queue=queue).order_by("item_id").first()

    def hold_lock() -> None:
        with transaction.atomic():
            Annotation.objects.select_for_update().get(pk=first_copy.pk)
            locked.set()
            release.wait(timeout=30)
        connection.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        claimed = services.annotation_claim(queue=queue, user=bob)  # does not wait for the lock
        assert claimed is not None and claimed.pk != first_copy.pk
    finally:
        release.set()
        thread.join()


def test_a_skipped_item_goes_back_to_the_pool_but_not_to_whoever_skipped_it(
    project, owner, make_trace, ann, bob
):
    make_trace()
    queue = _queue(project, owner, overlap=1)
    copy = services.annotation_claim(queue=queue, user=ann)
    services.annotation_skip(annotation=copy, user=ann)
    assert Skip.objects.filter(item=copy.item, annotator=ann).exists()
    assert services.annotation_claim(queue=queue, user=ann) is None
    assert services.annotation_claim(queue=queue, user=bob).pk == copy.pk


def test_a_submission_takes_the_steps_agent_and_refuses_steps_outside_the_trace(
    project, owner, make_trace, ann
):
    make_trace(steps=4)
    queue = _queue(project, owner, overlap=1)
    copy = services.annotation_claim(queue=queue, user=ann)
    with pytest.raises(services.QueueError, match="outside"):
        services.annotation_submit(annotation=copy, user=ann, step_index=4)
    with pytest.raises(services.QueueError, match="not an agent"):
        services.annotation_submit(annotation=copy, user=ann, step_index=1, agent_name="Nobody")
    done = services.annotation_submit(
        annotation=copy,
        user=ann,
        step_index=1,
        category="action.invalid_action",
        reason="wrong tool",
        lead_time_ms=12_345,
    )
    assert (done.status, done.agent_name, done.step_index, done.lead_time_ms) == (
        "submitted",
        "Coder",
        1,
        12_345,
    )
    assert not GoldLabel.objects.filter(trace=copy.item.trace).exists()  # one answer is not gold


def test_viewers_and_unnamed_annotators_may_not_label(project, owner, make_trace, ann, bob, viewer):
    make_trace()
    anyone = _queue(project, owner, name="anyone")
    named = _queue(project, owner, name="named", assignment="named", annotators=[ann])

    def may(queue, user):
        return selectors.may_label(queue=queue, membership=Membership.objects.get(project=project, user=user))

    assert may(anyone, ann) and may(anyone, owner) and not may(anyone, viewer)
    assert may(named, ann) and not may(named, bob)


def _answer(queue, user, step, agent=""):
    copy = services.annotation_claim(queue=queue, user=user)
    return services.annotation_submit(annotation=copy, user=user, step_index=step, agent_name=agent)


def test_unanimous_items_become_annotator_gold_and_disagreements_adjudicated_gold(
    project, owner, make_trace, ann, bob
):
    agreed, split = make_trace(), make_trace()
    queue = _queue(project, owner, overlap=2)
    _answer(queue, ann, 2)
    _answer(queue, bob, 2)
    _answer(queue, ann, 1)
    _answer(queue, bob, 4)
    states = {row.item.trace_id: row.state for row in selectors.adjudication_rows(queue=queue)}
    assert states == {agreed.pk: "unanimous", split.pk: "disagree"}

    assert services.queue_accept_unanimous(queue=queue, user=owner) == 1
    gold = GoldLabel.objects.get(trace=agreed)
    assert (gold.source, gold.agent_name, gold.step_index, gold.created_by) == (
        "annotator",
        "Checker",
        2,
        owner,
    )

    item = QueueItem.objects.get(queue=queue, trace=split)
    services.item_resolve(item=item, user=owner, step_index=4, agent_name="Coder", reason="step 4 broke it")
    label = GoldLabel.objects.get(trace=split)
    assert (label.source, label.agent_name, label.step_index) == ("adjudicated", "Coder", 4)
    # Changing one's mind replaces the decision instead of adding a second gold label.
    services.item_resolve(item=item, user=owner, step_index=1)
    assert list(GoldLabel.objects.filter(trace=split).values_list("step_index", "agent_name")) == [
        (1, "Coder")
    ]
    assert {row.state for row in selectors.adjudication_rows(queue=queue)} == {"resolved"}


def test_resolved_items_are_not_offered_to_more_annotators(project, owner, make_trace, ann, bob):
    make_trace()
    queue = _queue(project, owner, overlap=2)
    _answer(queue, ann, 2)
    services.item_resolve(item=QueueItem.objects.get(queue=queue), user=owner, step_index=2)
    assert services.annotation_claim(queue=queue, user=bob) is None


def test_the_agreement_report_counts_pairs_alpha_and_judge_versus_human(
    project, owner, make_trace, make_verdict, ann, bob
):
    traces = [make_trace(steps=8) for _ in range(3)]
    queue = _queue(project, owner, overlap=2, step_tolerance=1)
    for user, steps in ((ann, (2, 5, 7)), (bob, (2, 6, 1))):
        for step in steps:
            _answer(queue, user, step)
    make_verdict(traces[0], "heuristic", "Checker", 2)
    make_verdict(traces[1], "heuristic", "Planner", 3)
    report = selectors.agreement_report(queue=queue)
    assert report["items_paired"] == 3
    assert report["overall"]["pairs"] == 3
    assert report["overall"]["step_exact"] == pytest.approx(1 / 3)
    assert report["overall"]["step_within"] == pytest.approx(2 / 3)
    assert report["alpha_agent"] is not None and report["alpha_step"] is not None
    people = {p["user"].username: p for p in report["annotators"]}
    assert people["ann"]["answered"] == 3 and people["bob"]["pairs"] == 3
    # ann's agents Checker, Checker, Coder against bob's Checker, Planner, Coder: p_o 2/3, p_e 1/3 -> kappa 0.5.
    assert people["ann"]["kappa_agent"] == pytest.approx(0.5)
    # Only trace 0 has a human majority (both said step 2); the heuristic got it right.
    (row,) = report["methods"]
    assert (row["method"], row["n"], row["agent"], row["step_exact"]) == ("heuristic", 1, 1.0, 1.0)


def test_the_export_page_says_which_answers_are_not_gold_labels_yet(project, owner, make_trace, ann, client):
    from django.urls import reverse

    make_trace()
    queue = _queue(project, owner, name="Check them", overlap=1)
    copy = services.annotation_claim(queue=queue, user=ann)
    services.annotation_submit(annotation=copy, user=ann, step_index=1)
    assert selectors.answers_not_gold(project=project) == [
        {"queue_id": queue.pk, "items": 1, "name": "Check them"}
    ]
    client.force_login(owner)
    page = client.get(reverse("annotations:export_builder", args=[project.slug])).content.decode()
    assert "Answers from review queues count once they are gold labels" in page
    assert f'href="{reverse("annotations:adjudication", args=[queue.pk])}">Check them</a> (1 item)' in page
    services.queue_accept_unanimous(queue=queue, user=owner)
    assert selectors.answers_not_gold(project=project) == []
