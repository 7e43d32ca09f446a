"""Reads for review queues: which traces a filter picks, what an annotator sees, and how far people agree."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from attribution.methods.base import StepView, TraceView
from attribution.models import Verdict
from attribution.taxonomy import CATEGORIES
from tracing import selectors as tracing_selectors
from tracing.models import GoldLabel, Membership, Project, Role, Step, Trace

from ..agreement import (
    Answer,
    PairRates,
    cohen_kappa,
    krippendorff_alpha,
    majority,
    pairwise,
    rater_kappa,
    unanimous,
)
from ..models import Annotation, Assignment, CopyStatus, QueueItem, QueueSource, ReviewQueue, Skip

DEFAULT_LIMIT = 500  # traces a new queue takes from its filter unless told otherwise
MAX_LIMIT = 20_000
DEFAULT_THRESHOLD = 0.5
# Above this many steps the labelling page skips the dependency-graph evidence hint, as the trace page does.
EVIDENCE_MAX_STEPS = 5000


# --- filling -----------------------------------------------------------------------------------------------------


def queue_candidate_ids(*, project: Project, source: str, params: dict) -> list[int]:
    """Trace ids the queue's filter picks, oldest first (a stable order, so refilling adds only the new ones)."""
    limit = min(int(params.get("limit") or DEFAULT_LIMIT), MAX_LIMIT)
    if source == QueueSource.LOW_CONFIDENCE:
        threshold = float(params.get("threshold", DEFAULT_THRESHOLD))
        ids = (
            Verdict.objects.filter(trace__project=project, status="ok", confidence__lt=threshold)
            .values_list("trace_id", flat=True)
            .distinct()
            .order_by("trace_id")
        )
        return list(ids[:limit])
    if source == QueueSource.DISAGREE:
        return _disagreeing_trace_ids(project)[:limit]
    filters = tracing_selectors.TraceFilters(has_gold="no")
    if source == QueueSource.SEARCH and params.get("scope"):
        filters = scope_filters(params["scope"])
    elif source == QueueSource.SEARCH:
        filters = tracing_selectors.TraceFilters(
            q=params.get("q", ""), has_gold=params.get("gold", ""), source_format=params.get("format", "")
        )
    traces = tracing_selectors.trace_list(project=project, filters=filters).order_by("pk")
    return list(traces.values_list("pk", flat=True)[:limit])


def scope_filters(scope: str) -> tracing_selectors.TraceFilters:
    """A queue's trace-list scope as filters."""
    from tracing.forms import TraceFilterForm

    return TraceFilterForm.saved_scope(scope).filters()


def queue_source_text(queue: ReviewQueue) -> str:
    """Where a queue's items come from, in words: a scope's filters are spelled out."""
    from tracing.forms import TraceFilterForm

    scope = (queue.filter or {}).get("scope")
    if queue.source == QueueSource.SEARCH and scope:
        return f"The trace list: {TraceFilterForm.saved_scope(scope).describe()}"
    return queue.get_source_display()


def _disagreeing_trace_ids(project: Project) -> list[int]:
    """Traces where the newest verdicts of two methods name a different agent or step."""
    latest: dict[tuple[int, str], tuple[str, int | None]] = {}
    rows = (
        Verdict.objects.filter(trace__project=project, status="ok")
        .order_by("-pk")
        .values_list("trace_id", "method", "agent_name", "step_index")
    )
    for trace_id, method, agent, step in rows.iterator(chunk_size=2000):
        latest.setdefault((trace_id, method), (agent, step))
    answers: dict[int, set[tuple[str, int | None]]] = defaultdict(set)
    for (trace_id, _method), answer in latest.items():
        answers[trace_id].add(answer)
    return sorted(t for t, distinct in answers.items() if len(distinct) > 1)


# --- access ------------------------------------------------------------------------------------------------------


def may_label(*, queue: ReviewQueue, membership: Membership) -> bool:
    """Owners and annotators label; viewers never; a queue with named annotators takes only those."""
    if not membership.can_upload:
        return False
    return queue.assignment == Assignment.ANYONE or queue.annotators.filter(pk=membership.user_id).exists()


def may_adjudicate(membership: Membership) -> bool:
    return membership.role == Role.OWNER


def labellers(*, project: Project) -> list[Membership]:
    return list(tracing_selectors.members_of(project=project).filter(role__in=[Role.OWNER, Role.ANNOTATOR]))


# --- lists -------------------------------------------------------------------------------------------------------


def queues_for_project(*, project: Project, user: AbstractBaseUser) -> list[ReviewQueue]:
    submitted = Q(items__copies__status=CopyStatus.SUBMITTED)
    queues = list(
        ReviewQueue.objects.filter(project=project)
        .annotate(
            item_total=Count("items", distinct=True),
            copy_total=Count("items__copies", distinct=True),
            copy_done=Count("items__copies", filter=submitted, distinct=True),
            mine_done=Count(
                "items__copies", filter=submitted & Q(items__copies__annotator=user), distinct=True
            ),
            resolved=Count("items", filter=Q(items__resolved_label__isnull=False), distinct=True),
        )
        .order_by("-created_at", "-id")
    )
    for queue in queues:
        queue.source_text = queue_source_text(queue)
    return queues


def queue_progress(*, queue: ReviewQueue, user: AbstractBaseUser) -> dict:
    copies = Annotation.objects.filter(queue=queue)
    by_status = dict(copies.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "items": QueueItem.objects.filter(queue=queue).count(),
        "copies": sum(by_status.values()),
        "submitted": by_status.get(CopyStatus.SUBMITTED, 0),
        "leased": by_status.get(CopyStatus.LEASED, 0),
        "open": by_status.get(CopyStatus.OPEN, 0),
        "mine": copies.filter(annotator=user, status=CopyStatus.SUBMITTED).count(),
        "resolved": QueueItem.objects.filter(queue=queue, resolved_label__isnull=False).count(),
    }


# --- the labelling screen ----------------------------------------------------------------------------------------


def copies_open_to(*, queue: ReviewQueue, user: AbstractBaseUser) -> QuerySet[Annotation]:
    """The queue's copies this person may be given: on items they hold no copy of, have not skipped, and that no
    owner has decided. ``annotation_claim`` takes the next one from here; the labelling screen counts them."""
    mine = Annotation.objects.filter(item=OuterRef("item"), annotator=user)
    skipped = Skip.objects.filter(item=OuterRef("item"), annotator=user)
    resolved = QueueItem.objects.filter(pk=OuterRef("item"), resolved_label__isnull=False)
    return (
        Annotation.objects.filter(queue=queue)
        .exclude(Exists(mine))
        .exclude(Exists(skipped))
        .exclude(Exists(resolved))
    )


def labelling_progress(*, queue: ReviewQueue, user: AbstractBaseUser) -> dict[str, int]:
    """Where a labeller stands, for the labelling screen: the answers they gave in this queue, and the items still
    open to them (an open copy ``copies_open_to`` them). Two counts over the queue's copies, whatever its size."""
    left = (
        copies_open_to(queue=queue, user=user)
        .filter(status=CopyStatus.OPEN)
        .values("item")
        .distinct()
        .count()
    )
    done = Annotation.objects.filter(queue=queue, annotator=user, status=CopyStatus.SUBMITTED).count()
    return {"done": done, "left": left, "total": done + left + 1}


def last_answer(*, queue: ReviewQueue, user: AbstractBaseUser) -> Annotation | None:
    """The labeller's most recent answer in the queue that can still change (its item is not decided): what the
    labelling screen's "previous answer" link reopens."""
    return (
        Annotation.objects.filter(
            queue=queue, annotator=user, status=CopyStatus.SUBMITTED, item__resolved_label__isnull=True
        )
        .select_related("item__trace")
        .order_by("-submitted_at", "-pk")
        .first()
    )


def answer_data(*, annotation: Annotation) -> dict[str, Any]:
    """A submitted answer as the labelling form sends it (the further errors as its parallel lists), to show it
    again for a revision."""
    further = list(annotation.further_errors.order_by("position"))
    return {
        "step_index": [str(annotation.step_index)] if annotation.step_index is not None else [""],
        "agent_name": [annotation.agent_name],
        "category": [annotation.category],
        "reason": [annotation.reason],
        "lead_time_ms": ["0"],
        "error_step": [str(e.step_index) for e in further],
        "error_agent": [e.agent_name for e in further],
        "error_category": [e.category for e in further],
        "error_note": [e.note for e in further],
    }


def taxonomy_groups(family: str) -> list[dict]:
    """The family's categories by group, numbered for the keyboard: a group digit, then a category digit."""
    groups: dict[str, list] = {}
    for category in CATEGORIES.values():
        if category.family == family:
            groups.setdefault(category.group, []).append(category)
    return [
        {
            "number": g,
            "name": name,
            "categories": [
                {"number": c, "code": cat.code, "label": cat.name} for c, cat in enumerate(cats, start=1)
            ],
        }
        for g, (name, cats) in enumerate(groups.items(), start=1)
    ]


def label_context(*, annotation: Annotation, page: int, per_page: int, editing: bool = False) -> dict:
    """What the labelling screen shows: the trace's window of steps, the methods' verdicts (unless the queue is
    blind), the taxonomy, where the labeller stands, and the answer they gave last (to revise it). ``editing``: the
    screen shows a submitted answer to revise, not a leased copy to answer."""
    from attribution.selectors import agent_graph_drawing, trace_view

    queue, trace = annotation.queue, annotation.item.trace
    window = tracing_selectors.step_window(trace=trace, page=page, per_page=per_page)
    verdicts = [] if queue.blind else latest_verdicts(trace_ids=[trace.pk]).get(trace.pk, [])
    # The evidence hint needs step contents; the agent graph only agents and recipients. On big traces only the
    # graph is drawn, from a light read (bench/review_queue.py, 10,000 steps: page p50 330 ms -> 140 ms).
    evidence_wanted = not queue.blind and trace.step_count <= EVIDENCE_MAX_STEPS
    view = trace_view(trace) if evidence_wanted else _graph_view(trace)
    highlight = set() if queue.blind else {v.agent_name for v in verdicts}
    verdict_steps = {v.step_index: v for v in verdicts}
    return {
        "annotation": annotation,
        "queue": queue,
        "trace": trace,
        "project": queue.project,
        "window": window,
        "agents": list(trace.agents.all()),
        "verdicts": verdicts,
        "verdict_steps": verdict_steps,
        "agent_graph": agent_graph_drawing(view, highlight=highlight),
        "evidence": _evidence(view, verdicts) if evidence_wanted else [],
        "groups": taxonomy_groups(queue.taxonomy),
        "progress": labelling_progress(queue=queue, user=annotation.annotator),
        "editing": editing,
        "previous": None if editing else last_answer(queue=queue, user=annotation.annotator),
        "draft_key": f"edit:{annotation.pk}:{int(annotation.submitted_at.timestamp())}"
        if editing and annotation.submitted_at
        else f"{annotation.pk}:{int(annotation.leased_at.timestamp()) if annotation.leased_at else 0}",
    }


def _graph_view(trace: Trace) -> TraceView:
    """Just enough of a trace for the agent graph: who spoke and to whom, without the step contents."""
    rows = Step.objects.filter(trace=trace).order_by("index").values_list("index", "agent__name", "recipient")
    steps = tuple(
        StepView(
            index=i,
            agent=a or "",
            kind="message",
            content="",
            speaker="",
            recipient=r,
            tool_name="",
            parent=None,
        )
        for i, a, r in rows.iterator(chunk_size=5000)
    )
    return TraceView(
        trace_id=trace.pk,
        name=trace.name,
        question="",
        ground_truth="",
        outcome=trace.outcome,
        steps=steps,
        agents=tuple(dict.fromkeys(s.agent for s in steps if s.agent)),
        system_prompts={},
        source_format=trace.source_format,
    )


def _evidence(view: TraceView, verdicts: list[Verdict]) -> list[str]:
    """What the first verdict's blamed step used from earlier steps, from the dependency graph."""
    step = next((v.step_index for v in verdicts if v.step_index is not None), None)
    if step is None:
        return []
    from attribution.graph import build_graph, explain_use

    return explain_use(build_graph(view), step)[:5]


def latest_verdicts(*, trace_ids: list[int]) -> dict[int, list[Verdict]]:
    """The newest successful verdict of each method, per trace."""
    out: dict[int, dict[str, Verdict]] = defaultdict(dict)
    for verdict in Verdict.objects.filter(trace_id__in=trace_ids, status="ok").order_by("-pk"):
        out[verdict.trace_id].setdefault(verdict.method, verdict)
    return {
        trace_id: sorted(by_method.values(), key=lambda v: v.method) for trace_id, by_method in out.items()
    }


# --- agreement ---------------------------------------------------------------------------------------------------


@dataclass
class ItemRow:
    item: QueueItem
    answers: list[Annotation] = field(default_factory=list)
    state: str = "pending"  # pending, disagree, unanimous, resolved
    gold: list[GoldLabel] = field(
        default_factory=list
    )  # the imported gold, filled in for the adjudication page

    def as_answers(self) -> list[Answer]:
        return [
            Answer(rater=a.annotator_id, agent=a.agent_name, step=a.step_index or 0) for a in self.answers
        ]


def adjudication_rows(*, queue: ReviewQueue) -> list[ItemRow]:
    """Every item with at least one submitted answer, and whether it needs an owner's decision."""
    rows: dict[int, ItemRow] = {}
    submitted = (
        Annotation.objects.filter(queue=queue, status=CopyStatus.SUBMITTED)
        .select_related("annotator", "item__trace", "item__resolved_label")
        .order_by("item_id", "slot")
    )
    for copy in submitted:
        rows.setdefault(copy.item_id, ItemRow(item=copy.item)).answers.append(copy)
    for row in rows.values():
        answers = row.as_answers()
        if row.item.resolved_label_id:
            row.state = "resolved"
        elif len(answers) >= 2 and not unanimous(answers):
            row.state = "disagree"
        elif len(answers) >= queue.overlap and unanimous(answers):
            row.state = "unanimous"
    return list(rows.values())


def _rates(rates: PairRates) -> dict:
    return {
        "pairs": rates.pairs,
        "agent": rates.rate("agent"),
        "step_exact": rates.rate("step_exact"),
        "step_within": rates.rate("step_within"),
    }


def agreement_report(*, queue: ReviewQueue) -> dict:
    rows = adjudication_rows(queue=queue)
    units = [row.as_answers() for row in rows]
    overall, per_rater = pairwise(units, k=queue.step_tolerance)
    reference = {row.item.trace_id: _reference(row) for row in rows}
    return {
        "items_answered": len(rows),
        "items_paired": sum(1 for u in units if len(u) >= 2),
        "overall": _rates(overall),
        "alpha_agent": krippendorff_alpha([[a.agent for a in u] for u in units]),
        "alpha_step": krippendorff_alpha([[a.step for a in u] for u in units]),
        "alpha_step_interval": krippendorff_alpha([[a.step for a in u] for u in units], "interval"),
        "annotators": _per_annotator(rows, units, per_rater, queue.step_tolerance),
        "methods": judge_vs_human(
            reference={t: r for t, r in reference.items() if r}, k=queue.step_tolerance
        ),
        "states": {
            s: sum(1 for r in rows if r.state == s) for s in ("pending", "disagree", "unanimous", "resolved")
        },
    }


def _reference(row: ItemRow) -> tuple[str, int] | None:
    """The human answer a method is compared with: the resolved gold label, else the annotators' majority."""
    if row.item.resolved_label is not None:
        return row.item.resolved_label.agent_name, row.item.resolved_label.step_index
    return majority(row.as_answers())


def _per_annotator(
    rows: list[ItemRow], units: list[list[Answer]], per_rater: dict[Hashable, PairRates], k: int
) -> list[dict]:
    people: dict[int, dict] = {}
    for row in rows:
        gold = row.item.resolved_label
        for copy in row.answers:
            person = people.setdefault(
                copy.annotator_id,
                {
                    "user": copy.annotator,
                    "answered": 0,
                    "times": [],
                    "gold_n": 0,
                    "gold_agent": 0,
                    "gold_step": 0,
                },
            )
            person["answered"] += 1
            person["times"].append(copy.lead_time_ms / 1000)
            if gold is not None and row.item.resolved_label.source == "adjudicated":
                person["gold_n"] += 1
                person["gold_agent"] += copy.agent_name == gold.agent_name
                person["gold_step"] += abs((copy.step_index or 0) - gold.step_index) <= k
    out = []
    for rater, person in people.items():
        times = person.pop("times")
        n = person["gold_n"]
        out.append(
            {
                **person,
                **_rates(per_rater.get(rater, PairRates())),
                "median_seconds": statistics.median(times) if times else None,
                "kappa_agent": rater_kappa(units, rater, "agent"),
                "vs_adjudicated_agent": person["gold_agent"] / n if n else None,
                "vs_adjudicated_step": person["gold_step"] / n if n else None,
            }
        )
    return sorted(out, key=lambda p: p["user"].get_username() if p["user"] else "")


def judge_vs_human(*, reference: dict[int, tuple[str, int]], k: int) -> list[dict]:
    """Per attribution method: its newest verdict on each trace against the human answer for that trace."""
    by_method: dict[str, list[tuple[Verdict, tuple[str, int]]]] = defaultdict(list)
    for trace_id, verdicts in latest_verdicts(trace_ids=list(reference)).items():
        for verdict in verdicts:
            by_method[verdict.method].append((verdict, reference[trace_id]))
    table = []
    for method, pairs in sorted(by_method.items()):
        n = len(pairs)
        steps = [(v.step_index if v.step_index is not None else -(10**9), human[1]) for v, human in pairs]
        table.append(
            {
                "method": method,
                "n": n,
                "agent": sum(v.agent_name == human[0] for v, human in pairs) / n,
                "step_exact": sum(a == b for a, b in steps) / n,
                "step_within": sum(abs(a - b) <= k for a, b in steps) / n,
                "kappa_agent": cohen_kappa(
                    [v.agent_name for v, _ in pairs], [human[0] for _, human in pairs]
                ),
            }
        )
    return table
