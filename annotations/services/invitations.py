"""Inviting people into a project without the Django admin.

An owner names a person by username or e-mail. Someone who already has an account is added at once (through tracing's
membership service, which keeps the audit log); anyone else gets a one-time link. Only the SHA-256 of the link's
token is stored. Accepting claims the invitation with a conditional UPDATE (``accepted_at IS NULL``, not revoked, not
expired) and checks the row count, so two clicks on one link -- or two people sharing it -- create one account."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from tracing.models import Membership, Project
from tracing.services import audit_record, membership_change

from ..models import Invitation

log = logging.getLogger(__name__)

# Long enough to reach someone back from a week away, short enough that a forgotten link dies on its own.
INVITATION_DAYS = 7


class InvitationError(Exception):
    """The invitation cannot be used (unknown, used, revoked or expired) or the name is taken."""


@dataclass
class InviteResult:
    membership: Membership | None = None  # an existing account, added at once
    invitation: Invitation | None = None  # a new person: the link below, shown once
    token: str = ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _existing_user(who: str) -> AbstractBaseUser | None:
    User = get_user_model()
    users = list(User.objects.filter(Q(username__iexact=who) | (Q(email__iexact=who) & ~Q(email="")))[:2])
    exact = [u for u in users if u.get_username() == who]
    return exact[0] if exact else (users[0] if len(users) == 1 else None)


def invitation_create(
    *, project: Project, invited_by: AbstractBaseUser, who: str, role: str, accept_url: str = ""
) -> InviteResult:
    """Add ``who`` if they have an account, else make a one-time link for them. ``accept_url`` (with ``{token}``)
    is mailed when ``who`` is an address; the link is also returned so the owner can pass it on."""
    who = who.strip()
    user = _existing_user(who)
    if user is not None:
        return InviteResult(
            membership=membership_change(
                project=project, username=user.get_username(), role=role, actor=invited_by
            )
        )
    token = secrets.token_urlsafe(32)
    is_email = "@" in who
    invitation = Invitation.objects.create(
        project=project,
        username="" if is_email else who,
        email=who if is_email else "",
        role=role,
        token_hash=token_hash(token),
        invited_by=invited_by,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    audit_record(
        action="invitation.created",
        project=project,
        actor=invited_by,
        target=who,
        details={"role": role, "invitation": invitation.pk},
    )
    if is_email and accept_url:
        _mail(invitation, project, accept_url.format(token=token))
    return InviteResult(invitation=invitation, token=token)


def _mail(invitation: Invitation, project: Project, link: str) -> None:
    # Outside any transaction (no network I/O inside one); a failed mail is not a failed invitation: the owner
    # still sees the link.
    try:
        send_mail(
            f"You are invited to {project.name} on Culprit",
            f"Follow this link within {INVITATION_DAYS} days to choose a password and join {project.name} "
            f"as {invitation.get_role_display().lower()}:\n\n{link}\n",
            None,
            [invitation.email],
        )
    except Exception:  # noqa: BLE001 - any mail transport error; the link is shown to the owner anyway
        log.warning("could not mail invitation %s", invitation.pk, exc_info=True)


def invitation_for_token(token: str) -> Invitation:
    invitation = (
        Invitation.objects.select_related("project", "invited_by")
        .filter(token_hash=token_hash(token or ""))
        .first()
    )
    if invitation is None or invitation.accepted_at or invitation.revoked_at:
        raise InvitationError(
            "This invitation link is not valid any more. Ask the project's owner for a new one."
        )
    if invitation.expires_at <= timezone.now():
        raise InvitationError("This invitation link has expired. Ask the project's owner for a new one.")
    return invitation


def invitation_accept(*, token: str, username: str, password: str, email: str = "") -> AbstractBaseUser:
    """Create the person's account and membership; the link is spent. The password must already have passed
    Django's validators (the form does that, with the username it will belong to)."""
    User = get_user_model()
    now = timezone.now()
    with transaction.atomic():
        invitation = invitation_for_token(token)
        claimed = Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
        ).update(accepted_at=now)
        if claimed != 1:
            raise InvitationError(
                "This invitation link is not valid any more. Ask the project's owner for a new one."
            )
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    username=username, email=email or invitation.email, password=password
                )
        except IntegrityError as exc:
            raise InvitationError("That username is taken; choose another.") from exc
        Membership.objects.create(project=invitation.project, user=user, role=invitation.role)
        Invitation.objects.filter(pk=invitation.pk).update(accepted_by=user)
        audit_record(
            action="invitation.accepted",
            project=invitation.project,
            actor=user,
            target=username,
            details={"role": invitation.role, "invitation": invitation.pk},
        )
    return user


def invitation_revoke(*, invitation: Invitation, actor: AbstractBaseUser) -> bool:
    revoked = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    if revoked:
        audit_record(
            action="invitation.revoked",
            project=invitation.project,
            actor=actor,
            target=invitation.invitee,
            details={"invitation": invitation.pk},
        )
    return bool(revoked)
