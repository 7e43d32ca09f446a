"""The agreement page draws each annotator's agreement as bars, on the server, with every name escaped."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from annotations.models import ReviewQueue
from tests.annotations.test_views import _client, _create_queue, _label_next
from tracing import services as tracing_services

pytestmark = pytest.mark.django_db


def test_each_annotator_gets_agreement_bars_and_hostile_names_are_escaped(project, owner, make_trace, ann):
    hostile = get_user_model().objects.create_user(username="<svg/onload=x>", password="pw-for-tests-1")
    tracing_services.membership_set(project=project, user=hostile, role="annotator")
    make_trace(steps=8), make_trace(steps=8)
    owner_client = _client(owner)
    assert _create_queue(owner_client, project).status_code == 302
    queue = ReviewQueue.objects.get(project=project, name="Triage")
    for client, steps in ((_client(ann), (3, 1)), (_client(hostile), (3, 6))):
        for step in steps:
            _label_next(client, queue, step, category="action.invalid_action", reason="r")
    body = owner_client.get(reverse("annotations:agreement", args=[queue.pk])).content.decode()
    bars = body.split('<figure class="accuracy-chart agreement-bars">', 1)[1].split("</figure>", 1)[0]
    assert bars.count('<g class="agreement-row"') == 2
    # Each agrees with the other on the agent of one item in two, and on the step of one item in two: half a bar.
    assert bars.count('<title>same agent 50.0%</title><rect x="160" y="2" width="150" height="12"/>') == 2
    assert bars.count('<title>same step 50.0%</title><rect x="160" y="16" width="150" height="12"/>') == 2
    assert "<svg/onload" not in body and "&lt;svg/onload=x&gt;" in bars
    assert "style=" not in bars
