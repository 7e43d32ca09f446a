"""Writes for review queues: create and fill queues, lease copies, take answers, resolve items into gold labels.

Leases: a copy is claimed under ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent claims each get a different copy
instead of queueing behind one another, and every later write to a lease is a conditional UPDATE that names the
holder (``WHERE annotator = me AND status = 'leased'``) and checks the row count: a lease that ran out and went to
someone else can no longer be extended, submitted or skipped by its first holder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from attribution.taxonomy import CATEGORIES
from tracing.formats import ParsedGold
from tracing.models import Agent, ErrorLabel, GoldLabel, LabelSource, Project, Step, Trace
from tracing.services import gold_write

from .. import selectors
from ..models import Annotation, AnnotationError, Assignment, CopyStatus, QueueItem, ReviewQueue, Skip

# Bound on how long one visit may add to an answer's lead time: a tab left open overnight is not labelling time.
MAX_LEAD_TIME_MS = 4 * 60 * 60 * 1000
ITEM_BATCH_SIZE = 1000  # rows per INSERT when filling a queue
# A taxonomy's name as ErrorLabel.family spells it (the importers write "TRAIL", "MAST", "AgentRx").
ERROR_LABEL_FAMILIES = {"mast": "MAST", "trail": "TRAIL", "agent_error_taxonomy": "AgentErrorTaxonomy"}
MAX_FURTHER_ERRORS = 50  # further errors one answer may list: far more than any dataset labels per run


class QueueError(Exception):
    """A request the queue cannot honour (lease lost, step out of range…); the message is shown to the person."""


def queue_create(
    *,
    project: Project,
    user: AbstractBaseUser | None,
    name: str,
    source: str,
    filter: dict | None = None,
    overlap: int = 2,
    assignment: str = Assignment.ANYONE,
    annotators: Iterable[AbstractBaseUser] = (),
    blind: bool = False,
    instructions: str = "",
    taxonomy: str = "agent_error_taxonomy",
    step_tolerance: int = 1,
    lease_seconds: int = 30 * 60,
) -> ReviewQueue:
    """Create a queue and fill it from its filter."""
    with transaction.atomic():
        queue = ReviewQueue.objects.create(
            project=project,
            name=name,
            source=source,
            filter=filter or {},
            overlap=overlap,
            assignment=assignment,
            blind=blind,
            instructions=instructions,
            taxonomy=taxonomy,
            step_tolerance=step_tolerance,
            lease_seconds=lease_seconds,
            created_by=user,
        )
        queue.annotators.set(list(annotators))
        queue_fill(queue=queue)
    return queue


def queue_update(
    *,
    queue: ReviewQueue,
    lease_seconds: int | None = None,
    annotators: Iterable[AbstractBaseUser] | None = None,
) -> ReviewQueue:
    """Save an owner's changes to a live queue (the instance comes from the settings form, unsaved); a larger overlap
    gets every item its new copies at once. ``annotators`` (users), when given, replaces the named annotators."""
    with transaction.atomic():
        if lease_seconds is not None:
            queue.lease_seconds = max(60, lease_seconds)
        queue.save()
        if annotators is not None:
            queue.annotators.set(annotators)
        _ensure_copies(queue)
    return queue


def queue_fill(*, queue: ReviewQueue, trace_ids: Iterable[int] | None = None) -> int:
    """Add the traces matching the queue's filter (or ``trace_ids``) and their copies; returns the items added.

    Idempotent: items are unique per (queue, trace) and copies per (item, slot), both inserted with ON CONFLICT DO
    NOTHING, so running it again (or two people pressing the button at once) adds only what is missing.
    """
    if trace_ids is None:
        trace_ids = selectors.queue_candidate_ids(
            project=queue.project, source=queue.source, params=queue.filter
        )
    ids = list(dict.fromkeys(trace_ids))
    before = QueueItem.objects.filter(queue=queue).count()
    QueueItem.objects.bulk_create(
        [QueueItem(queue=queue, trace_id=pk) for pk in ids], ignore_conflicts=True, batch_size=ITEM_BATCH_SIZE
    )
    _ensure_copies(queue)
    return QueueItem.objects.filter(queue=queue).count() - before


def _ensure_copies(queue: ReviewQueue) -> None:
    short = (
        QueueItem.objects.filter(queue=queue)
        .annotate(n=Count("copies"))
        .filter(n__lt=queue.overlap)
        .values_list("pk", flat=True)
    )
    copies = (
        Annotation(item_id=item_id, queue=queue, slot=slot)
        for item_id in short.iterator()
        for slot in range(queue.overlap)
    )
    Annotation.objects.bulk_create(list(copies), ignore_conflicts=True, batch_size=ITEM_BATCH_SIZE)


def annotation_claim(
    *, queue: ReviewQueue, user: AbstractBaseUser, now: datetime | None = None
) -> Annotation | None:
    """The copy ``user`` should label next in ``queue``: their current lease if they hold one (a reload returns the
    same item, so its draft is still there), else a newly leased copy, else None when nothing is left for them."""
    now = now or timezone.now()
    expires = now + timedelta(seconds=queue.lease_seconds)
    held = (
        Annotation.objects.filter(queue=queue, annotator=user, status=CopyStatus.LEASED)
        .order_by("pk")
        .first()
    )
    # A lease past its expiry that nobody took yet is still this person's; the conditional update loses to a claim
    # that locked the row first (PostgreSQL re-checks the WHERE after waiting for that claim to commit).
    if held is not None and _extend(held, user, expires):
        return Annotation.objects.get(pk=held.pk)
    with transaction.atomic():
        copy = _lock_claimable(queue, user, now)
        if copy is None:
            return None
        copy.annotator, copy.status, copy.leased_at, copy.lease_expires_at = (
            user,
            CopyStatus.LEASED,
            now,
            expires,
        )
        copy.save(update_fields=["annotator", "status", "leased_at", "lease_expires_at"])
    return copy


def _lock_claimable(queue: ReviewQueue, user: AbstractBaseUser, now: datetime) -> Annotation | None:
    """Lock the first copy this person may take: a lease that ran out (few rows) first, then an open copy.

    Two queries instead of one with an OR: each walks the claim index in (item, slot) order and stops at the first
    row that qualifies, where the OR made PostgreSQL read and sort every open copy of the queue on every claim
    (bench/review_queue.py, 6,000 copies, 3 threads: 22 claim+submit cycles/s with the OR, 38-46/s without).
    """
    candidates = (
        selectors.copies_open_to(queue=queue, user=user)
        .order_by("item_id", "slot")
        .select_for_update(skip_locked=True)
    )
    expired = candidates.filter(status=CopyStatus.LEASED, lease_expires_at__lte=now).first()
    return expired or candidates.filter(status=CopyStatus.OPEN).first()


def _extend(copy: Annotation, user: AbstractBaseUser, expires: datetime) -> bool:
    return bool(
        Annotation.objects.filter(pk=copy.pk, annotator=user, status=CopyStatus.LEASED).update(
            lease_expires_at=expires
        )
    )


def annotation_touch(*, annotation: Annotation, user: AbstractBaseUser) -> bool:
    """Extend the lease of someone working on the labelling screen; False when it is no longer theirs."""
    expires = timezone.now() + timedelta(seconds=annotation.queue.lease_seconds)
    return _extend(annotation, user, expires)


@dataclass(frozen=True)
class ErrorSpec:
    """One labelled error as a person gives it: the decisive one, or a further one beside it."""

    step_index: int
    agent_name: str = ""
    category: str = ""
    note: str = ""
    family: str = ""  # the category's taxonomy family as error labels spell it; empty: read from the category


def _checked_error(trace: Trace, error: ErrorSpec, *, taxonomy: str | None, what: str = "") -> ErrorSpec:
    """The error with its agent filled in from its step; QueueError when the step is not in the trace, or (for an
    annotator's answer, ``taxonomy`` given) the agent does not act in it or the category is not of the queue's
    taxonomy. An owner deciding (``taxonomy`` None) may keep an imported error whose agent the trace does not know
    (Who&When has such labels) or whose category is the dataset's own."""
    if not 0 <= error.step_index < trace.step_count:
        raise QueueError(
            f"{what}Step {error.step_index} is outside this trace (steps 0–{trace.step_count - 1})."
        )
    agent_name = error.agent_name.strip()[:200] or _agent_of_step(trace.pk, error.step_index)
    if taxonomy is not None:
        if agent_name and not Agent.objects.filter(trace=trace, name=agent_name).exists():
            raise QueueError(f"{what}{agent_name!r} is not an agent of this trace.")
        known = CATEGORIES.get(error.category)
        if error.category and (known is None or known.family != taxonomy):
            raise QueueError(f"{what}{error.category!r} is not a category of this queue's taxonomy.")
    known = CATEGORIES.get(error.category)
    family = error.family or (ERROR_LABEL_FAMILIES.get(known.family, known.family) if known else "")
    return replace(error, agent_name=agent_name, category=error.category[:80], family=family)


def _checked_further(
    trace: Trace, decisive: ErrorSpec, further: Iterable[ErrorSpec], *, taxonomy: str | None
) -> list[ErrorSpec]:
    """Further errors checked one by one, in order, without repeats (of each other or of the decisive error)."""
    seen = {(decisive.step_index, decisive.agent_name, decisive.category)}
    out: list[ErrorSpec] = []
    for position, error in enumerate(further, start=1):
        if position > MAX_FURTHER_ERRORS:
            raise QueueError(f"At most {MAX_FURTHER_ERRORS} further errors per answer.")
        error = _checked_error(trace, error, taxonomy=taxonomy, what=f"Further error {position}: ")
        if (error.step_index, error.agent_name, error.category) not in seen:
            seen.add((error.step_index, error.agent_name, error.category))
            out.append(error)
    return out


def annotation_submit(
    *,
    annotation: Annotation,
    user: AbstractBaseUser,
    step_index: int,
    agent_name: str = "",
    category: str = "",
    reason: str = "",
    lead_time_ms: int = 0,
    further: Iterable[ErrorSpec] = (),
) -> Annotation:
    """Take the answer: the decisive error on the copy itself, further errors as its ``AnnotationError`` rows."""
    decisive, further = _checked_answer(annotation, step_index, agent_name, category, further)
    now = timezone.now()
    with transaction.atomic():
        updated = Annotation.objects.filter(
            pk=annotation.pk, annotator=user, status=CopyStatus.LEASED
        ).update(
            status=CopyStatus.SUBMITTED,
            agent_name=decisive.agent_name,
            step_index=step_index,
            category=decisive.category,
            reason=reason,
            lead_time_ms=min(max(0, lead_time_ms), MAX_LEAD_TIME_MS),
            submitted_at=now,
            lease_expires_at=None,
        )
        if not updated:
            raise QueueError(
                "Your lease on this item ran out and it went to someone else; your answer was not saved."
            )
        _write_further(annotation.pk, further)
    return Annotation.objects.get(pk=annotation.pk)


def annotation_revise(
    *,
    annotation: Annotation,
    user: AbstractBaseUser,
    step_index: int,
    agent_name: str = "",
    category: str = "",
    reason: str = "",
    lead_time_ms: int = 0,
    further: Iterable[ErrorSpec] = (),
) -> Annotation:
    """Change an answer its annotator already gave (a second look, as Label Studio's history allows), while the item
    is not decided: once an owner turned the answers into the trace's gold label, the answer is part of that
    decision and stays as it was. The item row is locked first, as ``item_resolve`` locks it, so a revision and an
    adjudication of the same item never interleave. The time spent is added to the answer's lead time."""
    decisive, further = _checked_answer(annotation, step_index, agent_name, category, further)
    with transaction.atomic():
        item = QueueItem.objects.select_for_update().filter(pk=annotation.item_id).first()
        if item is None or item.resolved_label_id is not None:
            raise QueueError("This item has been decided by an owner; its answers can no longer change.")
        copy = (
            Annotation.objects.select_for_update()
            .filter(pk=annotation.pk, annotator=user, status=CopyStatus.SUBMITTED)
            .first()
        )
        if copy is None:
            raise QueueError("This answer is not yours to change.")
        Annotation.objects.filter(pk=copy.pk).update(
            agent_name=decisive.agent_name,
            step_index=step_index,
            category=decisive.category,
            reason=reason,
            lead_time_ms=min(copy.lead_time_ms + max(0, lead_time_ms), MAX_LEAD_TIME_MS),
        )
        AnnotationError.objects.filter(annotation_id=copy.pk).delete()
        _write_further(copy.pk, further)
    return Annotation.objects.get(pk=annotation.pk)


def _checked_answer(
    annotation: Annotation, step_index: int, agent_name: str, category: str, further: Iterable[ErrorSpec]
) -> tuple[ErrorSpec, list[ErrorSpec]]:
    trace = annotation.item.trace
    # The decisive category is checked by the form (any known code, as before); the further ones here.
    decisive = _checked_error(trace, ErrorSpec(step_index, agent_name), taxonomy=annotation.queue.taxonomy)
    decisive = replace(decisive, category=category[:80])
    return decisive, _checked_further(trace, decisive, further, taxonomy=annotation.queue.taxonomy)


def _write_further(annotation_id: int, further: list[ErrorSpec]) -> None:
    AnnotationError.objects.bulk_create(
        [
            AnnotationError(
                annotation_id=annotation_id,
                position=i,
                step_index=e.step_index,
                agent_name=e.agent_name,
                category=e.category,
                note=e.note,
            )
            for i, e in enumerate(further)
        ]
    )


def _agent_of_step(trace_id: int, step_index: int) -> str:
    step = Step.objects.filter(trace_id=trace_id, index=step_index).select_related("agent").first()
    return step.agent.name if step and step.agent else ""


def annotation_skip(*, annotation: Annotation, user: AbstractBaseUser) -> None:
    """Give the copy back to the pool; this person is not offered the item again."""
    with transaction.atomic():
        released = Annotation.objects.filter(
            pk=annotation.pk, annotator=user, status=CopyStatus.LEASED
        ).update(status=CopyStatus.OPEN, annotator=None, leased_at=None, lease_expires_at=None)
        if not released:
            raise QueueError("This item is no longer yours to skip.")
        Skip.objects.get_or_create(item_id=annotation.item_id, annotator=user)


def item_resolve(
    *,
    item: QueueItem,
    user: AbstractBaseUser,
    step_index: int,
    agent_name: str = "",
    category: str = "",
    reason: str = "",
    source: str = LabelSource.ADJUDICATED,
    further: Iterable[ErrorSpec] = (),
    family: str = "",
) -> GoldLabel:
    """Write the item's answer as the trace's gold label (through tracing's own label writer) and remember it; the
    decisive error and ``further`` errors become the trace's error labels of ``source``.

    Resolving again replaces the label this item wrote before, so a corrected decision does not leave two golds;
    the error labels of ``source`` are replaced as a whole, so the trace keeps one decisive error per source.
    """
    trace = item.trace
    decisive = _checked_error(
        trace, ErrorSpec(step_index, agent_name, category, reason, family), taxonomy=None
    )
    further = _checked_further(trace, decisive, further, taxonomy=None)
    warnings: list[str] = []
    with transaction.atomic():
        item = QueueItem.objects.select_for_update().get(pk=item.pk)
        previous = GoldLabel.objects.filter(pk=item.resolved_label_id).first()
        gold_write(
            trace=trace,
            labels=[ParsedGold(agent=decisive.agent_name, step=step_index, reason=reason, category=category)],
            source=source,
            warnings=warnings,
        )
        label = (
            GoldLabel.objects.filter(
                trace=trace,
                source=source,
                agent_name=decisive.agent_name,
                step_index=step_index,
                category=category[:80],
            )
            .order_by("-pk")
            .first()
        )
        if label is None:
            raise QueueError("; ".join(warnings) or "The label could not be written.")
        if label.created_by_id is None:
            label.created_by = user
            label.save(update_fields=["created_by"])
        if previous is not None and previous.pk != label.pk and _only_this_item_uses(previous, item):
            previous.delete()
        _error_labels_replace(trace, source, decisive, further)
        item.resolved_label, item.resolved_by, item.resolved_at = label, user, timezone.now()
        item.save(update_fields=["resolved_label", "resolved_by", "resolved_at"])
    return label


def _error_labels_replace(trace: Trace, source: str, decisive: ErrorSpec, further: list[ErrorSpec]) -> None:
    """The trace's error labels of ``source`` become this decision: the decisive error first, then the others.
    Deleting before inserting keeps "one decisive per trace and source" (a partial unique index) true throughout;
    the caller's transaction makes the swap atomic. Labels of other sources (imported ones) are never touched."""
    ErrorLabel.objects.filter(trace=trace, source=source).delete()
    agents = {a.name: a for a in Agent.objects.filter(trace=trace)}
    ErrorLabel.objects.bulk_create(
        [
            ErrorLabel(
                trace=trace,
                step_index=e.step_index,
                agent=agents.get(e.agent_name),
                agent_name=e.agent_name,
                family=e.family[:40],
                category=e.category,
                description=e.note,
                source=source,
                decisive=position == 0,
                position=position,
            )
            for position, e in enumerate([decisive, *further])
        ]
    )


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
        # The annotators agree on the decisive error; the further errors are the first answer's (the accepted
        # annotation, as an owner accepting one answer takes that answer's).
        item_resolve(
            item=row.item,
            user=user,
            step_index=first.step_index,
            agent_name=first.agent_name,
            category=_common(a.category for a in row.answers),
            reason=reasons,
            source=LabelSource.ANNOTATOR,
            further=further_errors_of(first),
        )
        accepted += 1
    return accepted


def further_errors_of(annotation: Annotation) -> list[ErrorSpec]:
    return [
        ErrorSpec(e.step_index, e.agent_name, e.category, e.note) for e in annotation.further_errors.all()
    ]


def _common(values: Iterable[str]) -> str:
    """The category everyone gave, else the empty string (a consensus label claims only what all agreed on)."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else ""
