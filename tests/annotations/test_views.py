"""The review pages through Django's test client: permissions, labelling, agreement and adjudication end to end."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotations import services
from annotations.models import Annotation, CopyStatus, QueueItem, ReviewQueue
from tracing.models import GoldLabel, Role

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _create_queue(client, project, **extra):
    data = {
        "name": "Triage",
        "source": "no_gold",
        "limit": 100,
        "overlap": 2,
        "assignment": "anyone",
        "taxonomy": "agent_error_taxonomy",
        "step_tolerance": 1,
        "instructions": "Blame the first wrong step.",
        **extra,
    }
    return client.post(reverse("annotations:queue_list", args=[project.slug]), data)


def _label_next(client, queue, step, agent="", category="", reason=""):
    response = client.get(reverse("annotations:queue_next", args=[queue.pk]))
    assert response.status_code == 302, response
    url = response["Location"]
    page = client.get(url)
    assert page.status_code == 200
    return client.post(
        url,
        {
            "step_index": step,
            "agent_name": agent,
            "category": category,
            "reason": reason,
            "lead_time_ms": 4200,
        },
    )


def test_two_annotators_label_agreement_shows_it_and_an_owner_adjudicates(
    project, owner, make_trace, ann, bob
):
    agreed, split = make_trace(steps=8), make_trace(steps=8)
    owner_client, ann_client, bob_client = _client(owner), _client(ann), _client(bob)
    assert _create_queue(owner_client, project).status_code == 302
    queue = ReviewQueue.objects.get(project=project, name="Triage")
    assert queue.items.count() == 2

    for client, steps in ((ann_client, (3, 1)), (bob_client, (3, 6))):
        for step in steps:
            response = _label_next(client, queue, step, category="action.invalid_action", reason="wrong call")
            assert response.status_code == 302 and response["Location"].endswith(f"/queues/{queue.pk}/next/")
    done = ann_client.get(reverse("annotations:queue_next", args=[queue.pk]), follow=True)
    assert "Nothing left for you" in done.content.decode()
    assert Annotation.objects.filter(queue=queue, status=CopyStatus.SUBMITTED).count() == 4
    assert set(Annotation.objects.filter(queue=queue).values_list("lead_time_ms", flat=True)) == {4200}

    page = owner_client.get(reverse("annotations:agreement", args=[queue.pk])).content.decode()
    assert 'id="agent-agreement">50.0%' in page  # Planner/Planner on one item, Coder/Planner on the other
    assert 'id="step-agreement">50.0%' in page
    assert "ann" in page and "bob" in page

    adjudication = owner_client.get(reverse("annotations:adjudication", args=[queue.pk])).content.decode()
    assert split.name in adjudication and "Accept 1 as gold labels" in adjudication
    owner_client.post(reverse("annotations:adjudication", args=[queue.pk]))
    assert GoldLabel.objects.get(trace=agreed).source == "annotator"

    item = QueueItem.objects.get(queue=queue, trace=split)
    response = owner_client.post(
        reverse("annotations:adjudicate_item", args=[item.pk]),
        {"step_index": 6, "agent_name": "", "category": "", "reason": "bob is right"},
    )
    assert response.status_code == 302
    gold = GoldLabel.objects.get(trace=split)
    assert (gold.source, gold.agent_name, gold.step_index, gold.created_by) == (
        "adjudicated",
        "Planner",
        6,
        owner,
    )
    # The trace page now shows the adjudicated label.
    assert (
        "adjudicated" in owner_client.get(reverse("tracing:trace_detail", args=[split.pk])).content.decode()
    )


def test_viewers_cannot_label_or_create_queues_and_annotators_cannot_adjudicate(
    project, owner, make_trace, viewer, ann
):
    make_trace()
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    viewer_client = _client(viewer)
    assert viewer_client.get(reverse("annotations:queue_next", args=[queue.pk])).status_code == 403
    assert viewer_client.get(reverse("annotations:agreement", args=[queue.pk])).status_code == 200
    assert _create_queue(viewer_client, project, name="Mine").status_code == 403
    copy = services.annotation_claim(queue=queue, user=owner)
    assert (
        viewer_client.post(reverse("annotations:label", args=[copy.pk]), {"step_index": 0}).status_code == 403
    )
    assert _client(ann).get(reverse("annotations:adjudication", args=[queue.pk])).status_code == 403


def test_another_projects_queue_is_not_found(project, owner, make_trace, make_user, make_project):
    make_trace()
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    stranger = make_user("stranger")
    make_project("Other", {stranger: Role.OWNER})
    client = _client(stranger)
    for name in ("queue_detail", "queue_next", "agreement", "adjudication"):
        assert client.get(reverse(f"annotations:{name}", args=[queue.pk])).status_code == 404
    item = QueueItem.objects.get(queue=queue)
    assert client.get(reverse("annotations:adjudicate_item", args=[item.pk])).status_code == 404
    assert client.get(reverse("annotations:label", args=[item.copies.first().pk])).status_code == 404


def test_someone_elses_copy_sends_you_to_your_own(project, owner, make_trace, ann, bob):
    make_trace()
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    copy = services.annotation_claim(queue=queue, user=ann)
    response = _client(bob).get(reverse("annotations:label", args=[copy.pk]))
    assert response.status_code == 302 and response["Location"].endswith(f"/queues/{queue.pk}/next/")


def test_the_labelling_page_shows_verdicts_unless_blind_and_escapes_trace_text(
    project, owner, make_trace, make_verdict, ann
):
    trace = make_trace(content="<script>alert(1)</script>")
    make_verdict(trace, "heuristic", "Coder", 1)
    open_queue = services.queue_create(project=project, user=owner, name="open", source="no_gold")
    blind_queue = services.queue_create(
        project=project, user=owner, name="blind", source="no_gold", blind=True
    )
    client = _client(ann)
    page = client.get(reverse("annotations:queue_next", args=[open_queue.pk]), follow=True).content.decode()
    assert "heuristic blames this step" in page and "What the methods say" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page.replace('<script src="/static/', "")  # no inline script (CSP)
    blind = client.get(reverse("annotations:queue_next", args=[blind_queue.pk]), follow=True).content.decode()
    assert "heuristic" not in blind and "What the methods say" not in blind


def test_the_labelling_page_says_how_far_the_labeller_is(project, owner, make_trace, ann, bob):
    for _ in range(3):
        make_trace()
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold", overlap=1)
    client = _client(ann)
    page = client.get(reverse("annotations:queue_next", args=[queue.pk]), follow=True).content.decode()
    assert "2 more after this one" in page and "answered by you" not in page
    _label_next(client, queue, step=1)
    # Bob holds the third item: it is not open to Ann any more.
    services.annotation_claim(queue=queue, user=bob)
    page = client.get(reverse("annotations:queue_next", args=[queue.pk]), follow=True).content.decode()
    assert "1 answered by you" in page and "the last one for you" in page


def test_an_annotator_changes_their_last_answer_until_an_owner_decides_the_item(
    project, owner, make_trace, ann, bob
):
    first = make_trace(steps=6)
    make_trace(steps=6)
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold", overlap=1)
    client = _client(ann)
    _label_next(client, queue, step=1, reason="first look")
    answer = Annotation.objects.get(annotator=ann, status=CopyStatus.SUBMITTED)
    assert answer.item.trace_id == first.pk
    # The next item's screen links back to it (key b).
    page = client.get(reverse("annotations:queue_next", args=[queue.pk]), follow=True).content.decode()
    edit = reverse("annotations:answer_edit", args=[answer.pk])
    assert f'href="{edit}"' in page and "Your last answer" in page
    # The answer comes back as it was given, further errors included; "Save" changes it in place.
    page = client.get(edit).content.decode()
    assert "Changing your answer" in page and "first look" in page and 'id="skip-form"' not in page
    response = client.post(
        edit,
        {
            "step_index": 4,
            "reason": "second look",
            "lead_time_ms": 1000,
            "error_step": ["2"],
            "error_agent": [""],
            "error_category": [""],
            "error_note": ["also wrong"],
        },
    )
    assert response.status_code == 302 and response["Location"].endswith(f"/queues/{queue.pk}/next/")
    answer.refresh_from_db()
    assert (answer.step_index, answer.agent_name, answer.reason) == (4, "Coder", "second look")
    assert answer.lead_time_ms == 4200 + 1000
    assert [(e.step_index, e.note) for e in answer.further_errors.all()] == [(2, "also wrong")]
    page = client.get(edit).content.decode()
    assert "also wrong" in page
    # The queue's item list offers the same to its annotator (and to nobody else).
    detail = reverse("annotations:queue_detail", args=[queue.pk])
    assert f'href="{edit}">change yours' in client.get(detail).content.decode()
    assert "change yours" not in _client(owner).get(detail).content.decode()
    # Someone else's answer is not theirs to change.
    assert _client(bob).get(edit).status_code == 302
    # Once an owner decides the item, the answer is part of that decision.
    services.item_resolve(item=answer.item, user=owner, step_index=4)
    response = client.post(edit, {"step_index": 5, "lead_time_ms": 0})
    assert response.status_code == 400 and "decided by an owner" in response.content.decode()
    answer.refresh_from_db()
    assert answer.step_index == 4
    assert "change yours" not in client.get(detail).content.decode()


def test_a_submission_without_a_step_is_refused_and_the_item_stays_yours(project, owner, make_trace, ann):
    make_trace()
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    client = _client(ann)
    url = client.get(reverse("annotations:queue_next", args=[queue.pk]))["Location"]
    response = client.post(url, {"step_index": "", "reason": "keep me"})
    assert response.status_code == 400 and "Mark the decisive step first" in response.content.decode()
    assert "keep me" in response.content.decode()
    assert Annotation.objects.get(annotator=ann).status == CopyStatus.LEASED


def test_large_traces_are_windowed_on_the_labelling_page(project, owner, make_trace, ann, settings):
    settings.CULPRIT_STEPS_PER_PAGE = 50
    make_trace(steps=500)
    queue = services.queue_create(project=project, user=owner, name="Q", source="no_gold")
    client = _client(ann)
    url = client.get(reverse("annotations:queue_next", args=[queue.pk]))["Location"]
    page = client.get(url + "?step=260").content.decode()
    assert 'id="step-260"' in page and 'id="step-249"' not in page and 'id="step-300"' not in page
    assert "page 6 of 10" in page


def test_a_trace_list_search_becomes_a_queue_from_a_prefilled_link(project, owner, make_trace):
    traces = [make_trace() for _ in range(3)]
    client = _client(owner)
    url = reverse("annotations:queue_list", args=[project.slug])
    page = client.get(url + f"?source=search&q={traces[2].name}&gold=no").content.decode()
    assert f'value="{traces[2].name}"' in page and '<option value="search" selected>' in page
    response = _create_queue(client, project, source="search", q=traces[2].name, gold="no", format="")
    assert response.status_code == 302
    queue = ReviewQueue.objects.get(project=project)
    assert list(queue.items.values_list("trace_id", flat=True)) == [traces[2].pk]
    assert queue.filter == {"limit": 100, "q": traces[2].name, "gold": "no", "format": ""}


def test_an_owner_changes_a_live_queues_settings_and_a_larger_overlap_adds_copies(
    client, project, owner, make_user
):
    from django.urls import reverse

    from annotations import services as queue_services
    from annotations.models import Annotation
    from tests.conftest import import_now, incoming_path, sample_file
    from tracing.models import Role
    from tracing.services import membership_set

    import_now(
        project, incoming_path(sample_file("Hand-Crafted")), incoming_path(sample_file("Algorithm-Generated"))
    )
    queue = queue_services.queue_create(
        project=project, user=owner, name="Q1", source="search", filter={"q": ""}, overlap=1
    )
    queue_services.queue_create(project=project, user=owner, name="Other", source="search", filter={"q": ""})
    url = reverse("annotations:queue_edit", args=[queue.pk])
    client.force_login(owner)
    assert client.get(url).status_code == 200
    form = {
        "name": "Renamed",
        "instructions": "Look at tool calls first.",
        "overlap": "2",
        "assignment": "anyone",
        "step_tolerance": "2",
        "lease_minutes": "10",
        "blind": "on",
    }
    assert client.post(url, form).status_code == 302
    queue.refresh_from_db()
    assert (queue.name, queue.overlap, queue.blind, queue.step_tolerance, queue.lease_seconds) == (
        "Renamed",
        2,
        True,
        2,
        600,
    )
    assert Annotation.objects.filter(queue=queue).count() == 2 * queue.items.count()
    shrink = client.post(url, {**form, "overlap": "1"})
    assert shrink.status_code == 400 and b"can grow but not shrink" in shrink.content
    clash = client.post(url, {**form, "name": "Other"})
    assert clash.status_code == 400 and b"already has a queue with that name" in clash.content
    annotator = make_user("annie")
    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    assert client.get(url).status_code == 403 and client.post(url, form).status_code == 403
