"""Reads for the tracing app. Every query that serves a view starts from the user's memberships."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import Http404

from .models import ErrorLabel, GoldLabel, IngestJob, Membership, Project, Step, Trace


def projects_for_user(user: AbstractBaseUser) -> QuerySet[Project]:
    return Project.objects.filter(memberships__user=user).annotate(trace_total=Count("traces", distinct=True))


def membership_for_user(*, user: AbstractBaseUser, slug: str) -> Membership:
    """The user's membership in the project ``slug``; 404 when the project is not theirs (or does not exist)."""
    membership = Membership.objects.select_related("project").filter(user=user, project__slug=slug).first()
    if membership is None:
        raise Http404("No such project")
    return membership


def members_of(*, project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username")


def trace_for_user(*, user: AbstractBaseUser, trace_id: int) -> tuple[Trace, Membership]:
    trace = Trace.objects.select_related("project", "upload").filter(pk=trace_id, project__memberships__user=user).first()
    if trace is None:
        raise Http404("No such trace")
    return trace, Membership.objects.get(project=trace.project, user=user)


@dataclass
class TraceFilters:
    q: str = ""
    has_gold: str = ""  # "", "yes", "no"
    source_format: str = ""
    outcome: str = ""  # "", or an Outcome value


def trace_list(*, project: Project, filters: TraceFilters) -> QuerySet[Trace]:
    gold = GoldLabel.objects.filter(trace=OuterRef("pk"))
    traces = Trace.objects.filter(project=project).annotate(has_gold=Exists(gold))
    if filters.q:
        traces = traces.filter(
            Q(name__icontains=filters.q) | Q(question__icontains=filters.q) | Q(external_id__icontains=filters.q)
        )
    if filters.has_gold == "yes":
        traces = traces.filter(has_gold=True)
    elif filters.has_gold == "no":
        traces = traces.filter(has_gold=False)
    if filters.source_format:
        traces = traces.filter(source_format=filters.source_format)
    if filters.outcome:
        traces = traces.filter(outcome=filters.outcome)
    return traces.order_by("-created_at", "-id")


def trace_counts(*, project: Project) -> dict[str, Any]:
    traces = Trace.objects.filter(project=project)
    by_format = dict(traces.values_list("source_format").annotate(n=Count("id")).order_by())
    return {
        "total": sum(by_format.values()),
        "with_gold": traces.filter(Exists(GoldLabel.objects.filter(trace=OuterRef("pk")))).count(),
        "by_format": dict(sorted(by_format.items())),
    }


@dataclass
class StepWindow:
    steps: list[Step]
    page: int
    pages: int
    per_page: int
    total: int

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.steps) - 1

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def step_window(*, trace: Trace, page: int, per_page: int) -> StepWindow:
    """One page of steps, fetched by index range: a 10,000-step trace costs the same as a 50-step one."""
    total = trace.step_count
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    start = (page - 1) * per_page
    steps = list(
        Step.objects.filter(trace=trace, index__gte=start, index__lt=start + per_page)
        .select_related("agent")
        .defer("raw")
        .order_by("index")
    )
    return StepWindow(steps=steps, page=page, pages=pages, per_page=per_page, total=total)


def error_labels_by_step(*, trace: Trace) -> tuple[dict[int, list[ErrorLabel]], list[ErrorLabel]]:
    """The trace's labelled errors: by step index for the step list, and those tied to no step (a span the trace
    lacks). Label files list a handful per run (TRAIL: at most 30), so all of them are read at once."""
    by_step: dict[int, list[ErrorLabel]] = {}
    unplaced: list[ErrorLabel] = []
    for label in ErrorLabel.objects.filter(trace=trace).order_by("position", "id"):
        if label.step_index is None:
            unplaced.append(label)
        else:
            by_step.setdefault(label.step_index, []).append(label)
    return by_step, unplaced


def page_of_step(*, index: int, per_page: int) -> int:
    return index // per_page + 1


def jobs_for_batch(*, project: Project, batch: str) -> list[IngestJob]:
    return with_traces(list(IngestJob.objects.filter(project=project, batch=batch).order_by("id")))


def with_traces(jobs: list[IngestJob]) -> list[IngestJob]:
    """Attach ``job.traces`` (the traces each job produced, in file order) with one query for all jobs."""
    ids = [pk for job in jobs for pk in job.trace_ids]
    traces = Trace.objects.in_bulk(ids) if ids else {}
    for job in jobs:
        job.traces = [traces[pk] for pk in job.trace_ids if pk in traces]  # type: ignore[attr-defined]
    return jobs


def recent_jobs(*, project: Project, limit: int = 20) -> list[IngestJob]:
    return with_traces(list(IngestJob.objects.filter(project=project).order_by("-id")[:limit]))
