"""Reads of the error-schema cache: the verified cases distillation may learn from, the schemas a trace may use
(with leave-one-out), and what the schema pages show."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from tracing.models import GoldLabel, LabelSource, Project, Trace

from ..models import ErrorSchema, SchemaStatus, SchemaUse, Verdict, VerdictStatus
from . import features, index

# Verified sources. A single annotator's label is not among them: it becomes verified when adjudicated.
VERIFIED_LABEL_SOURCES = (
    LabelSource.IMPORTED,
    LabelSource.ADJUDICATED,
    LabelSource.INJECTED,
    LabelSource.COUNTERFACTUAL,
)
_LABEL_ORDER = {
    LabelSource.ADJUDICATED: 0,
    LabelSource.COUNTERFACTUAL: 1,
    LabelSource.INJECTED: 2,
    LabelSource.IMPORTED: 3,
}
# Independent verified cases a schema needs, once the trace being attributed is left out.
PROMOTION_CASES = 2


@dataclass(frozen=True)
class VerifiedCase:
    trace: Trace
    step_index: int
    agent_name: str
    source: str
    gold_label: GoldLabel | None = None
    verdict: Verdict | None = None


def verified_cases(*, project: Project) -> list[VerifiedCase]:
    """One case per trace: its best verified gold label, else its newest counterfactual-confirmed verdict."""
    cases: dict[int, VerifiedCase] = {}
    labels = (
        GoldLabel.objects.filter(trace__project=project, source__in=VERIFIED_LABEL_SOURCES)
        .select_related("trace", "trace__upload", "trace__derived_from__upload")
        .order_by("trace_id", "-id")
    )
    for label in sorted(labels, key=lambda g: (g.trace_id, _LABEL_ORDER.get(g.source, 9), -g.pk)):
        cases.setdefault(
            label.trace_id,
            VerifiedCase(
                trace=label.trace,
                step_index=label.step_index,
                agent_name=label.agent_name,
                source=label.source,
                gold_label=label,
            ),
        )
    confirmed = (
        Verdict.objects.filter(
            trace__project=project, method="counterfactual", status=VerdictStatus.OK, step_index__gte=0
        )
        .exclude(trace_id__in=list(cases))
        .select_related("trace", "trace__upload", "trace__derived_from__upload")
        .order_by("trace_id", "-id")
    )
    for verdict in confirmed:
        cases.setdefault(
            verdict.trace_id,
            VerifiedCase(
                trace=verdict.trace,
                step_index=int(verdict.step_index),
                agent_name=verdict.agent_name,
                source="counterfactual",
                verdict=verdict,
            ),
        )
    return [cases[k] for k in sorted(cases)]


# --- retrieval for a trace --------------------------------------------------------------------------------------------


@dataclass
class Retrieved:
    """A schema as one trace may use it: rebuilt without that trace's own cases (leave-one-out)."""

    id: int
    title: str
    category: str
    context: str
    detection: dict[str, Any]
    detection_text: str
    similarity: float
    cases: int  # independent verified cases behind it, the trace's own left out
    left_out: bool  # True when the trace's own cases were taken out


class SchemaSource:
    """What the ``schema_guided`` method asks for schemas: bound to one project and trace, so the method itself
    stays free of the database."""

    def __init__(self, *, project_id: int, trace_id: int, independence: str, use_cache: bool = True) -> None:
        self.project_id, self.trace_id, self.independence, self.use_cache = (
            project_id,
            trace_id,
            independence,
            use_cache,
        )
        self.from_cache = False

    @classmethod
    def for_trace(cls, trace: Trace) -> SchemaSource:
        from .services import independence_of

        return cls(project_id=trace.project_id, trace_id=trace.pk, independence=independence_of(trace))

    def retrieve(self, query: features.Query) -> list[Retrieved]:
        cards, self.from_cache = index.retrieve(
            project_id=self.project_id, query=query, use_cache=self.use_cache
        )
        out = []
        for card in cards:
            # An owner's approval vouches for a schema in the owner's own project only: a schema shared from
            # elsewhere must stand on its verified cases.
            card = card if card["project_id"] == self.project_id else card | {"approved": False}
            usable = leave_one_out(card, trace_id=self.trace_id, independence=self.independence)
            if usable is not None:
                out.append(usable)
        return out


def leave_one_out(card: dict[str, Any], *, trace_id: int, independence: str) -> Retrieved | None:
    """The schema as if the trace (and every case not independent of it) had never been seen: its detection is
    recomputed from the other cases, and it must still earn its trust from them (or from an owner's approval with at
    least one other case behind it). The prose of a schema built partly from the trace is replaced by the
    extractor's, since a model may have written it from that very trace."""
    others = [e for e in card["exemplars"] if e["trace_id"] != trace_id and e["independence"] != independence]
    left_out = len(others) != len(card["exemplars"])
    groups = len({e["independence"] for e in others})
    if not others or (groups < PROMOTION_CASES and not card["approved"]):
        return None
    if not left_out:
        return Retrieved(
            id=card["id"],
            title=card["title"],
            category=card["category"],
            context=card["context"],
            detection=card["detection"],
            detection_text=card["detection_text"],
            similarity=card["similarity"],
            cases=groups,
            left_out=False,
        )
    built = features.aggregate([e["features"] for e in others])
    return Retrieved(
        id=card["id"],
        title=built["title"],
        category=built["category"],
        context=built["context"],
        detection=built["detection"],
        detection_text=built["detection_text"],
        similarity=card["similarity"],
        cases=groups,
        left_out=True,
    )


# --- pages ------------------------------------------------------------------------------------------------------------


def schema_list(*, project: Project, q: str = "", status: str = "") -> QuerySet[ErrorSchema]:
    schemas = ErrorSchema.objects.filter(project=project)
    if status:
        schemas = schemas.filter(status=status)
    if q:
        words = Q(title__icontains=q) | Q(category__icontains=q) | Q(context__icontains=q)
        if connection.vendor == "postgresql":  # the GIN-indexed tsvector of migration 0004
            matching = RawSQL(
                "SELECT id FROM attribution_errorschema WHERE search @@ plainto_tsquery('simple', %s)", (q,)
            )
            schemas = schemas.filter(words | Q(pk__in=matching))
        else:
            schemas = schemas.filter(words | Q(search_text__icontains=q))
    return schemas.order_by("status", "-hits", "-retrievals", "-updated_at")


def schema_counts(*, project: Project) -> dict[str, int]:
    counts = Counter(ErrorSchema.objects.filter(project=project).values_list("status", flat=True))
    return {s: counts.get(s, 0) for s in SchemaStatus.values}


def schema_for_project(*, project: Project, schema_id: int) -> ErrorSchema | None:
    return ErrorSchema.objects.filter(project=project, pk=schema_id).select_related("approved_by").first()


def schema_detail_context(schema: ErrorSchema) -> dict[str, Any]:
    exemplars = list(schema.exemplars.select_related("trace").order_by("created_at")[:200])
    # A shared schema is also used by the projects that opted in to the library: their traces are theirs, so this
    # page lists only its own project's uses and counts the others.
    all_uses = SchemaUse.objects.filter(schema=schema)
    uses = list(
        all_uses.filter(trace__project_id=schema.project_id)
        .select_related("verdict", "trace")
        .order_by("-id")[:50]
    )
    elsewhere = all_uses.exclude(trace__project_id=schema.project_id).count()
    settled = schema.hits + schema.misses
    return {
        "schema": schema,
        "exemplars": exemplars,
        "independent": len({e.independence for e in exemplars}),
        "events": list(schema.events.select_related("actor")[:100]),
        "uses": uses,
        "uses_elsewhere": elsewhere,
        "precision": round(schema.hits / settled, 3) if settled else None,
    }


def uses_shared_library(*, project: Project) -> bool:
    """Whether the project has opted in to the shared schema library (off until an owner says so)."""
    from ..models import SchemaLibrarySettings

    return SchemaLibrarySettings.objects.filter(project=project, use_shared_library=True).exists()
