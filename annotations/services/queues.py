"""Writes for review queues: create and fill queues, lease copies, take answers, resolve items into gold labels.

Leases: a copy is claimed under ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent claims each get a different copy
instead of queueing behind one another, and every later write to a lease is a conditional UPDATE that names the
holder (``WHERE annotator = me AND status = 'leased'``) and checks the row count: a lease that ran out and went to
someone else can no longer be extended, submitted or skipped by its first holder.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from tracing.formats import ParsedGold
from tracing.models import Agent, GoldLabel, LabelSource, Project, Step
from tracing.services import gold_write

from .. import selectors
from ..models import Annotation, Assignment, CopyStatus, QueueItem, ReviewQueue, Skip

# Bound on how long one visit may add to an answer's lead time: a tab left open overnight is not labelling time.
MAX_LEAD_TIME_MS = 4 * 60 * 60 * 1000
ITEM_BATCH_SIZE = 1000  # rows per INSERT when filling a queue


class QueueError(Exception):
    """A request the queue cannot honour (lease lost, step out of range…); the message is shown to the person."""


def queue_create(*, project: Project, user: AbstractBaseUser | None, name: str, source: str,
                 filter: dict | None = None, overlap: int = 2, assignment: str = Assignment.ANYONE,
                 annotators: Iterable[AbstractBaseUser] = (), blind: bool = False, instructions: str = "",
                 taxonomy: str = "agent_error_taxonomy", step_tolerance: int = 1,
                 lease_seconds: int = 30 * 60) -> ReviewQueue:
    """Create a queue and fill it from its filter."""
    with transaction.atomic():
        queue = ReviewQueue.objects.create(
            project=project, name=name, source=source, filter=filter or {}, overlap=overlap, assignment=assignment,
            blind=blind, instructions=instructions, taxonomy=taxonomy, step_tolerance=step_tolerance,
            lease_seconds=lease_seconds, created_by=user,
        )
        queue.annotators.set(list(annotators))
        queue_fill(queue=queue)
    return queue


def queue_update(*, queue: ReviewQueue, lease_seconds: int | None = None) -> ReviewQueue:
    """Save an owner's changes to a live queue (the instance comes from the settings form, unsaved); a larger overlap
    gets every item its new copies at once."""
    with transaction.atomic():
        if lease_seconds is not None:
            queue.lease_seconds = max(60, lease_seconds)
        queue.save()
        _ensure_copies(queue)
    return queue


def queue_fill(*, queue: ReviewQueue, trace_ids: Iterable[int] | None = None) -> int:
    """Add the traces matching the queue's filter (or ``trace_ids``) and their copies; returns the items added.

    Idempotent: items are unique per (queue, trace) and copies per (item, slot), both inserted with ON CONFLICT DO
    NOTHING, so running it again (or two people pressing the button at once) adds only what is missing.
    """
    if trace_ids is None:
        trace_ids = selectors.queue_candidate_ids(project=queue.project, source=queue.source, params=queue.filter)
    ids = list(dict.fromkeys(trace_ids))
    before = QueueItem.objects.filter(queue=queue).count()
    QueueItem.objects.bulk_create([QueueItem(queue=queue, trace_id=pk) for pk in ids], ignore_conflicts=True,
                                  batch_size=ITEM_BATCH_SIZE)
    _ensure_copies(queue)
    return QueueItem.objects.filter(queue=queue).count() - before


def _ensure_copies(queue: ReviewQueue) -> None:
    short = (QueueItem.objects.filter(queue=queue).annotate(n=Count("copies")).filter(n__lt=queue.overlap)
             .values_list("pk", flat=True))
    copies = (Annotation(item_id=item_id, queue=queue, slot=slot) for item_id in short.iterator()
              for slot in range(queue.overlap))
    Annotation.objects.bulk_create(list(copies), ignore_conflicts=True, batch_size=ITEM_BATCH_SIZE)


def annotation_claim(*, queue: ReviewQueue, user: AbstractBaseUser, now: datetime | None = None) -> Annotation | None:
    """The copy ``user`` should label next in ``queue``: their current lease if they hold one (a reload returns the
    same item, so its draft is still there), else a newly leased copy, else None when nothing is left for them."""
    now = now or timezone.now()
    expires = now + timedelta(seconds=queue.lease_seconds)
    held = Annotation.objects.filter(queue=queue, annotator=user, status=CopyStatus.LEASED).order_by("pk").first()
    # A lease past its expiry that nobody took yet is still this person's; the conditional update loses to a claim
    # that locked the row first (PostgreSQL re-checks the WHERE after waiting for that claim to commit).
    if held is not None and _extend(held, user, expires):
        return Annotation.objects.get(pk=held.pk)
    with transaction.atomic():
        copy = _lock_claimable(queue, user, now)
        if copy is None:
            return None
        copy.annotator, copy.status, copy.leased_at, copy.lease_expires_at = user, CopyStatus.LEASED, now, expires
        copy.save(update_fields=["annotator", "status", "leased_at", "lease_expires_at"])
    return copy


def _lock_claimable(queue: ReviewQueue, user: AbstractBaseUser, now: datetime) -> Annotation | None:
    """Lock the first copy this person may take: a lease that ran out (few rows) first, then an open copy.

    Two queries instead of one with an OR: each walks the claim index in (item, slot) order and stops at the first
    row that qualifies, where the OR made PostgreSQL read and sort every open copy of the queue on every claim
    (bench/review_queue.py, 6,000 copies, 3 threads: 22 claim+submit cycles/s with the OR, 38-46/s without).
    """
    mine = Annotation.objects.filter(item=OuterRef("item"), annotator=user)
    skipped = Skip.objects.filter(item=OuterRef("item"), annotator=user)
    resolved = QueueItem.objects.filter(pk=OuterRef("item"), resolved_label__isnull=False)
    candidates = (Annotation.objects.filter(queue=queue).exclude(Exists(mine)).exclude(Exists(skipped))
                  .exclude(Exists(resolved)).order_by("item_id", "slot").select_for_update(skip_locked=True))
    expired = candidates.filter(status=CopyStatus.LEASED, lease_expires_at__lte=now).first()
    return expired or candidates.filter(status=CopyStatus.OPEN).first()


def _extend(copy: Annotation, user: AbstractBaseUser, expires: datetime) -> bool:
    return bool(Annotation.objects.filter(pk=copy.pk, annotator=user, status=CopyStatus.LEASED)
                .update(lease_expires_at=expires))


def annotation_touch(*, annotation: Annotation, user: AbstractBaseUser) -> bool:
    """Extend the lease of someone working on the labelling screen; False when it is no longer theirs."""
    expires = timezone.now() + timedelta(seconds=annotation.queue.lease_seconds)
    return _extend(annotation, user, expires)


def annotation_submit(*, annotation: Annotation, user: AbstractBaseUser, step_index: int, agent_name: str = "",
                      category: str = "", reason: str = "", lead_time_ms: int = 0) -> Annotation:
    trace = annotation.item.trace
    if not 0 <= step_index < trace.step_count:
        raise QueueError(f"Step {step_index} is outside this trace (steps 0–{trace.step_count - 1}).")
    agent_name = agent_name.strip()[:200] or _agent_of_step(trace.pk, step_index)
    if agent_name and not Agent.objects.filter(trace=trace, name=agent_name).exists():
        raise QueueError(f"{agent_name!r} is not an agent of this trace.")
    now = timezone.now()
    updated = Annotation.objects.filter(pk=annotation.pk, annotator=user, status=CopyStatus.LEASED).update(
        status=CopyStatus.SUBMITTED, agent_name=agent_name, step_index=step_index, category=category[:80],
        reason=reason, lead_time_ms=min(max(0, lead_time_ms), MAX_LEAD_TIME_MS), submitted_at=now,
        lease_expires_at=None,
    )
    if not updated:
        raise QueueError("Your lease on this item ran out and it went to someone else; your answer was not saved.")
    return Annotation.objects.get(pk=annotation.pk)


def _agent_of_step(trace_id: int, step_index: int) -> str:
    step = Step.objects.filter(trace_id=trace_id, index=step_index).select_related("agent").first()
    return step.agent.name if step and step.agent else ""


def annotation_skip(*, annotation: Annotation, user: AbstractBaseUser) -> None:
    """Give the copy back to the pool; this person is not offered the item again."""
    with transaction.atomic():
        released = Annotation.objects.filter(pk=annotation.pk, annotator=user, status=CopyStatus.LEASED).update(
            status=CopyStatus.OPEN, annotator=None, leased_at=None, lease_expires_at=None)
        if not released:
            raise QueueError("This item is no longer yours to skip.")
        Skip.objects.get_or_create(item_id=annotation.item_id, annotator=user)


def item_resolve(*, item: QueueItem, user: AbstractBaseUser, step_index: int, agent_name: str = "",
                 category: str = "", reason: str = "", source: str = LabelSource.ADJUDICATED) -> GoldLabel:
    """Write the item's answer as the trace's gold label (through tracing's own label writer) and remember it.

    Resolving again replaces the label this item wrote before, so a corrected decision does not leave two golds.
    """
    trace = item.trace
    if not 0 <= step_index < trace.step_count:
        raise QueueError(f"Step {step_index} is outside this trace (steps 0–{trace.step_count - 1}).")
    warnings: list[str] = []
    with transaction.atomic():
        item = QueueItem.objects.select_for_update().get(pk=item.pk)
        previous = GoldLabel.objects.filter(pk=item.resolved_label_id).first()
        gold_write(trace=trace, labels=[ParsedGold(agent=agent_name, step=step_index, reason=reason,
                                                   category=category)], source=source, warnings=warnings)
        agent = agent_name.strip()[:200] or _agent_of_step(trace.pk, step_index)
        label = (GoldLabel.objects.filter(trace=trace, source=source, agent_name=agent, step_index=step_index,
                                          category=category[:80]).order_by("-pk").first())
        if label is None:
            raise QueueError("; ".join(warnings) or "The label could not be written.")
        if label.created_by_id is None:
            label.created_by = user
            label.save(update_fields=["created_by"])
        if previous is not None and previous.pk != label.pk and _only_this_item_uses(previous, item):
            previous.delete()
        item.resolved_label, item.resolved_by, item.resolved_at = label, user, timezone.now()
        item.save(update_fields=["resolved_label", "resolved_by", "resolved_at"])
    return label


def _only_this_item_uses(label: GoldLabel, item: QueueItem) -> bool:
    if label.source not in (LabelSource.ADJUDICATED, LabelSource.ANNOTATOR):
        return False  # never delete an imported, injected or counterfactual label
    return not QueueItem.objects.filter(resolved_label=label).exclude(pk=item.pk).exists()


def queue_accept_unanimous(*, queue: ReviewQueue, user: AbstractBaseUser) -> int:
    """Resolve every complete, unanimous, unresolved item into a consensus gold label (source "annotator")."""
    accepted = 0
    for row in selectors.adjudication_rows(queue=queue):
        if row.state != "unanimous":
            continue
        first = row.answers[0]
        reasons = " | ".join(a.reason for a in row.answers if a.reason)
        item_resolve(item=row.item, user=user, step_index=first.step_index, agent_name=first.agent_name,
                     category=_common(a.category for a in row.answers), reason=reasons,
                     source=LabelSource.ANNOTATOR)
        accepted += 1
    return accepted


def _common(values: Iterable[str]) -> str:
    """The category everyone gave, else the empty string (a consensus label claims only what all agreed on)."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else ""
