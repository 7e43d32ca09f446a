"""Reads for learning: a project's verified labels as training examples."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tracing.models import ErrorLabel, GoldLabel, LabelSource, Project, Trace

from ..models import AttributorModel, ProjectAttribution
from ..selectors import gold_for, labelled_count, trace_view
from .calibration import MIN_LABELS, STRENGTH, Calibration
from .model import Example

# Every kind of label a person or a replay has verified. A verdict a method gave is never a training label.
VERIFIED_SOURCES = tuple(LabelSource.values)


def training_traces(*, project_ids: Iterable[int], sources: Iterable[str] = VERIFIED_SOURCES) -> list[Trace]:
    """The traces of these projects whose best label (``gold_for``) comes from one of ``sources``, oldest first."""
    wanted = set(sources)
    traces = (
        Trace.objects.filter(project_id__in=list(project_ids), gold_labels__source__in=list(wanted))
        .distinct()
        .order_by("pk")
        .select_related("derived_from")
        .prefetch_related("gold_labels")
    )
    return [t for t in traces if (g := gold_for(t)) is not None and g.source in wanted]


def training_examples(
    *, project_ids: Iterable[int], sources: Iterable[str] = VERIFIED_SOURCES
) -> list[Example]:
    """One example per trace: its snapshot and its best verified label. A fault-injected case is grouped with the
    run it was made from, so cross-validation never trains on a sibling of the trace it scores. Groups are named by
    trace name (unique within a project), not by database id, so the folds of the same data are the same
    on every machine and after every re-import."""
    out = []
    traces = training_traces(project_ids=project_ids, sources=sources)
    errors = error_steps(trace_ids=[t.pk for t in traces], sources=sources)
    for trace in traces:
        gold = gold_for(trace)
        if gold is None:  # training_traces keeps only traces with one
            continue
        out.append(
            Example(
                view=trace_view(trace),
                agent=gold.agent_name,
                step=gold.step_index,
                source=gold.source,
                group=_group(trace),
                errors=errors.get(trace.pk, ()),
            )
        )
    return out


def error_steps(
    *, trace_ids: list[int], sources: Iterable[str] = VERIFIED_SOURCES
) -> dict[int, tuple[int, ...]]:
    """The steps of every labelled error of these traces (``ErrorLabel``: AgentRx's failures, TRAIL's errors), by
    trace, from the given label sources; an error not tied to a step is left out."""
    out: dict[int, list[int]] = {}
    rows = ErrorLabel.objects.filter(
        trace_id__in=trace_ids, step_index__isnull=False, source__in=list(sources)
    ).values_list("trace_id", "step_index")
    for trace_id, step in rows.order_by("trace_id", "step_index").iterator(chunk_size=5000):
        out.setdefault(trace_id, []).append(step)
    return {t: tuple(dict.fromkeys(steps)) for t, steps in out.items()}


def _group(trace: Trace) -> str:
    """The fold group: the name of the run a trace was derived from, or its own (the same name in two training
    projects shares a fold, which only makes the split more cautious)."""
    origin = trace.derived_from or trace
    return origin.name or f"trace {origin.pk}"


def trained_with_origins(trace_ids: Iterable[int]) -> list[int]:
    """``trace_ids`` and the traces they were derived from: what a model trained on them has seen."""
    ids = set(trace_ids)
    ids |= set(
        Trace.objects.filter(pk__in=ids, derived_from__isnull=False).values_list("derived_from_id", flat=True)
    )
    return sorted(ids)


def trained_on(model: AttributorModel) -> frozenset[int]:
    """The traces ``model`` learned from and their origins (``AttributorModel.trained_trace_ids``). For a model
    trained before that was kept, every trace of its training projects with a label from one of its sources: a
    superset (traces labelled since are counted too), so such a model's figures leave out more, never less."""
    if model.trained_trace_ids is not None:
        return frozenset(model.trained_trace_ids)
    labels = GoldLabel.objects.filter(
        trace__project_id__in=model.training_project_ids, source__in=model.label_sources or VERIFIED_SOURCES
    )
    return frozenset(trained_with_origins(labels.values_list("trace_id", flat=True).distinct()))


def in_sample_traces(trace_ids: Iterable[int], trained: frozenset[int]) -> set[int]:
    """Those of ``trace_ids`` a model that learned from ``trained`` has seen: one of them, or a copy derived from
    one of them (a trace derived from a trained one is in ``trained`` already when it was trained on itself)."""
    ids = set(trace_ids)
    if not ids or not trained:
        return set()
    seen = ids & trained
    seen |= set(
        Trace.objects.filter(pk__in=ids - seen, derived_from_id__in=trained).values_list("pk", flat=True)
    )
    return seen


def labelled_unseen(model: AttributorModel) -> list[int]:
    """The labelled traces of the model's project that it never learned from (nor a copy of): on them its verdicts
    say how it does on failures it has not seen -- the labels confirmed since it was trained, in a project it
    trained on."""
    from ..selectors import labelled_trace_ids

    ids = labelled_trace_ids(project=model.project)
    return sorted(set(ids) - in_sample_traces(ids, trained_on(model)))


def evaluation_selection(*, project: Project, method: str) -> tuple[list[int], AttributorModel | None]:
    """What the evaluation page's Run button attributes: every labelled trace, or for the learned method with a
    trained default model, those the model never learned from (a figure on the others would be its memory), and
    that model."""
    from ..selectors import labelled_trace_ids

    if method == "learned":
        settings = attribution_settings_of(project=project)
        model = settings.attributor if settings is not None else None
        if model is not None and model.status == "succeeded":
            return labelled_unseen(model), model
    return labelled_trace_ids(project=project), None


def labelled_traces_count(*, project_ids: Iterable[int], sources: Iterable[str] = VERIFIED_SOURCES) -> int:
    """How many traces of these projects carry a label of one of ``sources``: one count in SQL, what an automatic
    retrain compares with the count when the model was queued."""
    return (
        GoldLabel.objects.filter(trace__project_id__in=list(project_ids), source__in=list(sources))
        .values("trace_id")
        .distinct()
        .count()
    )


def label_counts(*, project_id: int) -> dict[str, int]:
    """How many traces of the project have a label of each source."""
    from django.db.models import Count

    rows = (
        GoldLabel.objects.filter(trace__project_id=project_id)
        .values("source")
        .annotate(n=Count("trace", distinct=True))
    )
    return {r["source"]: r["n"] for r in rows}


def attributor_models_of(*, project: Project, limit: int = 100) -> list[AttributorModel]:
    """The project's learned attributors for the models page, newest first (the model's own ordering)."""
    return list(AttributorModel.objects.filter(project=project).select_related("created_by")[:limit])


def model_versions(*, model: AttributorModel, limit: int = 12) -> list[AttributorModel]:
    """The trained versions of ``model``'s name in its project, oldest first (the last ``limit``): what each round
    of labels bought, for the model page."""
    from ..models import AttributorStatus

    newest = (
        AttributorModel.objects.filter(
            project_id=model.project_id, name=model.name, status=AttributorStatus.SUCCEEDED
        )
        .only("id", "name", "version", "n_traces", "cv", "created_at", "retrained_from_id")
        .order_by("-version")[:limit]
    )
    return sorted(newest, key=lambda m: m.version)


def attribution_settings_of(*, project: Project) -> ProjectAttribution | None:
    """The project's attribution settings (default attributor, stored calibration), or None before the first write."""
    return (
        ProjectAttribution.objects.filter(project=project)
        .select_related("attributor", "attributor__retrained_from")
        .first()
    )


def calibration_summary(*, project: Project) -> dict[str, Any]:
    """The stored calibration described for people (never refit here: a GET does not write)."""
    stored = (
        ProjectAttribution.objects.filter(project=project).values("calibration", "calibrated_at").first()
        or {}
    )
    calibration = Calibration.from_dict(stored["calibration"]) if stored.get("calibration") else None
    return {
        "described": calibration.describe() if calibration else None,
        "labelled": labelled_count(project=project),
        "min_labels": MIN_LABELS,
        "strength": f"{STRENGTH:g}",
        "calibrated_at": stored.get("calibrated_at"),
    }
