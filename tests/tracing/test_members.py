from __future__ import annotations

import pytest
from django.urls import reverse

from tracing import services
from tracing.models import Membership, Role

pytestmark = pytest.mark.django_db


def _url(project) -> str:
    return reverse("tracing:project_members", args=[project.slug])


def test_an_owner_adds_changes_and_removes_a_member(owner_client, project, make_user):
    ann = make_user("ann")
    assert owner_client.post(_url(project), {"username": "ann", "role": "annotator"}).status_code == 302
    assert Membership.objects.get(project=project, user=ann).role == Role.ANNOTATOR
    owner_client.post(_url(project), {"username": "ann", "role": "viewer"})
    assert Membership.objects.get(project=project, user=ann).role == Role.VIEWER
    owner_client.post(_url(project), {"username": "ann", "role": "viewer", "remove": "1"})
    assert not Membership.objects.filter(project=project, user=ann).exists()


def test_adding_an_unknown_user_is_a_form_error(owner_client, project):
    response = owner_client.post(_url(project), {"username": "ghost", "role": "viewer"})
    assert response.status_code == 400
    assert "There is no user called &#x27;ghost&#x27;." in response.content.decode()


def test_the_last_owner_cannot_leave_or_step_down(owner_client, project, owner):
    response = owner_client.post(_url(project), {"username": owner.username, "role": "viewer"})
    assert response.status_code == 400
    assert "at least one owner" in response.content.decode()
    assert Membership.objects.get(project=project, user=owner).role == Role.OWNER


def test_a_viewer_sees_members_but_cannot_change_them(client, project, make_user):
    viewer = make_user("vic")
    services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(_url(project)).status_code == 200
    assert client.post(_url(project), {"username": "vic", "role": "owner"}).status_code == 403
    assert Membership.objects.get(project=project, user=viewer).role == Role.VIEWER


def test_a_stranger_gets_404(client, project, make_user):
    client.force_login(make_user("eve"))
    assert client.get(_url(project)).status_code == 404
