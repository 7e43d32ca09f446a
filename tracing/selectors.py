"""Reads for the tracing app. Every query that serves a view starts from the user's memberships."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Case,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    When,
)
from django.db.models.functions import Coalesce, Greatest, Left, Length, Substr
from django.http import Http404
from django.utils import timezone

from . import extensions, search, waterfall
from .chat import Message, chat_of
from .formats.otlp_json import OtlpJson
from .long_text import CONTENT, RAW, LongText, pretty_json, root_output
from .models import (
    Agent,
    ApiToken,
    AuditEvent,
    ErrorLabel,
    GoldLabel,
    IngestJob,
    JobStatus,
    Membership,
    OtlpSpan,
    Project,
    Step,
    StepKind,
    Trace,
)


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


@dataclass
class TraceFilters:
    q: str = ""
    has_gold: str = ""  # "", "yes", "no"
    source_format: str = ""
    outcome: str = ""  # "", or an Outcome value
    agent: str = ""  # an agent name, any case
    started_from: date | None = None
    started_to: date | None = None  # inclusive
    ordering: str = ""  # a key of ORDERINGS, "-" for descending; "" is newest import first
    batch: uuid.UUID | None = None  # only the traces one upload (an IngestJob batch) made
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # the extensions' filters (tracing.extensions), cleaned


# The trace list's sortable columns: public name -> annotation (added only when sorting by it or filtering on it).
ORDERINGS = {
    "imported": "created_at",
    "name": "name",
    "started": "run_start",
    "duration": "run_duration",
    "steps": "step_count",
    "agents": "agent_count",
    "tokens": "run_tokens",
    "outcome": "outcome",
}


def _step_field(field: str, index: Any) -> Subquery:
    # A point lookup on the (trace, index) unique index per trace: linear in the number of traces, whatever their size.
    return Subquery(Step.objects.filter(trace=OuterRef("pk"), index=index).order_by().values(field)[:1])


def _with_run_times(traces: QuerySet[Trace]) -> QuerySet[Trace]:
    """``run_start`` and ``run_duration`` from the first step (the root span of a span tree, which spans the run) and
    the last one; the import time stands in for runs without times."""
    last = OuterRef("step_count") - 1
    traces = traces.annotate(
        first_start=_step_field("started_at", 0),
        first_end=_step_field("ended_at", 0),
        last_start=_step_field("started_at", last),
        last_end=_step_field("ended_at", last),
    )
    end = Coalesce(Greatest("first_end", "last_end", "last_start"), "first_end", "last_end", "last_start")
    return traces.annotate(
        run_start=Coalesce("first_start", "created_at"),
        run_duration=ExpressionWrapper(end - F("first_start"), output_field=DurationField()),
    )


def trace_search(*, project: Project, q: str, traces: int | None = None) -> search.Found | None:
    """The traces a search of the project finds: run once, then given to ``trace_list`` (its count and page). None
    without a search. ``traces``: how many the project holds, if known (``search.find``)."""
    return search.find(q, project_id=project.pk, traces=traces) if q else None


def trace_list_count(*, filters: TraceFilters, found: search.Found | None) -> int | None:
    """The number of traces ``trace_list`` holds when the search alone decides it (no other filter: sorting only
    orders): the traces found, all of the project's. None otherwise, for the list to count. Counting 20,000 found
    ids again over the project's traces cost 40-60 ms."""
    narrowed = (
        filters.has_gold
        or filters.source_format
        or filters.outcome
        or filters.agent
        or filters.started_from
        or filters.started_to
        or filters.batch
        or filters.extra
    )
    return None if found is None or narrowed else len(found.trace_ids)


def trace_list(
    *, project: Project, filters: TraceFilters, found: search.Found | None = None
) -> QuerySet[Trace]:
    gold = GoldLabel.objects.filter(trace=OuterRef("pk"))
    traces = Trace.objects.filter(project=project).annotate(has_gold=Exists(gold))
    if filters.q:
        found = found if found is not None else trace_search(project=project, q=filters.q)
        traces = traces.filter(search.trace_matches(filters.q, found))
    if filters.has_gold == "yes":
        traces = traces.filter(has_gold=True)
    elif filters.has_gold == "no":
        traces = traces.filter(has_gold=False)
    if filters.source_format:
        traces = traces.filter(source_format=filters.source_format)
    if filters.batch:
        # The traces the upload's files made. A file whose bytes were imported before shares that import's stored
        # upload (it is marked "already imported", not succeeded), so it would bring in traces it did not make.
        traces = traces.filter(
            upload_id__in=IngestJob.objects.filter(
                project=project, batch=filters.batch, status=JobStatus.SUCCEEDED, upload__isnull=False
            ).values("upload_id")
        )
    if filters.outcome:
        traces = traces.filter(outcome=filters.outcome)
    if filters.agent:
        traces = traces.filter(Exists(Agent.objects.filter(trace=OuterRef("pk"), name__iexact=filters.agent)))
    key = filters.ordering.lstrip("-")
    if filters.started_from or filters.started_to or key in ("started", "duration"):
        traces = _with_run_times(traces)
    if filters.started_from:
        traces = traces.filter(run_start__date__gte=filters.started_from)
    if filters.started_to:
        traces = traces.filter(run_start__date__lte=filters.started_to)
    if key == "tokens":
        tokens = (
            Step.objects.filter(trace=OuterRef("pk"))
            .order_by()
            .values("trace")
            .annotate(n=Sum(Coalesce("input_tokens", 0) + Coalesce("output_tokens", 0)))
            .values("n")
        )
        traces = traces.annotate(run_tokens=Coalesce(Subquery(tokens), 0))
    for ext in extensions.trace_list_extensions():
        traces = ext.annotate(traces, filters.extra)
    if key in ORDERINGS:
        names = [ORDERINGS[key]]
    elif key and (found := extensions.trace_list_order_by(traces, key)) is not None:
        traces, names = found  # an extension's column (attribution: the latest verdict)
    else:
        return traces.order_by("-created_at", "-id")
    descending = filters.ordering.startswith("-")
    # NULLs last both ways: a trace without the value (no times, no verdict) never heads the list.
    order = [F(n).desc(nulls_last=True) if descending else F(n).asc(nulls_last=True) for n in names]
    return traces.order_by(*order, "-id")


def ordering_keys() -> list[str]:
    """Every sort key of the trace list: tracing's columns, then the extensions'."""
    return [*ORDERINGS, *extensions.trace_list_orderings()]


@dataclass
class TraceRowFacts:
    started: Any = None
    duration_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    agents: list[str] = field(default_factory=list)
    gold: GoldLabel | None = None
    hit: int | None = None  # the first step matching the search
    cells: list[extensions.Cell] = field(default_factory=list)  # the extensions' columns (latest verdict)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def trace_row_facts(*, traces: list[Trace], q: str = "") -> None:
    """Attach ``trace.facts`` (times, tokens, cost, agent names, latest gold label, first search hit, the extensions'
    cells) to one page of the trace list, with a fixed number of queries for the whole page: never one per row.
    The first search hits are one more query for ``q``, over the page's traces only."""
    ids = [t.pk for t in traces]
    facts = {pk: TraceRowFacts() for pk in ids}
    # Times, tokens and cost from the totals stored when the steps were written (``Trace.totals``); only a trace
    # without them (written before they were stored) has its steps summed here -- summing every row's steps cost
    # 130 ms a page at 20,000 traces, most of it reading each step's raw JSON for its cost.
    summed = []
    for trace in traces:
        stored = waterfall.stored_totals(trace)
        if stored is None:
            summed.append(trace.pk)
            continue
        f = facts[trace.pk]
        f.started, end = waterfall.moment_of(stored.get("started")), waterfall.moment_of(stored.get("ended"))
        f.input_tokens, f.output_tokens = stored.get("input_tokens") or 0, stored.get("output_tokens") or 0
        f.cost = stored.get("cost")
        if f.started and end:
            f.duration_ms = (end - f.started).total_seconds() * 1000
    # order_by(): Step's default ordering ("trace", "index") would join Trace and split the groups.
    times = (
        []
        if not summed
        else Step.objects.filter(trace_id__in=summed)
        .order_by()
        .values("trace_id")
        .annotate(
            start=Min("started_at"),
            end=Max("ended_at"),
            last=Max("started_at"),
            tin=Sum("input_tokens"),
            tout=Sum("output_tokens"),
        )
    )
    for row in times:
        f = facts[row["trace_id"]]
        end = max(filter(None, [row["end"], row["last"]]), default=None)
        f.started, f.input_tokens, f.output_tokens = row["start"], row["tin"] or 0, row["tout"] or 0
        if f.started and end:
            f.duration_ms = (end - f.started).total_seconds() * 1000
    if summed:
        for trace_id, cost in waterfall.llm_costs(Step.objects.filter(trace_id__in=summed)).items():
            facts[trace_id].cost = cost
    for trace_id, name in (
        Agent.objects.filter(trace_id__in=ids).order_by("position", "id").values_list("trace_id", "name")
    ):
        facts[trace_id].agents.append(name)
    for label in GoldLabel.objects.filter(trace_id__in=ids).order_by("created_at", "id"):
        label.category_name = extensions.category_name(label.category)
        facts[label.trace_id].gold = label  # the latest wins
    hits = search.first_hits(q, ids) if q else {}
    for trace_id in ids:
        facts[trace_id].hit = hits.get(trace_id)
    for trace_id, cells in extensions.trace_list_cells(list(traces)).items():
        facts[trace_id].cells = cells
    for trace in traces:
        trace.facts = facts[trace.pk]


AGENT_NAMES_FOR = 60  # seconds the agent filter's suggestions are kept per project


def agent_names(*, project: Project, limit: int = 200) -> list[str]:
    """The project's agent names, for the agent filter's suggestions: kept a minute per project and newest trace in
    the cache, since finding them reads every agent of the project (47 ms a page at 20,000 traces)."""
    newest = Trace.objects.filter(project=project).order_by("-created_at").values_list("id", flat=True)[:1]
    key = f"tracing:agent-names:{project.pk}:{next(iter(newest), 0)}:{limit}"  # a new trace: read them again
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - the cache is down: read them
        cached = None
    if cached is not None:
        return cached
    names = list(
        Agent.objects.filter(trace__project=project)
        .values_list("name", flat=True)
        .distinct()
        .order_by("name")[:limit]
    )
    with contextlib.suppress(Exception):
        cache.set(key, names, AGENT_NAMES_FOR)
    return names


def trace_counts(*, project: Project) -> dict[str, Any]:
    """The list header's counts, from the (project, format) index alone: ``COUNT(*)`` rather than of ids, and the
    ids the gold count needs stored in that index (migration 0020); reading the trace rows for them cost 40 ms at
    20,000 traces."""
    traces = Trace.objects.filter(project=project)
    by_format = dict(traces.values_list("source_format").annotate(n=Count("*")).order_by())
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
    preview = settings.CULPRIT_STEP_PREVIEW_CHARS
    steps = list(
        waterfall.with_span_facts(
            Step.objects.filter(trace=trace, index__gte=start, index__lt=start + per_page)
        )
        .select_related("agent")
        .defer("raw", "content")
        # A step's text is read up to ``preview`` characters (a 50 MB step must not make a 50 MB page); its full
        # length is counted only when it is longer, and the rest is fetched in windows (``step_content_window``).
        .annotate(
            content_preview=Left("content", preview), content_probe=Length(Left("content", preview + 1))
        )
        .annotate(content_length=Case(When(content_probe__gt=preview, then=Length("content")), default=None))
        .order_by("index")[
            :per_page
        ]  # the limit keeps the planner on the (trace, index) index (see step_chats)
    )
    for step in steps:
        step.content = step.content_preview  # what the page shows; the step is never saved from here
        step.content_truncated = step.content_length is not None
    waterfall.decorate(steps)
    return StepWindow(steps=steps, page=page, pages=pages, per_page=per_page, total=total)


def step_content_window(
    *, trace: Trace, index: int, offset: int, size: int, part: str = CONTENT
) -> tuple[str, bool] | None:
    """Characters ``offset`` to ``offset + size`` of one long text of a step (``part``: its content, its raw JSON
    pretty-printed, or the root's output), and whether more follow; None when the trace has no such step. Only that
    slice of the content or the output leaves the database; the raw JSON is pretty-printed here, so the windows cut
    the very string the page started (``long_text.pretty_json``)."""
    steps = Step.objects.filter(trace=trace, index=index)
    if part == RAW:
        raws = list(steps.values_list("raw", flat=True)[:1])
        if not raws:
            return None
        text = pretty_json(raws[0])
        return text[offset : offset + size], len(text) > offset + size
    source = F("content") if part == CONTENT else root_output()
    row = (
        steps.annotate(
            chunk=Substr(source, offset + 1, size), probe=Length(Substr(source, offset + 1, size + 1))
        )
        .values_list("chunk", "probe")
        .first()
    )
    if row is None:
        return None
    chunk, probe = row
    return chunk or "", (probe or 0) > size


def step_chats(*, trace: Trace, steps: list[Step]) -> dict[int, tuple[list[Message], LongText]]:
    """The LLM calls among ``steps`` as chat, with the start of their raw record for the raw-JSON toggle: {index:
    (messages, raw JSON)}. Raw JSON is read for these steps only (one query), never for a whole trace; what goes in
    the page is cut at CULPRIT_STEP_PREVIEW_CHARS (each message's text, each tool call's arguments, the raw JSON),
    the rest of the raw JSON is fetched in windows (``step_content_window``, part "raw")."""
    indices = [s.index for s in steps if s.kind == StepKind.LLM_CALL]
    if not indices:
        return {}
    # The range, the order and the limit keep PostgreSQL on the (trace, index) index: in a project of many short
    # traces it otherwise guesses "index < 50" matches most rows and walks all of a 100,000-step trace (0.08 s).
    raws = (
        Step.objects.filter(trace=trace, index__gte=indices[0], index__lte=indices[-1], index__in=indices)
        .order_by("index")
        .values_list("index", "raw")[: len(indices)]
    )
    preview = settings.CULPRIT_STEP_PREVIEW_CHARS
    chats = {}
    for index, raw in raws:
        text = pretty_json(raw)
        length = len(text) if len(text) > preview else None
        chats[index] = (_capped(chat_of(raw), preview), LongText(text[:preview], length, RAW, index))
    return chats


def _capped(messages: list[Message], preview: int) -> list[Message]:
    """Cut each message's text and each tool call's arguments at ``preview`` characters; ``more`` says how many
    were left out (the template points to the Raw JSON for them)."""
    for m in messages:
        m.more = max(0, len(m.text) - preview)
        m.text = m.text[:preview]
        for call in m.tool_calls:
            call.more = max(0, len(call.arguments) - preview)
            call.arguments = call.arguments[:preview]
    return messages


def error_labels_by_step(*, trace: Trace) -> tuple[dict[int, list[ErrorLabel]], list[ErrorLabel]]:
    """The trace's labelled errors: by step index for the step list, and those tied to no step (a span the trace
    lacks). Label files list a handful per run (TRAIL: at most 30), so all of them are read at once."""
    by_step: dict[int, list[ErrorLabel]] = {}
    unplaced: list[ErrorLabel] = []
    for label in ErrorLabel.objects.filter(trace=trace).order_by("position", "id"):
        # "Tool-related" as TRAIL writes it reads as "Hallucinated a tool call or its output (TRAIL: Tool-related)".
        label.category_name = extensions.category_name(label.category, label.family)
        if label.step_index is None:
            unplaced.append(label)
        else:
            by_step.setdefault(label.step_index, []).append(label)
    return by_step, unplaced


def gold_labels_named(*, trace: Trace) -> list[GoldLabel]:
    """The trace's gold labels, each with ``category_name``: a person's name for its category code, from the app
    that names categories (attribution's taxonomy), so templates never show "action.misalignment"."""
    labels = list(trace.gold_labels.all())
    for label in labels:
        label.category_name = extensions.category_name(label.category)
    return labels


# The blame strip's heat levels: heat-0 (no suspicion) .. heat-5 (the blamed step), as the CSS draws them.
BLAME_LEVELS = 5


@dataclass
class BlameStrip:
    label: str
    blamed_agent: str
    blamed_step: int | None
    levels: list[int] = field(default_factory=lambda: list(range(BLAME_LEVELS + 1)))


def blame_strip(*, trace: Trace, steps: list[Step]) -> BlameStrip | None:
    """Ask the registered provider (attribution) for the shown window's per-step scores and put each on its step as
    ``step.blame`` (a heat level) and ``step.blame_score``; only the window's scores are read."""
    if not steps:
        return None
    found = extensions.step_scores(trace, steps[0].index, steps[-1].index)
    if found is None:
        return None
    for step in steps:
        score = found.scores.get(step.index)
        step.blame_score = score
        step.blame = None if score is None else round(score * BLAME_LEVELS)
    return BlameStrip(label=found.label, blamed_agent=found.blamed_agent, blamed_step=found.blamed_step)


def page_of_step(*, index: int, per_page: int) -> int:
    return index // per_page + 1


def jobs_for_batch(*, project: Project, batch: str) -> list[IngestJob]:
    return with_traces(list(IngestJob.objects.filter(project=project, batch=batch).order_by("id")))


def with_traces(jobs: list[IngestJob], shown: int = 5) -> list[IngestJob]:
    """Attach ``job.traces`` (the first ``shown`` traces each job produced, in file order) and ``job.more_traces``
    (how many it produced beyond them) with one query for all jobs. A bundle job names thousands of traces, and the
    upload pages poll every second: they load what they show, not every trace of the bundle."""
    ids = [pk for job in jobs for pk in job.trace_ids[:shown]]
    traces = Trace.objects.only("pk", "name", "step_count").in_bulk(ids) if ids else {}
    for job in jobs:
        job.traces = [traces[pk] for pk in job.trace_ids[:shown] if pk in traces]
        job.more_traces = max(0, len(job.trace_ids) - shown)
    return jobs


def imported_filenames(*, project: Project, names: list[str]) -> set[str]:
    """Those of ``names`` that a job of the project has already imported."""
    return set(
        IngestJob.objects.filter(project=project, filename__in=names, status=JobStatus.SUCCEEDED).values_list(
            "filename", flat=True
        )
    )


def recent_jobs(*, project: Project, limit: int = 20) -> list[IngestJob]:
    return with_traces(list(IngestJob.objects.filter(project=project).order_by("-id")[:limit]))


def agents_of(*, trace: Trace) -> list[Agent]:
    return list(trace.agents.all())


def api_tokens_of(*, project: Project) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(project=project)


def api_token_of(*, project: Project, token_id: int) -> ApiToken:
    """The project's token ``token_id``; 404 for another project's (or no) token."""
    token = ApiToken.objects.filter(project=project, pk=token_id).first()
    if token is None:
        raise Http404("No such token")
    return token


def audit_events_of(*, project: Project) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(project=project)


def trace_ids(*, project: Project, filters: TraceFilters) -> list[int]:
    """The ids of the traces ``trace_list`` would show, to start a run or a campaign over them."""
    return list(trace_list(project=project, filters=filters).values_list("pk", flat=True))


def trace_scope(*, project: Project, scope: str) -> dict[str, Any] | None:
    """What a trace-list scope (its query string, carried by "Attribute them" / "Review them") selects: the query
    (to link back), the filters in words and how many traces match; ``{"error": …}`` for bad filters; None when
    there is no scope."""
    from django.core.exceptions import ValidationError

    from .forms import TraceScopeField

    try:
        form = TraceScopeField().clean(scope)
    except ValidationError as exc:
        return {"error": " ".join(exc.messages)}
    if form is None:
        return None
    return {
        "ok": True,
        "query": form.data.urlencode(),
        "describe": form.describe(),
        "count": trace_count(project=project, filters=form.filters()),
    }


def trace_names(*, project: Project, filters: TraceFilters, limit: int) -> list[tuple[int, str]]:
    """(id, name) of the first ``limit`` traces the list shows, in its order."""
    return list(trace_list(project=project, filters=filters).values_list("pk", "name")[:limit])


def trace_count(*, project: Project, filters: TraceFilters) -> int:
    return trace_list(project=project, filters=filters).count()


def trace_page(*, trace: Trace, page: int, per_page: int) -> dict[str, Any]:
    """What the trace page shows around one window of steps: the waterfall rows and totals, the steps as chat, the
    run's final answer, its agents, gold labels, error labels and the blame strip."""
    window = step_window(trace=trace, page=page, per_page=per_page)
    gold = gold_labels_named(trace=trace)
    agents = agents_of(trace=trace)
    errors_by_step, unplaced_errors = error_labels_by_step(trace=trace)
    totals = waterfall.trace_totals(trace=trace)
    return {
        "totals": totals,
        "rows": waterfall.rows(trace=trace, steps=window.steps, totals=totals),
        "chats": step_chats(trace=trace, steps=window.steps),
        "root": waterfall.root_answer(trace=trace, preview=settings.CULPRIT_STEP_PREVIEW_CHARS),
        "trace": trace,
        "window": window,
        "agents": agents,
        "has_prompts": any(a.system_prompt for a in agents),
        "gold": gold,
        "gold_steps": {g.step_index for g in gold},
        "errors_by_step": errors_by_step,
        "unplaced_errors": unplaced_errors,
        "error_count": sum(map(len, errors_by_step.values())) + len(unplaced_errors),
        "blame": blame_strip(trace=trace, steps=window.steps),
    }


# --- live OTLP ingestion ------------------------------------------------------------------------------------------

# Waiting spans counted at most (the banner then says "10,000+"): each poll reads a bounded part of the index.
ARRIVING_CAP = 10_000


@dataclass(frozen=True)
class Arriving:
    """OTLP spans received and not built into steps yet (a project's, or one trace's), as the live banner shows
    them: how many (``ARRIVING_CAP`` at most), in how many traces, since when."""

    spans: int
    traces: int
    oldest: datetime | None
    capped: bool
    ever: bool  # whether the project (or trace) ever received a span, built or not

    @property
    def waited(self) -> int:
        """Seconds the oldest counted span has waited."""
        return int((timezone.now() - self.oldest).total_seconds()) if self.oldest else 0

    @property
    def count_text(self) -> str:
        return f"{self.spans:,}{'+' if self.capped else ''}"

    @property
    def stalled(self) -> bool:
        """Waiting longer than a build takes: the worker is probably not running (or far behind)."""
        return self.waited > settings.CULPRIT_WORKER_STALLED_AFTER


def otlp_arriving(*, project: Project, trace_id: str | None = None) -> Arriving:
    """The project's (or the trace's) spans waiting to be built, and whether any span ever came: one statement, a
    capped read of the index of unbuilt spans and one index probe."""
    table = OtlpSpan._meta.db_table
    where, params = "project_id = %s", [project.pk]
    if trace_id is not None:
        where, params = where + " AND trace_id = %s", [*params, trace_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), count(DISTINCT trace_id), min(received_at), "  # noqa: S608 (fixed names)
            f"EXISTS (SELECT 1 FROM {table} WHERE {where}) "
            f"FROM (SELECT trace_id, received_at FROM {table} WHERE {where} AND NOT built LIMIT %s) AS waiting",
            [*params, *params, ARRIVING_CAP + 1],
        )
        spans, traces, oldest, ever = cursor.fetchone()
    if isinstance(oldest, str):  # SQLite returns the text it stores, in UTC
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and timezone.is_naive(oldest):
        oldest = oldest.replace(tzinfo=UTC)
    return Arriving(min(spans, ARRIVING_CAP), traces, oldest, spans > ARRIVING_CAP, bool(ever))


def is_otlp_received(trace: Trace) -> bool:
    """A trace the OTLP endpoint builds (it may still grow), not an uploaded file."""
    return trace.upload_id is None and trace.source_format == OtlpJson.name and bool(trace.external_id)


def traces_since(*, project: Project, after: int, cap: int = 1000) -> int:
    """How many of the project's traces are newer than trace ``after`` (the newest a page showed), at most ``cap``."""
    return Trace.objects.filter(project=project, pk__gt=after).values("pk")[:cap].count()


def newest_trace_id(*, project: Project) -> int:
    return Trace.objects.filter(project=project).aggregate(newest=Max("pk"))["newest"] or 0
