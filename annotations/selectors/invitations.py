"""Reads for invitations: a project's open ones, for its owners."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from tracing.models import Project

from ..models import Invitation


def invitations_open(*, project: Project) -> QuerySet[Invitation]:
    """Invitations not yet accepted, revoked or expired, newest first."""
    return Invitation.objects.filter(
        project=project, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).select_related("invited_by")


def invitation_of(*, project: Project, invitation_id: int) -> Invitation:
    """The project's invitation ``invitation_id``; 404 for another project's (or no) invitation."""
    invitation = Invitation.objects.filter(project=project, pk=invitation_id).first()
    if invitation is None:
        raise Http404("No such invitation")
    return invitation
