"""Fetch-and-authorize for views, in one call each (the healthchecks ``_get_check_for_user`` habit).

``project_for(request, slug, role)`` returns the user's membership of a project; ``object_for(request, Model, pk,
role)`` returns an object of one of the user's projects with that membership, in a single query (the membership
rides along through a ``FilteredRelation`` join instead of a second ``Membership.objects.get``).

Status codes are the authorization matrix's (tests/test_authorization_matrix.py): an object or project the user is
not a member of answers 404, exactly as if it did not exist, so ids of other projects leak nothing; a member whose
role is too low gets 403.
"""

from __future__ import annotations

from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import FilteredRelation, Model, Q, QuerySet
from django.http import Http404, HttpRequest

from . import selectors
from .models import Membership, Role, Trace

M = TypeVar("M", bound=Model)

# Each role may do what the roles below it may: viewers read, annotators also upload and label, owners manage.
_RANK = {Role.VIEWER: 0, Role.ANNOTATOR: 1, Role.OWNER: 2}


def require_role(membership: Membership, role: str, denied: str = "") -> Membership:
    """``membership`` if its role is at least ``role``; 403 otherwise."""
    if _RANK[Role(membership.role)] < _RANK[Role(role)]:
        raise PermissionDenied(denied or f"This needs the {Role(role).label.lower()} role in the project")
    return membership


def project_for(request: HttpRequest, slug: str, role: str = Role.VIEWER, denied: str = "") -> Membership:
    """The user's membership of project ``slug`` (project selected along); 404 for a non-member, 403 below ``role``."""
    return require_role(selectors.membership_for_user(user=request.user, slug=slug), role, denied)


def object_for(
    request: HttpRequest,
    queryset_or_model: type[M] | QuerySet[M],
    pk: int,
    role: str = Role.VIEWER,
    *,
    via: str = "project",
    denied: str = "",
    missing: str = "Not found",
) -> tuple[M, Membership]:
    """The object ``pk`` and the user's membership of its project, reached through the relation path ``via``
    (``"trace__project"`` for a verdict). One query: the project is selected along and the membership joined in, so
    a non-member's request finds no row (404) and a member's carries its role (403 below ``role``)."""
    queryset = (
        queryset_or_model.all()
        if isinstance(queryset_or_model, QuerySet)
        else queryset_or_model._default_manager
    )
    obj = (
        queryset.annotate(
            _membership=FilteredRelation(
                f"{via}__memberships", condition=Q(**{f"{via}__memberships__user": request.user})
            )
        )
        .select_related(via, "_membership")
        .filter(pk=pk, _membership__isnull=False)
        .first()
    )
    if obj is None:
        raise Http404(missing)
    membership: Membership = obj._membership
    project = obj
    for step in via.split("__"):
        project = getattr(project, step)
    # Already loaded with the object: saves the query ``membership.project`` would make.
    Membership.project.field.set_cached_value(membership, project)
    return obj, require_role(membership, role, denied)


def trace_for(
    request: HttpRequest, trace_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[Trace, Membership]:
    return object_for(
        request,
        Trace.objects.select_related("upload"),
        trace_id,
        role,
        denied=denied,
        missing="No such trace",
    )
