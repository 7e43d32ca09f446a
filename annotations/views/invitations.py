"""Inviting people (owners only) and accepting an invitation (anyone holding the link).

The link's token appears once, in the answer to the owner's POST, as an API token does; it is never stored."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from tracing.models import Membership, Role
from tracing.services import LastOwnerError

from .. import access, selectors, services
from ..forms import AcceptInvitationForm, InviteForm


def _owner_membership(request: HttpRequest, slug: str) -> Membership:
    return access.project_for(request, slug, Role.OWNER, "Only owners invite people")


@login_required
@require_http_methods(["GET", "POST"])
def invitations(request: HttpRequest, slug: str) -> HttpResponse:
    membership = _owner_membership(request, slug)
    project = membership.project
    if request.method == "POST" and request.POST.get("revoke"):
        invitation = selectors.invitation_of(project=project, invitation_id=_int(request.POST["revoke"]))
        if services.invitation_revoke(invitation=invitation, actor=request.user):
            messages.success(
                request, f"The invitation of {invitation.invitee} is revoked; its link no longer works."
            )
        return redirect("annotations:invitations", slug=slug)
    form = InviteForm(request.POST or None, project=project)
    result = None
    if request.method == "POST" and form.is_valid():
        accept_url = request.build_absolute_uri(reverse("annotations:invitation_accept", args=["TOKEN"]))
        try:
            result = services.invitation_create(
                project=project,
                invited_by=request.user,
                role=form.cleaned_data["role"],
                who=form.cleaned_data["who"],
                accept_url=accept_url.replace("TOKEN", "{token}"),
            )
        except LastOwnerError as exc:
            form.add_error(None, str(exc))
        if result is not None and result.membership is not None:
            messages.success(
                request,
                f"{result.membership.user.get_username()} already had an account and is now "
                f"{result.membership.get_role_display().lower()} of {project.name}.",
            )
            return redirect("tracing:project_members", slug=slug)
    link = ""
    if result is not None and result.token:
        link = request.build_absolute_uri(reverse("annotations:invitation_accept", args=[result.token]))
        form = InviteForm(project=project)  # done: an empty form for the next person
    context = {
        "project": project,
        "membership": membership,
        "form": form,
        "link": link,
        "invitation": result.invitation if result else None,
        "pending": selectors.invitations_open(project=project),
        "days": services.INVITATION_DAYS,
    }
    return render(request, "annotations/invitations.html", context, status=400 if form.errors else 200)


def _int(value: str) -> int:
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else 0


@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """Anyone holding the link may use it once: choose a password, get an account and the invited role."""
    try:
        invitation = services.invitation_for_token(token)
    except services.InvitationError as exc:
        return render(request, "annotations/invitation_accept.html", {"error": str(exc)}, status=404)
    form = AcceptInvitationForm(request.POST or None, invitation=invitation)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.invitation_accept(
                token=token, username=form.cleaned_data["username"], password=form.cleaned_data["password1"]
            )
        except services.InvitationError as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(
                request,
                f"Welcome, {user.get_username()}: you are now "
                f"{invitation.get_role_display().lower()} of {invitation.project.name}.",
            )
            return redirect("annotations:queue_list", slug=invitation.project.slug)
    context = {"invitation": invitation, "form": form}
    return render(request, "annotations/invitation_accept.html", context, status=400 if form.errors else 200)
