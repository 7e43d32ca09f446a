"""Reads for invitations: a project's open ones, for its owners."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from tracing.models import Project

from ..models import Invitation


def invitations_open(*, project: Project) -> QuerySet[Invitation]:
    """Invitations not yet accepted, revoked or expired, newest first."""
    return Invitation.objects.filter(
        project=project, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).select_related("invited_by")
