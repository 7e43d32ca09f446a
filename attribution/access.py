"""Fetch-and-authorize for the attribution pages: one call returns the object and the user's membership, 404 for
another project's object, 403 for a role too low (``tracing.access`` does the work)."""

from __future__ import annotations

from django.http import HttpRequest

from tracing.access import object_for, project_for, require_role, trace_for
from tracing.models import Membership, Role

from .models import AttributionRun, AttributorModel, Injection, InjectionCampaign, Verdict

__all__ = [
    "campaign_for",
    "contributor",
    "injection_for",
    "model_for",
    "object_for",
    "project_for",
    "require_role",
    "run_for",
    "trace_for",
    "verdict_for",
]

CONTRIBUTORS_ONLY = "Viewers cannot start attribution runs"


def contributor(membership: Membership, denied: str = CONTRIBUTORS_ONLY) -> Membership:
    """Owners and annotators start runs, campaigns and training; viewers read."""
    return require_role(membership, Role.ANNOTATOR, denied)


def run_for(
    request: HttpRequest, run_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[AttributionRun, Membership]:
    return object_for(request, AttributionRun, run_id, role, denied=denied, missing="No such run")


def verdict_for(
    request: HttpRequest, verdict_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[Verdict, Membership]:
    return object_for(
        request,
        Verdict.objects.select_related("run"),
        verdict_id,
        role,
        denied=denied,
        via="trace__project",
        missing="No such verdict",
    )


def campaign_for(
    request: HttpRequest, campaign_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[InjectionCampaign, Membership]:
    return object_for(
        request, InjectionCampaign, campaign_id, role, denied=denied, missing="No such campaign"
    )


def injection_for(
    request: HttpRequest, injection_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[Injection, Membership]:
    return object_for(
        request,
        Injection.objects.select_related("origin", "result_trace"),
        injection_id,
        role,
        denied=denied,
        via="campaign__project",
        missing="No such injection",
    )


def model_for(
    request: HttpRequest, model_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[AttributorModel, Membership]:
    return object_for(
        request,
        AttributorModel.objects.select_related("created_by", "retrained_from"),
        model_id,
        role,
        denied=denied,
        missing="No such model",
    )
