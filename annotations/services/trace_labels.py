"""A person's own label on a trace, given where they read it: confirming a method's verdict, or correcting it, on
the trace page -- without opening a review queue.

Review queues are for labelling many traces with agreement measured; this is the other half of the loop, the one a
team uses on the failure in front of them: they read the verdict, and one click makes it (or their correction) a
verified label. It is an ``annotator`` label with its author, so it counts as verified everywhere: it becomes the
trace's gold (annotator labels outrank imported ones), the learned models train on it and the default model is
retrained once enough of them arrive, the calibrated heuristic counts it, and exports carry it.

Each person keeps at most one such label per trace: saving again replaces their own, and they may take it back.
Labels of other people, imported and injected labels, and a queue's resolved labels are never touched here (a
queue's decision is changed in its queue).
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Exists, OuterRef

from attribution.models import Verdict
from attribution.taxonomy import CATEGORIES
from tracing.models import Agent, GoldLabel, LabelSource, Trace
from tracing.services import audit_record

from ..models import QueueItem, TaxonomyFamily
from .queues import ErrorSpec, QueueError, _checked_error

MAX_REASON_CHARS = 5000


def own_trace_label(*, trace: Trace, user: AbstractBaseUser) -> GoldLabel | None:
    """The label this person gave on the trace page (not one a queue resolved), if any."""
    if not getattr(user, "is_authenticated", False):
        return None
    return _own_labels(trace, user).order_by("-pk").first()


def _own_labels(trace: Trace, user: AbstractBaseUser):
    return GoldLabel.objects.filter(trace=trace, source=LabelSource.ANNOTATOR, created_by=user).exclude(
        Exists(QueueItem.objects.filter(resolved_label=OuterRef("pk")))
    )


def trace_label_save(
    *,
    trace: Trace,
    user: AbstractBaseUser,
    step_index: int,
    agent_name: str = "",
    category: str = "",
    reason: str = "",
    verdict: Verdict | None = None,
) -> GoldLabel:
    """Write the person's label on the trace (replacing the one they gave here before). The agent defaults to the
    step's; an agent the trace does not have, a step outside it or an unknown category is refused (QueueError).
    ``verdict``: the verdict confirmed, recorded in the audit log."""
    reason = reason.replace("\x00", "").strip()
    if len(reason) > MAX_REASON_CHARS:
        raise QueueError(f"The reason is too long (at most {MAX_REASON_CHARS} characters).")
    category = category.strip()
    if category and category not in CATEGORIES:
        raise QueueError(f"Unknown category {category!r}.")
    family = CATEGORIES[category].family if category else TaxonomyFamily.AGENT_ERROR
    error = _checked_error(
        trace, ErrorSpec(step_index=step_index, agent_name=agent_name, category=category), taxonomy=family
    )
    with transaction.atomic():
        # One label per person and trace: two saves of the same person at once must not both stay.
        list(Trace.objects.select_for_update().filter(pk=trace.pk).values_list("pk"))
        own = list(_own_labels(trace, user))
        replaced = [{"agent": g.agent_name, "step": g.step_index} for g in own]
        GoldLabel.objects.filter(pk__in=[g.pk for g in own]).delete()
        label = GoldLabel.objects.create(
            trace=trace,
            agent=Agent.objects.filter(trace=trace, name=error.agent_name).first(),
            agent_name=error.agent_name,
            step_index=error.step_index,
            reason=reason,
            category=error.category,
            source=LabelSource.ANNOTATOR,
            created_by=user,
        )
        audit_record(
            action="label.confirmed" if verdict is not None else "label.given",
            project=trace.project,
            actor=user,
            target=f"trace {trace.pk}",
            details={
                "trace": trace.name,
                "agent": label.agent_name,
                "step": label.step_index,
                **({"verdict": verdict.pk, "method": verdict.method} if verdict is not None else {}),
                **({"replaced": replaced} if replaced else {}),
            },
        )
    return label


def trace_label_remove(*, trace: Trace, user: AbstractBaseUser) -> int:
    """Take back the label this person gave on the trace page; the number removed (0 when there was none)."""
    with transaction.atomic():
        own = list(_own_labels(trace, user))
        removed = [(g.agent_name, g.step_index) for g in own]
        if removed:
            GoldLabel.objects.filter(pk__in=[g.pk for g in own]).delete()
            audit_record(
                action="label.removed",
                project=trace.project,
                actor=user,
                target=f"trace {trace.pk}",
                details={"trace": trace.name, "removed": [{"agent": a, "step": s} for a, s in removed]},
            )
    return len(removed)
