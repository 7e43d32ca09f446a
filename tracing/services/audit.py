"""The audit log: one row per security-relevant change, written by the service that makes it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from ..models import AuditEvent, Project


def audit_record(
    *,
    action: str,
    project: Project | None = None,
    actor: AbstractBaseUser | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    authenticated = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent.objects.create(
        project=project,
        actor=actor if authenticated else None,
        actor_name=actor.get_username()[:150] if authenticated else "",
        action=action[:60],
        target=target[:300],
        details=details or {},
    )
