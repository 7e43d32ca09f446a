"""Pages of the annotations app: review queues and dataset exports."""

from __future__ import annotations

from .exports import (
    export_builder,
    export_delete,
    export_download,
    export_manifest_download,
    export_preview,
)
from .invitations import invitation_accept, invitations
from .labels import trace_label, trace_label_remove
from .queues import (
    adjudicate_item,
    adjudication,
    agreement,
    answer_edit,
    label,
    queue_detail,
    queue_edit,
    queue_list,
    queue_next,
    queue_refill,
    skip,
)

__all__ = [
    "adjudicate_item",
    "adjudication",
    "agreement",
    "answer_edit",
    "export_builder",
    "export_delete",
    "export_download",
    "export_manifest_download",
    "export_preview",
    "invitation_accept",
    "invitations",
    "label",
    "queue_detail",
    "queue_edit",
    "queue_list",
    "queue_next",
    "queue_refill",
    "skip",
    "trace_label",
    "trace_label_remove",
]
