"""Owners invite people by username or e-mail with a one-time link; the link is stored hashed, works once, expires,
and the password it sets passes Django's validators."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import services
from annotations.models import Invitation
from tracing.models import AuditEvent, Membership, Role

pytestmark = pytest.mark.django_db
PASSWORD = "plum-harbour-78-kettle"


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _invite(client, project, who, role="annotator"):
    response = client.post(
        reverse("annotations:invitations", args=[project.slug]), {"who": who, "role": role}
    )
    match = re.search(r'id="invitation-url">([^<]+)</pre>', response.content.decode())
    return response, (match[1] if match else "")


def test_an_owner_invites_a_new_person_who_sets_a_password_and_joins(project, owner):
    response, link = _invite(_client(owner), project, "carol", role="annotator")
    assert response.status_code == 200 and link.startswith("http://testserver/annotations/invitations/")
    token = link.rstrip("/").rsplit("/", 1)[1]
    invitation = Invitation.objects.get(project=project)
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Invitation.objects.values().get())  # only the hash is stored
    assert (invitation.expires_at - timezone.now()).days == services.INVITATION_DAYS - 1

    guest = _client()
    page = guest.get(link)
    assert page.status_code == 200 and f"Join {project.name}" in page.content.decode()
    done = guest.post(link, {"username": "someone-else", "password1": PASSWORD, "password2": PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse(
        "annotations:queue_list", args=[project.slug]
    )
    carol = get_user_model().objects.get(
        username="carol"
    )  # the owner chose the name; the posted one is ignored
    assert carol.check_password(PASSWORD)
    assert Membership.objects.get(project=project, user=carol).role == Role.ANNOTATOR
    assert guest.get(reverse("tracing:trace_list", args=[project.slug])).status_code == 200  # signed in
    assert set(AuditEvent.objects.filter(project=project).values_list("action", flat=True)) >= {
        "invitation.created",
        "invitation.accepted",
    }
    # The link is spent.
    again = _client().post(link, {"password1": PASSWORD, "password2": PASSWORD})
    assert again.status_code == 404 and "not valid any more" in again.content.decode()


def test_an_invitation_by_e_mail_is_mailed_and_the_person_chooses_a_username(project, owner):
    response, link = _invite(_client(owner), project, "dana@example.org", role="viewer")
    assert response.status_code == 200
    assert len(mail.outbox) == 1 and link in mail.outbox[0].body and mail.outbox[0].to == ["dana@example.org"]
    form = _client().get(link).content.decode()
    assert 'value="dana"' in form  # suggested from the address
    _client().post(link, {"username": "dana_r", "password1": PASSWORD, "password2": PASSWORD})
    dana = get_user_model().objects.get(username="dana_r")
    assert dana.email == "dana@example.org"
    assert Membership.objects.get(project=project, user=dana).role == Role.VIEWER


def test_weak_or_mismatched_passwords_are_refused_with_django_validators(project, owner):
    _, link = _invite(_client(owner), project, "erin")
    guest = _client()
    weak = guest.post(link, {"password1": "erin", "password2": "erin"})
    body = weak.content.decode()
    assert weak.status_code == 400 and "too short" in body and "too similar to the username" in body
    assert (
        "too common"
        in guest.post(link, {"password1": "password123", "password2": "password123"}).content.decode()
    )
    mismatch = guest.post(link, {"password1": PASSWORD, "password2": PASSWORD + "x"})
    assert mismatch.status_code == 400 and "The two passwords differ." in mismatch.content.decode()
    assert not get_user_model().objects.filter(username="erin").exists()
    assert (
        Invitation.objects.get(project=project).accepted_at is None
    )  # a refused try does not spend the link


def test_expired_revoked_and_forged_links_do_not_work(project, owner):
    client = _client(owner)
    _, expired = _invite(client, project, "fay")
    Invitation.objects.filter(username="fay").update(expires_at=timezone.now() - timedelta(seconds=1))
    page = _client().get(expired)
    assert page.status_code == 404 and "expired" in page.content.decode()
    _, revoked = _invite(client, project, "gus")
    pk = Invitation.objects.get(username="gus").pk
    assert (
        client.post(reverse("annotations:invitations", args=[project.slug]), {"revoke": pk}).status_code
        == 302
    )
    assert _client().get(revoked).status_code == 404
    assert _client().get(reverse("annotations:invitation_accept", args=["forged-token"])).status_code == 404
    assert not get_user_model().objects.filter(username__in=["fay", "gus"]).exists()


def test_an_existing_account_is_added_at_once_and_a_member_cannot_be_invited_twice(project, owner, make_user):
    hal = make_user("hal")
    hal.email = "hal@example.org"
    hal.save()
    client = _client(owner)
    response = client.post(
        reverse("annotations:invitations", args=[project.slug]), {"who": "HAL@example.org", "role": "viewer"}
    )
    assert response.status_code == 302 and not Invitation.objects.exists()
    assert Membership.objects.get(project=project, user=hal).role == Role.VIEWER
    again, _ = _invite(client, project, "hal")
    assert again.status_code == 400 and "already a member" in again.content.decode()
    _invite(client, project, "ivy")
    twice, _ = _invite(client, project, "IVY")
    assert twice.status_code == 400 and "already has an open invitation" in twice.content.decode()
    bad, _ = _invite(client, project, "no spaces allowed")
    assert bad.status_code == 400 and "Enter a valid username" in bad.content.decode()


def test_only_owners_invite(project, owner, make_user):
    from tracing.services import membership_set

    annotator = make_user("ann")
    membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    response, _ = _invite(_client(annotator), project, "jo")
    assert response.status_code == 403 and not Invitation.objects.exists()


def test_a_taken_username_is_refused_on_the_accept_page(project, owner, make_user):
    _, link = _invite(_client(owner), project, "kim@example.org")
    make_user("kim")
    response = _client().post(link, {"username": "KIM", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 400 and "That username is taken" in response.content.decode()


def test_two_acceptances_of_one_link_create_one_account(project, owner):
    _, link = _invite(_client(owner), project, "lee")
    token = link.rstrip("/").rsplit("/", 1)[1]
    services.invitation_accept(token=token, username="lee", password=PASSWORD)
    with pytest.raises(services.InvitationError):
        services.invitation_accept(token=token, username="lee2", password=PASSWORD)
    assert get_user_model().objects.filter(username__startswith="lee").count() == 1


def test_the_members_page_links_to_invitations_instead_of_the_admin(project, owner):
    page = _client(owner).get(reverse("tracing:project_members", args=[project.slug])).content.decode()
    assert (
        reverse("annotations:invitations", args=[project.slug]) in page
        and "/admin/" not in page.split("<main")[1]
    )
