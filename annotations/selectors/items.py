"""A queue's item list: every trace in it with its status, who holds or answered it, when a lease runs out and
whether the answers agree -- the table a Label Studio user expects on a project's data page.

Status and agreement are computed in SQL (counts over the item's copies), so filtering a 20,000-item queue is one
query; only the page shown loads its copies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from tracing.models import ErrorLabel, GoldLabel, LabelSource, Step

from ..models import Annotation, CopyStatus, QueueItem, ReviewQueue
from .queues import taxonomy_groups

ITEMS_PER_PAGE = 50

ITEM_STATUSES = [
    ("", "any status"),
    ("waiting", "Waiting (no answer, nobody on it)"),
    ("in_progress", "In progress (leased)"),
    ("partly", "Some answers in"),
    ("answered", "All answers in"),
    ("disagree", "Answers disagree"),
    ("resolved", "Resolved into gold"),
]
AGREEMENT_CHOICES = [("", "any agreement"), ("agree", "answers agree"), ("disagree", "answers disagree")]


@dataclass
class ItemFilters:
    status: str = ""
    agreement: str = ""
    assignee: str = ""  # a username: items this person holds or answered
    q: str = ""  # part of the trace's name


@dataclass
class ItemListRow:
    item: QueueItem
    status: str
    status_label: str
    copies: list[Annotation] = field(default_factory=list)  # every copy someone holds or answered
    lease_expires_at: datetime | None = None
    agreement: str = ""  # "agree", "disagree" or "" (fewer than two answers)


def _annotated(queue: ReviewQueue) -> QuerySet[QueueItem]:
    now = timezone.now()
    submitted = Q(copies__status=CopyStatus.SUBMITTED)
    return (
        QueueItem.objects.filter(queue=queue)
        .select_related("trace", "resolved_label")
        .annotate(
            n_submitted=Count("copies", filter=submitted),
            # A lease that ran out is free again (the claim query takes it), so it is not "in progress".
            n_leased=Count(
                "copies", filter=Q(copies__status=CopyStatus.LEASED, copies__lease_expires_at__gt=now)
            ),
            n_agents=Count("copies__agent_name", filter=submitted, distinct=True),
            step_lo=Min("copies__step_index", filter=submitted),
            step_hi=Max("copies__step_index", filter=submitted),
            lease_until=Max(
                "copies__lease_expires_at",
                filter=Q(copies__status=CopyStatus.LEASED, copies__lease_expires_at__gt=now),
            ),
        )
    )


# Answers agree as the adjudication page counts it: every submitted copy names the same agent and the same step.
_AGREE = Q(n_submitted__gte=2, n_agents=1, step_lo=F("step_hi"))
_DISAGREE = Q(n_submitted__gte=2) & (Q(n_agents__gt=1) | ~Q(step_lo=F("step_hi")))


def _status_q(status: str, overlap: int) -> Q:
    open_ = Q(resolved_label__isnull=True)
    return {
        "waiting": open_ & Q(n_submitted=0, n_leased=0),
        "in_progress": open_ & Q(n_leased__gt=0),
        "partly": open_ & Q(n_submitted__gt=0, n_submitted__lt=overlap),
        "answered": open_ & Q(n_submitted__gte=overlap),
        "disagree": open_ & _DISAGREE,
        "resolved": Q(resolved_label__isnull=False),
    }[status]


def queue_items(*, queue: ReviewQueue, filters: ItemFilters, page: int | str | None = 1) -> Page:
    """One page of the queue's items, filtered, in the order they were added; rows are ``ItemListRow``s."""
    items = _annotated(queue)
    if filters.status:
        items = items.filter(_status_q(filters.status, queue.overlap))
    if filters.agreement:
        items = items.filter(_AGREE if filters.agreement == "agree" else _DISAGREE)
    if filters.assignee:
        holds = Annotation.objects.filter(item=OuterRef("pk"), annotator__username=filters.assignee)
        items = items.filter(Exists(holds.exclude(status=CopyStatus.OPEN)))
    if filters.q:
        items = items.filter(trace__name__icontains=filters.q)
    result = Paginator(items.order_by("pk"), ITEMS_PER_PAGE).get_page(page)
    copies: dict[int, list[Annotation]] = {}
    for copy in (
        Annotation.objects.filter(item__in=[i.pk for i in result.object_list])
        .exclude(status=CopyStatus.OPEN)
        .select_related("annotator")
        .order_by("item_id", "slot")
    ):
        copies.setdefault(copy.item_id, []).append(copy)
    result.object_list = [_row(item, copies.get(item.pk, []), queue.overlap) for item in result.object_list]
    return result


def _row(item: QueueItem, copies: list[Annotation], overlap: int) -> ItemListRow:
    if item.resolved_label_id:
        status = "resolved"
    elif item.n_submitted >= overlap:
        status = "answered"
    elif item.n_leased:
        status = "in_progress"
    elif item.n_submitted:
        status = "partly"
    else:
        status = "waiting"
    agreement = ""
    if item.n_submitted >= 2:
        agreement = "agree" if item.n_agents == 1 and item.step_lo == item.step_hi else "disagree"
    now = timezone.now()
    for copy in copies:
        # What the table says of each person on the item: answered, holding it, or let the lease run out.
        copy.state = (
            "answered"
            if copy.status == CopyStatus.SUBMITTED
            else "holds it"
            if copy.lease_expires_at and copy.lease_expires_at > now
            else "lease ran out"
        )
    return ItemListRow(
        item=item,
        status=status,
        status_label=dict(ITEM_STATUSES)[status],
        copies=copies,
        lease_expires_at=item.lease_until,
        agreement=agreement,
    )


# Labels that came with the data (a dataset's gold, an injected fault, a counterfactual replay) rather than from this
# project's reviewers: what an owner compares the annotators' answers with when deciding.
REFERENCE_SOURCES = (LabelSource.IMPORTED, LabelSource.INJECTED, LabelSource.COUNTERFACTUAL)


def reference_gold(*, trace_ids: list[int]) -> dict[int, list[GoldLabel]]:
    """The imported (or injected) gold labels of each trace, oldest first."""
    out: dict[int, list[GoldLabel]] = {}
    for label in GoldLabel.objects.filter(trace_id__in=trace_ids, source__in=REFERENCE_SOURCES).order_by(
        "pk"
    ):
        out.setdefault(label.trace_id, []).append(label)
    return out


@dataclass
class ErrorCandidate:
    """One labelled error of a trace an owner may pick as decisive (or keep beside it) when deciding an item.

    ``key`` names its row: ``a<pk>`` an annotator's decisive answer, ``e<pk>`` an annotator's further error,
    ``l<pk>`` an error label already on the trace, ``g<pk>`` a reference gold label without error labels."""

    key: str
    origin: str  # who said so, for the page: "ann: decisive", "Imported TRAIL"…
    step_index: int
    agent_name: str
    category: str
    note: str
    family: str = ""
    decisive: bool = False  # decisive where it came from


def error_candidates(*, item: QueueItem) -> list[ErrorCandidate]:
    """Every labelled error of the item's trace that sits on a step: the annotators' answers (decisive, then further)
    first, then the trace's error labels of every source, then imported gold the error labels do not already hold."""
    out: list[ErrorCandidate] = []
    answers = (
        item.copies.filter(status=CopyStatus.SUBMITTED)
        .select_related("annotator")
        .prefetch_related("further_errors")
        .order_by("slot")
    )
    for a in answers:
        who = a.annotator.username if a.annotator else "?"
        out.append(
            ErrorCandidate(
                f"a{a.pk}",
                f"{who}: decisive",
                a.step_index or 0,
                a.agent_name,
                a.category,
                a.reason,
                decisive=True,
            )
        )
        out.extend(
            ErrorCandidate(f"e{e.pk}", f"{who}: further", e.step_index, e.agent_name, e.category, e.note)
            for e in a.further_errors.all()
        )
    labels = ErrorLabel.objects.filter(trace_id=item.trace_id, step_index__isnull=False).order_by(
        "source", "position"
    )
    sources = dict(LabelSource.choices)
    held = set()
    for label in labels:
        held.add((label.source, label.step_index, label.agent_name))
        out.append(
            ErrorCandidate(
                f"l{label.pk}",
                f"{sources.get(label.source, label.source)} {label.family}".strip(),
                label.step_index,
                label.agent_name,
                label.category,
                label.description,
                family=label.family,
                decisive=label.decisive,
            )
        )
    for gold in reference_gold(trace_ids=[item.trace_id]).get(item.trace_id, []):
        if (gold.source, gold.step_index, gold.agent_name) not in held:
            out.append(
                ErrorCandidate(
                    f"g{gold.pk}",
                    f"{sources.get(gold.source, gold.source)} gold",
                    gold.step_index,
                    gold.agent_name,
                    gold.category,
                    gold.reason,
                    decisive=True,
                )
            )
    return out


def decide_context(*, item: QueueItem, candidates: list[ErrorCandidate]) -> dict:
    """What an owner sees to decide one item: the submitted answers, the reference gold, the steps the candidate
    errors name, and the trace's agents and the queue's taxonomy."""
    answers = list(
        item.copies.filter(status=CopyStatus.SUBMITTED)
        .select_related("annotator")
        .prefetch_related("further_errors")
    )
    gold = reference_gold(trace_ids=[item.trace_id]).get(item.trace_id, [])
    named = sorted({c.step_index for c in candidates})
    steps = (
        Step.objects.filter(trace=item.trace, index__in=named)
        .select_related("agent")
        .defer("raw")
        .order_by("index")
    )
    return {
        "item": item,
        "queue": item.queue,
        "project": item.queue.project,
        "trace": item.trace,
        "answers": answers,
        "gold": gold,
        "steps": steps,
        "candidates": candidates,
        "agents": list(item.trace.agents.all()),
        "groups": taxonomy_groups(item.queue.taxonomy),
    }


def queue_annotators(*, queue: ReviewQueue) -> list:
    """The people a queue names as its only annotators (empty: anyone who may label)."""
    return list(queue.annotators.order_by("username"))
