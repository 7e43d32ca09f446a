"""Fetch-and-authorize for the annotation pages: one call returns the object and the user's membership, 404 for
another project's object, 403 for a role too low (``tracing.access`` does the work). Whether a member may label in a
given queue (named annotators) is the queue's rule, ``selectors.may_label``; it is checked after fetching."""

from __future__ import annotations

from django.http import HttpRequest

from tracing.access import object_for, project_for, require_role
from tracing.models import Membership, Role

from .models import Annotation, DatasetExport, QueueItem, ReviewQueue

__all__ = [
    "annotation_for",
    "export_for",
    "item_for",
    "object_for",
    "project_for",
    "queue_for",
    "require_role",
]

EXPORTERS_ONLY = "Only the project's owners and annotators can export datasets"


def queue_for(
    request: HttpRequest, queue_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[ReviewQueue, Membership]:
    return object_for(request, ReviewQueue, queue_id, role, denied=denied, missing="No such queue")


def annotation_for(
    request: HttpRequest, annotation_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[Annotation, Membership]:
    return object_for(
        request,
        Annotation.objects.select_related("queue", "item__trace"),
        annotation_id,
        role,
        denied=denied,
        via="queue__project",
        missing="No such item",
    )


def item_for(
    request: HttpRequest, item_id: int, role: str = Role.VIEWER, denied: str = ""
) -> tuple[QueueItem, Membership]:
    return object_for(
        request,
        QueueItem.objects.select_related("queue", "trace", "resolved_label"),
        item_id,
        role,
        denied=denied,
        via="queue__project",
        missing="No such item",
    )


def export_for(request: HttpRequest, export_id: int) -> tuple[DatasetExport, Membership]:
    """Exports hold the project's curated data: annotators and owners have them, viewers get 403."""
    return object_for(
        request, DatasetExport, export_id, Role.ANNOTATOR, denied=EXPORTERS_ONLY, missing="No such export"
    )
