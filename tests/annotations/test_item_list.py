"""A queue's item list (status, annotators, lease expiry, agreement, filters) and the imported gold shown to the
owner who adjudicates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import selectors, services
from annotations.models import Annotation, QueueItem
from attribution import taxonomy

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _answer(queue, user, step, agent=""):
    copy = services.annotation_claim(queue=queue, user=user)
    assert copy is not None
    services.annotation_submit(annotation=copy, user=user, step_index=step, agent_name=agent)
    return copy


def _rows(page_html: str) -> int:
    return page_html.count('class="item-row ')


@pytest.fixture
def busy_queue(project, owner, make_trace, ann, bob):
    """Four traces: one both agree on, one they split on, one ann holds right now, one nobody touched."""
    traces = [make_trace(steps=6) for _ in range(4)]
    queue = services.queue_create(project=project, user=owner, name="Triage", source="no_gold", overlap=2)
    items = {i.trace_id: i for i in QueueItem.objects.filter(queue=queue)}
    for user, steps in ((ann, (2, 1)), (bob, (2, 4))):
        for step in steps:
            _answer(queue, user, step)
    held = services.annotation_claim(queue=queue, user=ann)
    assert held.item.trace_id == traces[2].pk
    return queue, traces, items, held


def test_the_queue_page_lists_every_item_with_status_annotators_lease_and_agreement(busy_queue, owner):
    queue, traces, _items, held = busy_queue
    response = _client(owner).get(reverse("annotations:queue_detail", args=[queue.pk]))
    page = response.content.decode()
    assert response.status_code == 200 and _rows(page) == 4
    assert all(t.name in page for t in traces)
    rows = {
        row.item.trace_id: row for row in selectors.queue_items(queue=queue, filters=selectors.ItemFilters())
    }
    assert rows[traces[0].pk].status == "answered" and rows[traces[0].pk].agreement == "agree"
    assert rows[traces[1].pk].agreement == "disagree"
    assert rows[traces[2].pk].status == "in_progress"
    assert rows[traces[2].pk].lease_expires_at == Annotation.objects.get(pk=held.pk).lease_expires_at
    assert rows[traces[3].pk].status == "waiting" and rows[traces[3].pk].copies == []
    assert [c.state for c in rows[traces[2].pk].copies] == ["holds it"]
    assert 'ann <span class="muted">holds it</span>' in page
    assert "left)" in page  # the lease's remaining time


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "answered"}, {0, 1}),
        ({"status": "in_progress"}, {2}),
        ({"status": "waiting"}, {3}),
        ({"status": "disagree"}, {1}),
        ({"agreement": "agree"}, {0}),
        ({"assignee": "bob"}, {0, 1}),
        ({"assignee": "ann", "status": "in_progress"}, {2}),
    ],
)
def test_the_item_list_filters_by_status_agreement_and_annotator(busy_queue, owner, params, expected):
    queue, traces, _items, _held = busy_queue
    page = _client(owner).get(reverse("annotations:queue_detail", args=[queue.pk]), params).content.decode()
    assert {i for i, t in enumerate(traces) if f">{t.name}</a>" in page} == expected
    assert _rows(page) == len(expected)


def test_a_lease_that_ran_out_is_no_longer_in_progress(busy_queue):
    queue, traces, _items, held = busy_queue
    Annotation.objects.filter(pk=held.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    rows = {r.item.trace_id: r for r in selectors.queue_items(queue=queue, filters=selectors.ItemFilters())}
    assert rows[traces[2].pk].status == "waiting" and rows[traces[2].pk].lease_expires_at is None
    assert [c.state for c in rows[traces[2].pk].copies] == ["lease ran out"]


def test_an_unknown_status_is_rejected_with_a_message(busy_queue, owner):
    queue, *_ = busy_queue
    response = _client(owner).get(reverse("annotations:queue_detail", args=[queue.pk]), {"status": "bogus"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_trace_names_in_the_item_list_are_escaped(project, owner, make_trace):
    trace = make_trace()
    trace.name = "<script>alert(1)</script>"
    trace.save(update_fields=["name"])
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    page = _client(owner).get(reverse("annotations:queue_detail", args=[queue.pk])).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_adjudication_shows_the_imported_gold_beside_the_answers(project, owner, make_trace, ann, bob):
    trace = make_trace(steps=8, gold_step=5)
    queue = services.queue_create(
        project=project, user=owner, name="Check gold", source="search", filter={"q": "", "gold": "yes"}
    )
    _answer(queue, ann, 2, agent="Coder")
    _answer(queue, bob, 3, agent="Planner")
    item = QueueItem.objects.get(queue=queue, trace=trace)
    client = _client(owner)
    overview = client.get(reverse("annotations:adjudication", args=[queue.pk])).content.decode()
    assert 'class="gold-ref"><div>Checker at step 5' in overview
    page = client.get(reverse("annotations:adjudicate_item", args=[item.pk])).content.decode()
    assert 'id="reference-gold"' in page and "Imported</strong>: Checker at step 5" in page
    assert f'href="/traces/{trace.pk}/?step=5#step-5"' in page  # the gold step is shown with the named ones
    # The owner takes the imported gold as the answer.
    response = client.post(
        reverse("annotations:adjudicate_item", args=[item.pk]),
        {"step_index": 5, "agent_name": "Checker", "category": "", "reason": ""},
    )
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.resolved_label.step_index, item.resolved_label.source) == (5, "adjudicated")


def test_categories_show_their_human_names_on_the_review_pages(project, owner, make_trace, ann, bob):
    make_trace(steps=6)
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    for user, step in ((ann, 1), (bob, 3)):
        copy = services.annotation_claim(queue=queue, user=user)
        services.annotation_submit(
            annotation=copy, user=user, step_index=step, category="action.misalignment"
        )
    page = _client(owner).get(reverse("annotations:adjudication", args=[queue.pk])).content.decode()
    assert "Action: did something other than it planned (misalignment)" in page
    assert "action.misalignment</span>" not in page


def test_every_taxonomy_category_has_a_human_name():
    assert all(c.name and c.name != c.code for c in taxonomy.CATEGORIES.values())
    assert (
        taxonomy.human_name("action.misalignment")
        == "Action: did something other than it planned (misalignment)"
    )
    assert taxonomy.human_name("mast.2.6") == "Acted against its own reasoning (MAST 2.6)"
    assert taxonomy.human_name("custom.bad_call") == "Custom: bad call"  # unknown codes still read as words
    assert dict(taxonomy.choices("mast"))["mast.1.3"] == "Repeated a step (MAST 1.3)"
