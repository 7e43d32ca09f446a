"""Projects and memberships."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.text import slugify

from ..models import Membership, Project, Role


def project_create(*, name: str, owner: AbstractBaseUser | None = None, description: str = "") -> Project:
    base = slugify(name)[:120] or "project"
    slug, n = base, 1
    while Project.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    with transaction.atomic():
        project = Project.objects.create(name=name.strip(), slug=slug, description=description)
        if owner is not None:
            Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


def project_get_or_create(*, name: str, owner: AbstractBaseUser | None = None) -> tuple[Project, bool]:
    existing = Project.objects.filter(name=name.strip()).first()
    if existing:
        return existing, False
    return project_create(name=name, owner=owner), True


def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


class LastOwnerError(Exception):
    """A project must keep at least one owner, or nobody could manage it any more."""


def membership_change(
    *, project: Project, username: str, role: str | None, actor: AbstractBaseUser | None = None
) -> Membership | None:
    """Add, re-role (``role``) or remove (``role=None``) a member, refusing to leave the project without an owner.
    Every change is written to the audit log."""
    from django.contrib.auth import get_user_model

    from .audit import audit_record

    user = get_user_model().objects.get(username=username)
    with transaction.atomic():
        before = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
        # Lock the owners in a fixed order so two concurrent demotions cannot both pass the check below.
        owners = list(
            Membership.objects.select_for_update().filter(project=project, role=Role.OWNER).order_by("pk")
        )
        if role != Role.OWNER and [m.user_id for m in owners] == [user.pk]:
            raise LastOwnerError("A project needs at least one owner; make someone else owner first.")
        if role is None:
            Membership.objects.filter(project=project, user=user).delete()
            if before is not None:
                audit_record(
                    action="membership.removed",
                    project=project,
                    actor=actor,
                    target=username,
                    details={"role": before},
                )
            return None
        membership = membership_set(project=project, user=user, role=role)
        if before != role:
            audit_record(
                action="membership.added" if before is None else "membership.changed",
                project=project,
                actor=actor,
                target=username,
                details={"role": role, "before": before},
            )
        return membership
