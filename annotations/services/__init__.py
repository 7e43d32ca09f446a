"""Writes for the annotations app, one module per sub-domain (review queues, dataset exports); import them from here."""

from __future__ import annotations

from .exports import (
    EXPORT_TIME_LIMIT,
    MAX_EXPORT_ATTEMPTS,
    PROGRESS_EVERY,
    export_create,
    export_delete,
    export_fail,
    export_run,
    exports_reap,
    write_atomically,
)
from .invitations import (
    INVITATION_DAYS,
    InvitationError,
    InviteResult,
    invitation_accept,
    invitation_create,
    invitation_for_token,
    invitation_revoke,
)
from .queues import (
    ITEM_BATCH_SIZE,
    MAX_LEAD_TIME_MS,
    QueueError,
    annotation_claim,
    annotation_skip,
    annotation_submit,
    annotation_touch,
    item_resolve,
    queue_accept_unanimous,
    queue_create,
    queue_fill,
    queue_update,
)

__all__ = [
    "exports_reap",
    "EXPORT_TIME_LIMIT",
    "INVITATION_DAYS",
    "ITEM_BATCH_SIZE",
    "InvitationError",
    "InviteResult",
    "MAX_EXPORT_ATTEMPTS",
    "MAX_LEAD_TIME_MS",
    "PROGRESS_EVERY",
    "QueueError",
    "annotation_claim",
    "annotation_skip",
    "annotation_submit",
    "annotation_touch",
    "export_create",
    "export_delete",
    "export_fail",
    "export_run",
    "invitation_accept",
    "invitation_create",
    "invitation_for_token",
    "invitation_revoke",
    "item_resolve",
    "queue_accept_unanimous",
    "queue_create",
    "queue_fill",
    "queue_update",
    "write_atomically",
]
