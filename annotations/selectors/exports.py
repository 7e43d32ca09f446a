"""Reads for the annotations app: which cases a dataset export holds, their split, the manifest, the export list.

A dataset is chosen at the trace level (a few small rows per trace, never the steps), so the whole selection, the
train/test split and the manifest's counts are known before a single step is read; the steps are streamed later by
the exporters (``annotations/exporters/rows.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection, models
from django.db.models import Case as SqlCase
from django.db.models import IntegerField, QuerySet, Value, When
from django.utils import timezone

from attribution.taxonomy import TAXONOMY_VERSION
from tracing import selectors as tracing_selectors
from tracing.models import ErrorLabel, GoldLabel, LabelSource, Project, Trace

from ..models import DatasetExport

# Bumped when a field of any export format changes meaning or shape; written into every manifest.
EXPORT_FORMAT_VERSION = (
    "culprit-export/3"  # 2: labelled errors (Who&When ``errors``); 3: Parquet/CSV one row per label
)

# When a trace carries several labels among the chosen sources, the exported one is the most curated: an owner's
# adjudication beats a single annotator, which beats the label the trace was imported with; labels the machine made
# (fault injection, counterfactual replay) come last. Within one source the newest label wins.
LABEL_PRIORITY = [
    LabelSource.ADJUDICATED,
    LabelSource.ANNOTATOR,
    LabelSource.IMPORTED,
    LabelSource.INJECTED,
    LabelSource.COUNTERFACTUAL,
]
# "Verified" means a person in Culprit confirmed the label: an annotator's label or an adjudicated one.
VERIFIED_SOURCES = (LabelSource.ADJUDICATED, LabelSource.ANNOTATOR)


@dataclass
class ExportFilters:
    sources: list[str] = field(default_factory=lambda: list(LabelSource.values))
    verified_only: bool = False
    min_agreement: float | None = None
    date_from: date | None = None  # on the trace's import date, inclusive
    date_to: date | None = None  # inclusive
    seed: int = 0
    test_percent: int = 20
    scope: str = ""  # the trace list's query string: only the traces it shows (its "Export them" link)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("date_from", "date_to"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportFilters:
        filters = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        for key in ("date_from", "date_to"):
            value = getattr(filters, key)
            if isinstance(value, str):
                setattr(filters, key, date.fromisoformat(value))
        return filters


@dataclass
class ExportLabel:
    agent_name: str
    step_index: int
    reason: str
    category: str
    source: str


@dataclass
class ExportCase:
    """One trace as a dataset case: its header, the label it is exported with and its split. No steps."""

    trace_id: int
    name: str
    external_id: str
    question: str
    ground_truth: str
    outcome: str
    source_format: str
    metadata: dict[str, Any]
    step_count: int
    label: ExportLabel
    split: str = "train"


# --- agreement, from the review queues ----------------------------------------------------------------------------


def agreement_for_traces(*, trace_ids: list[int]) -> dict[int, float | None]:
    """Per-trace agreement between annotators, in [0, 1]: the share of pairs of submitted answers (over every queue
    the trace is in) that name the same agent and the same step. None where fewer than two people answered."""
    from itertools import combinations

    from ..models import Annotation, CopyStatus

    answers: dict[int, list[tuple[str, int]]] = {}
    rows = Annotation.objects.filter(
        item__trace_id__in=trace_ids, status=CopyStatus.SUBMITTED, step_index__isnull=False
    ).values_list("item__trace_id", "agent_name", "step_index")
    for trace_id, agent, step in rows:
        answers.setdefault(trace_id, []).append((agent, step))
    out: dict[int, float | None] = dict.fromkeys(trace_ids)
    for trace_id, given in answers.items():
        pairs = list(combinations(given, 2))
        if pairs:
            out[trace_id] = sum(a == b for a, b in pairs) / len(pairs)
    return out


# --- choosing the cases --------------------------------------------------------------------------------------------


def export_cases(*, project: Project, filters: ExportFilters) -> list[ExportCase]:
    """The cases an export with ``filters`` holds, in a stable order (split, then name), with their split set."""
    cases = _labelled_cases(project, filters)
    if filters.verified_only:
        cases = [c for c in cases if c.label.source in VERIFIED_SOURCES]
    if filters.min_agreement is not None:
        agreement = agreement_for_traces(trace_ids=[c.trace_id for c in cases])
        cases = [
            c for c in cases if (a := agreement.get(c.trace_id)) is not None and a >= filters.min_agreement
        ]
    assign_splits(cases, seed=filters.seed, test_percent=filters.test_percent)
    return sorted(cases, key=lambda c: (c.split != "train", c.name, c.trace_id))


def _labelled_cases(project: Project, filters: ExportFilters) -> list[ExportCase]:
    cases: dict[int, ExportCase] = {}
    for label in _chosen_labels(project, filters).select_related("trace").iterator(chunk_size=2000):
        if label.trace_id not in cases:  # the first label per trace is the chosen one (ordered by priority)
            cases[label.trace_id] = _case(label)
    return list(cases.values())


def _chosen_labels(project: Project, filters: ExportFilters) -> QuerySet[GoldLabel]:
    """The labels ``filters`` admit, per trace the one to export first (by LABEL_PRIORITY, then newest)."""
    labels = (
        GoldLabel.objects.filter(trace__project=project, source__in=filters.sources, trace__step_count__gt=0)
        .annotate(
            priority=SqlCase(
                *[When(source=s, then=Value(i)) for i, s in enumerate(LABEL_PRIORITY)],
                default=Value(len(LABEL_PRIORITY)),
                output_field=IntegerField(),
            )
        )
        .order_by("trace_id", "priority", "-created_at", "-id")
    )
    if filters.scope:
        labels = labels.filter(trace__in=_scope_traces(project, filters.scope))
    if filters.date_from:
        labels = labels.filter(trace__created_at__gte=_day_start(filters.date_from))
    if filters.date_to and filters.date_to < date.max - timedelta(days=1):  # the last days bound nothing
        labels = labels.filter(trace__created_at__lt=_day_start(filters.date_to + timedelta(days=1)))
    return labels


def export_scope_text(export: DatasetExport) -> str:
    """The trace-list filters an export was limited to, in words; "" for an export of every labelled trace."""
    from tracing.forms import TraceFilterForm

    scope = (export.filters or {}).get("scope") or ""
    return TraceFilterForm.saved_scope(scope).describe() if scope else ""


def _scope_traces(project: Project, scope: str) -> QuerySet:
    """The traces a trace-list scope shows, as a subquery of their ids."""
    from tracing.forms import TraceFilterForm

    filters = TraceFilterForm.saved_scope(scope).filters()
    return tracing_selectors.trace_list(project=project, filters=filters).order_by().values("pk")


@dataclass
class _CountedCase:
    """What the builder's preview needs of a case: its identity (for the split), steps and label source. The
    builder asks on every filter change, so it never loads the traces' questions, answers and metadata."""

    trace_id: int
    name: str
    external_id: str
    step_count: int
    source: str
    agent_name: str = ""
    step_index: int | None = None
    split: str = "train"


def _counted_cases(project: Project, filters: ExportFilters) -> list[_CountedCase]:
    rows = _chosen_labels(project, filters).values_list(
        "trace_id",
        "trace__name",
        "trace__external_id",
        "trace__step_count",
        "source",
        "agent_name",
        "step_index",
    )
    cases: dict[int, _CountedCase] = {}
    for trace_id, name, external_id, steps, source, agent, step in rows.iterator(chunk_size=5000):
        if trace_id not in cases:
            cases[trace_id] = _CountedCase(trace_id, name, external_id, steps, source, agent, step)
    chosen = list(cases.values())
    if filters.verified_only:
        chosen = [c for c in chosen if c.source in VERIFIED_SOURCES]
    if filters.min_agreement is not None:
        agreement = agreement_for_traces(trace_ids=[c.trace_id for c in chosen])
        chosen = [
            c for c in chosen if (a := agreement.get(c.trace_id)) is not None and a >= filters.min_agreement
        ]
    assign_splits(chosen, seed=filters.seed, test_percent=filters.test_percent)
    return chosen


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _case(label: GoldLabel) -> ExportCase:
    trace = label.trace
    return ExportCase(
        trace_id=trace.pk,
        name=trace.name,
        external_id=trace.external_id,
        question=trace.question,
        ground_truth=trace.ground_truth,
        outcome=trace.outcome,
        source_format=trace.source_format,
        metadata=trace.metadata or {},
        step_count=trace.step_count,
        label=ExportLabel(
            agent_name=label.agent_name,
            step_index=label.step_index,
            reason=label.reason,
            category=label.category,
            source=label.source,
        ),
    )


def assign_splits(cases: list[ExportCase], *, seed: int, test_percent: int) -> None:
    """Deterministic train/test split: cases are ranked by a hash of (seed, name, external id) and the first
    ``test_percent`` % (rounded) go to test. The hash uses the case's identity, not its database id, so the same
    seed gives the same split in another project, on another machine, or after a re-import."""
    ranked = sorted(
        cases, key=lambda c: hashlib.sha256(f"{seed}:{c.name}:{c.external_id}".encode()).hexdigest()
    )
    test_count = round(len(cases) * test_percent / 100)
    for position, case in enumerate(ranked):
        case.split = "test" if position < test_count else "train"


def export_manifest(
    *, project: Project, filters: ExportFilters, cases: list[ExportCase], fmt: str
) -> dict[str, Any]:
    provenance: dict[str, int] = {}
    for case in cases:
        provenance[case.label.source] = provenance.get(case.label.source, 0) + 1
    splits = {"train": sum(c.split == "train" for c in cases), "test": sum(c.split == "test" for c in cases)}
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "format": fmt,
        "project": project.name,
        "created_at": timezone.now().isoformat(timespec="seconds"),
        "taxonomy_version": TAXONOMY_VERSION,
        "filters": filters.as_json(),
        "seed": filters.seed,
        "split_sizes": splits,
        "counts": {
            "cases": len(cases),
            "steps": sum(c.step_count for c in cases),
            "steps_by_split": {s: sum(c.step_count for c in cases if c.split == s) for s in splits},
        },
        "label_provenance": dict(sorted(provenance.items())),
        "label_choice": "one label per case: "
        + " > ".join(LABEL_PRIORITY)
        + ", newest first within a source",
        "error_label_families": _error_label_families(cases),
    }


def _error_label_families(cases: list[ExportCase]) -> list[str]:
    """The taxonomy families of the labelled errors the export carries (TRAIL, MAST, …), for the manifest."""
    ids = [c.trace_id for c in cases]
    return sorted(
        set(
            ErrorLabel.objects.filter(trace_id__in=ids)
            .exclude(family="")
            .values_list("family", flat=True)
            .distinct()
        )
    )


def _chosen_sql(project: Project, filters: ExportFilters) -> tuple[str, list[Any]] | None:
    """PostgreSQL: the SQL of the cases ``filters`` select (per trace the first label by priority, then the
    verified-only filter), as ``_counted_cases`` chooses them, with its parameters. None where the cases must be built
    in Python (SQLite, or an agreement filter)."""
    if connection.vendor != "postgresql" or filters.min_agreement is not None:
        return None
    chosen = (
        _chosen_labels(project, filters)
        .order_by("trace_id", "priority", "-created_at", "-id")
        .distinct("trace_id")  # the first label per trace, as the Python path keeps it
        .values(
            "trace_id",
            "source",
            "trace__name",
            "trace__external_id",
            "trace__step_count",
            "agent_name",
            "step_index",
        )
    )
    sql, params = chosen.query.sql_with_params()
    if not filters.verified_only:
        return f"SELECT * FROM ({sql}) AS chosen", list(params)  # noqa: S608 -- Django's own compiled SQL
    verified = [str(source) for source in VERIFIED_SOURCES]
    return f"SELECT * FROM ({sql}) AS chosen WHERE chosen.source = ANY(%s)", [*params, verified]  # noqa: S608


PREVIEW_SAMPLE = 5  # the first cases of the export the builder shows
# ... in projects of up to this many traces. Finding them keeps every ranked case for a second read; measured on
# PostgreSQL (AMD EPYC, 2 cores), the preview's p50 at 20,000 cases 155-161 ms with them against 130-147 without,
# at 100,000 cases 459-496 against 317-343: past the 300 ms every page must stay under (issue 19).
PREVIEW_SAMPLE_UP_TO = 20_000

# The cases ``_chosen_sql`` selects, each with its place in the split's ranking (``assign_splits``: the SHA-256 of
# seed, name and external id, ties by trace id) and the number of test cases (rounded half to even, as Python's
# ``round``). Parameters: the seed, the test percentage, then the chosen SQL's.
_RANKED = (
    "SELECT c.trace_id, c.trace__name AS name, c.agent_name, c.step_index, c.trace__step_count AS steps, c.source,"
    "  row_number() OVER (ORDER BY sha256(convert_to("
    "    %s || ':' || c.trace__name || ':' || c.trace__external_id, 'UTF8')), c.trace_id) AS position,"
    "  round((count(*) OVER () * %s)::float8 / 100) AS test"
    " FROM ({chosen}) AS c"
)
_SUMS = (
    "SELECT NULL::bigint, source, count(*), coalesce(sum(steps), 0), count(*) FILTER (WHERE position <= test), "
    "  coalesce(sum(steps) FILTER (WHERE position <= test), 0), NULL, NULL, NULL::integer, false "
    "FROM {ranked} GROUP BY source"
)
# The export's first cases in its order: train, then test; names in code-point order (the C collation), as Python
# sorts them.
_FIRST = (
    "SELECT trace_id, source, NULL, NULL, NULL, NULL, name, agent_name, step_index, position <= test "
    'FROM ranked ORDER BY position <= test, name COLLATE "C", trace_id LIMIT %s'
)


def _preview_in_sql(
    project: Project, filters: ExportFilters
) -> tuple[list[tuple[str, int, int, int, int]], list[dict[str, Any]] | None] | None:
    """Per label source: cases, steps, test cases, test steps -- split as ``assign_splits`` splits, counted by the
    database: the builder reads a few rows instead of building and hashing one object per case (about 600 -> 250 ms
    at 100,000 cases) -- and, in a project of up to ``PREVIEW_SAMPLE_UP_TO`` traces, in the same statement the
    export's first ``PREVIEW_SAMPLE`` cases (else None). None where the cases must be built in Python."""
    chosen = _chosen_sql(project, filters)
    if chosen is None:
        return None
    sql, params = chosen
    with_sample = Trace.objects.filter(project=project).count() <= PREVIEW_SAMPLE_UP_TO
    ranked = _RANKED.format(chosen=sql)
    # Django's own compiled SQL inside; every value (its and ours) is a parameter. The CTE is read twice and
    # computed once.
    if with_sample:
        query = f"WITH ranked AS ({ranked}) {_SUMS.format(ranked='ranked')} UNION ALL ({_FIRST})"
        arguments = [str(filters.seed), filters.test_percent, *params, PREVIEW_SAMPLE]
    else:
        query = _SUMS.format(ranked=f"({ranked}) AS ranked")
        arguments = [str(filters.seed), filters.test_percent, *params]
    with connection.cursor() as cursor:
        cursor.execute(query, arguments)
        rows = cursor.fetchall()
    sums = [(r[1], r[2], r[3], r[4], r[5]) for r in rows if r[0] is None]
    sample = [
        _sample_row(trace_id, name, agent, step, source, test)
        for trace_id, source, *_, name, agent, step, test in rows
        if trace_id is not None
    ]
    return sums, (sample if with_sample else None)


def _sample_row(
    trace_id: int, name: str, agent: str, step: int | None, source: str, test: bool
) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "name": name,
        "agent": agent,
        "step": step,
        "source": source,
        "split": "test" if test else "train",
    }


def export_preview(*, project: Project, filters: ExportFilters) -> dict[str, Any]:
    """The builder's summary of what ``filters`` select (the manifest's counts, split sizes and label sources) and
    the export's first cases (``sample``; None in a project of more than ``PREVIEW_SAMPLE_UP_TO`` traces), from
    narrow columns per label: no trace is loaded and nothing is written."""
    found = _preview_in_sql(project, filters)
    if found is None:  # the cases built in Python, summed the same way
        by_source: dict[str, list[int]] = {}
        cases = _counted_cases(project, filters)
        for case in cases:
            sums = by_source.setdefault(case.source, [0, 0, 0, 0])
            test = case.split == "test"
            sums[0], sums[1] = sums[0] + 1, sums[1] + case.step_count
            sums[2], sums[3] = sums[2] + test, sums[3] + case.step_count * test
        rows = [(source, *sums) for source, sums in by_source.items()]
        first = sorted(cases, key=lambda c: (c.split != "train", c.name, c.trace_id))[:PREVIEW_SAMPLE]
        sample = [
            _sample_row(c.trace_id, c.name, c.agent_name, c.step_index, c.source, c.split == "test")
            for c in first
        ]
    else:
        rows, sample = found
    total, steps = sum(r[1] for r in rows), sum(r[2] for r in rows)
    test, test_steps = sum(r[3] for r in rows), sum(r[4] for r in rows)
    return {
        "counts": {
            "cases": total,
            "steps": steps,
            "steps_by_split": {"train": steps - test_steps, "test": test_steps},
        },
        "split_sizes": {"train": total - test, "test": test},
        "label_provenance": dict(sorted((r[0], r[1]) for r in rows)),
        "sample": sample,
        "sample_up_to": f"{PREVIEW_SAMPLE_UP_TO:,}",
    }


def export_case_count(*, project: Project, filters: ExportFilters) -> int:
    """How many cases an export with ``filters`` would hold (the builder refuses an empty one)."""
    chosen = _chosen_sql(project, filters)
    if chosen is None:
        return len(_counted_cases(project, filters))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({chosen[0]}) AS counted", chosen[1])  # noqa: S608
        return cursor.fetchone()[0]


# --- the pages -----------------------------------------------------------------------------------------------------


def answers_not_gold(*, project: Project) -> list[dict[str, Any]]:
    """Per review queue of the project, how many items people answered that are not gold labels yet (so no export
    holds them): ``[{"queue_id", "name", "items"}]``. An answer becomes a gold label when an owner accepts a
    unanimous item or decides one on the queue's adjudication page. One aggregate query."""
    from django.db.models import Count

    from ..models import CopyStatus, QueueItem

    return list(
        QueueItem.objects.filter(
            queue__project=project, resolved_label__isnull=True, copies__status=CopyStatus.SUBMITTED
        )
        .values("queue_id", name=models.F("queue__name"))
        .annotate(items=Count("id", distinct=True))
        .order_by("name")
    )


def exports_for_project(*, project: Project, limit: int = 50) -> QuerySet[DatasetExport]:
    return (
        DatasetExport.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-created_at", "-id")[:limit]
    )
