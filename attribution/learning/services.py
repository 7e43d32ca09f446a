"""Training learned attributors, choosing a project's default, and keeping the heuristic's calibration current.

Training is one job per ``AttributorModel`` row: grouped K-fold cross-validation first (the honest figures, with
baselines fitted on the training folds), then the final fit on every label. Everything is written at the end in one
transaction, so a worker killed mid-training leaves the row queued or running, never half-written; the reaper (or a
second delivery) trains it again from scratch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from tracing.models import GoldLabel, Project

from ..methods.base import MethodError, MethodResult
from ..methods.heuristic import verdict as heuristic_verdict
from ..models import AttributorModel, AttributorStatus, ProjectAttribution
from .calibration import Calibration
from .cv import cross_validate
from .features import FEATURE_SET
from .model import Attributor, Example, ModelFormatError, fit, prepare
from .priors import name_key
from .selectors import (
    VERIFIED_SOURCES,
    labelled_traces_count,
    labelled_unseen,
    trained_with_origins,
    training_examples,
)

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
MIN_TRAINING_TRACES = 4


def attributor_create(
    *,
    project: Project,
    name: str,
    projects: Iterable[Project] = (),
    sources: Iterable[str] = (),
    folds: int = DEFAULT_FOLDS,
    user: AbstractBaseUser | None = None,
    enqueue: bool = True,
    retrained_from: AttributorModel | None = None,
    labelled: int | None = None,
) -> AttributorModel:
    """Record a training job (the next version of ``name`` in ``project``) and queue it. ``projects`` are the
        projects whose labels it learns from (the project itself when none is given); ``retrained_from``: the default
        model an automatic retrain replaces once it is trained (``attributors_retrain_due``), with ``labelled``, the count
    of labelled traces it already took (``labelled_traces_count``)."""
    sources = [s for s in (sources or VERIFIED_SOURCES)]
    unknown = sorted(set(sources) - set(VERIFIED_SOURCES))
    if unknown:
        raise MethodError(f"unknown label source {', '.join(unknown)} (known: {', '.join(VERIFIED_SOURCES)})")
    name = name.strip()[:120]
    if not name:
        raise MethodError("a model needs a name")
    training = list(dict.fromkeys([*projects] or [project]))
    with transaction.atomic():
        latest = (
            (
                AttributorModel.objects.select_for_update()
                .filter(project=project, name=name)
                .aggregate(v=Max("version"))["v"]
            )
            or 0
        )
        row = AttributorModel.objects.create(
            project=project,
            name=name,
            version=latest + 1,
            created_by=user,
            folds=max(2, min(10, folds)),
            training_projects=[{"id": p.pk, "name": p.name} for p in training],
            label_sources=sources,
            feature_set=FEATURE_SET,
            stage="queued",
            retrained_from=retrained_from,
            labelled_at_queue=(
                labelled
                if labelled is not None
                else labelled_traces_count(project_ids=[p.pk for p in training], sources=sources)
            ),
        )
        if enqueue:
            from ..tasks import train_attributor_task

            transaction.on_commit(lambda: train_attributor_task.delay(row.pk))
    return row


def _progress(model_id: int, percent: int, stage: str) -> None:
    AttributorModel.objects.filter(pk=model_id).update(
        progress=percent, stage=stage[:120], heartbeat_at=timezone.now()
    )


def attributor_train(*, model_id: int) -> AttributorModel:
    """Train one model row. Safe to call again: a finished row is returned untouched."""
    claimed = AttributorModel.objects.filter(
        pk=model_id, status__in=[AttributorStatus.QUEUED, AttributorStatus.RUNNING]
    ).update(status=AttributorStatus.RUNNING, heartbeat_at=timezone.now(), stage="reading labels")
    row = AttributorModel.objects.get(pk=model_id)
    if not claimed:
        return row
    started = time.perf_counter()
    try:
        examples = training_examples(project_ids=row.training_project_ids, sources=row.label_sources)
        result = train(
            examples,
            folds=row.folds,
            label=row.label,
            progress=lambda pct, stage: _progress(model_id, pct, stage),
        )
    except MethodError as exc:
        AttributorModel.objects.filter(pk=model_id).update(
            status=AttributorStatus.FAILED, error=str(exc)[:2000], finished_at=timezone.now(), stage="failed"
        )
        row.refresh_from_db()
        return row
    model: Attributor = result.pop("model")
    with transaction.atomic():
        AttributorModel.objects.filter(pk=model_id).update(
            status=AttributorStatus.SUCCEEDED,
            progress=100,
            stage="trained",
            n_traces=result["n_traces"],
            n_steps=result["n_steps"],
            folds=result["cv"]["folds"],  # the folds it could make (no more than the traces' groups)
            cv=result["cv"],
            summary=result["summary"],
            trained_trace_ids=trained_with_origins(result["trace_ids"]),
            parameters=model.to_dict(),
            seconds=round(time.perf_counter() - started, 2),
            finished_at=timezone.now(),
        )
        if row.retrained_from_id:
            _retrained_default(row)
    row.refresh_from_db()
    return row


def _retrained_default(row: AttributorModel) -> None:
    """An automatic retrain, trained: it becomes the default in place of the version it retrains -- unless someone
    chose another default meanwhile, whose choice stands."""
    from tracing.services import audit_record

    moved = ProjectAttribution.objects.filter(
        project_id=row.project_id, attributor_id=row.retrained_from_id
    ).update(attributor_id=row.pk, default_method="learned", updated_at=timezone.now())
    if moved:
        audit_record(
            action="attributor.default",
            project=row.project,
            actor=None,
            target=row.label,
            details={"model_id": row.pk, "automatic_retrain_of": row.retrained_from_id},
        )


def attributors_retrain_due(*, enqueue: bool = True) -> list[AttributorModel]:
    """Celery beat: queue the next version of every project's default model whose training projects gained at least
    the project's ``retrain_after`` labelled traces (of the model's label sources) since the newest version of its
    name was queued -- a failed or unchosen retrain counts too, so a run that keeps failing is not retried on every
    tick. One retrain per model name at a time. Returns the versions queued."""
    queued = []
    due = ProjectAttribution.objects.filter(
        attributor__isnull=False, attributor__status=AttributorStatus.SUCCEEDED, retrain_after__gt=0
    ).select_related("attributor", "project")
    for settings in due:
        model = settings.attributor
        project_ids = model.training_project_ids
        now = labelled_traces_count(project_ids=project_ids, sources=model.label_sources)
        with transaction.atomic():
            # Two ticks at once queue one retrain: the second waits here, then sees the first one's version.
            list(ProjectAttribution.objects.select_for_update().filter(pk=settings.pk).values_list("pk"))
            versions = AttributorModel.objects.filter(
                project=settings.project, name=model.name, version__gte=model.version
            )
            if versions.filter(status__in=[AttributorStatus.QUEUED, AttributorStatus.RUNNING]).exists():
                continue
            counted = versions.aggregate(n=Max("labelled_at_queue"))["n"] or 0
            if now - counted < settings.retrain_after:
                continue
            projects = list(Project.objects.filter(pk__in=project_ids)) or [settings.project]
            queued.append(
                attributor_create(
                    project=settings.project,
                    name=model.name,
                    projects=projects,
                    sources=model.label_sources,
                    folds=model.folds,
                    retrained_from=model,
                    labelled=now,
                    enqueue=enqueue,
                )
            )
            logger.info("retraining %s: %d labelled traces now, %d at the last version", model, now, counted)
    return queued


def retrain_after_set(
    *, project: Project, every: int, actor: AbstractBaseUser | None = None
) -> ProjectAttribution:
    """How many new labelled traces retrain the project's default model (0: never)."""
    from tracing.services import audit_record

    with transaction.atomic():
        settings, _ = ProjectAttribution.objects.select_for_update().get_or_create(project=project)
        settings.retrain_after = every
        settings.save(update_fields=["retrain_after", "updated_at"])
        audit_record(
            action="attributor.retrain_after", project=project, actor=actor, target=str(every), details={}
        )
    return settings


def train(
    examples: list[Example], *, folds: int = DEFAULT_FOLDS, label: str = "", progress: Any = None
) -> dict[str, Any]:
    """Cross-validate, then fit on everything. Returns the model, its CV figures and a summary for people."""
    progress = progress or (lambda pct, stage: None)
    prepared = {}
    for k, e in enumerate(examples):
        if (p := prepare(e)) is not None:
            prepared[id(e)] = p
        if k % 25 == 0:
            progress(int(30 * k / max(1, len(examples))), f"reading trace {k + 1} of {len(examples)}")
    usable = [e for e in examples if id(e) in prepared]
    # A label whose step is not in its trace any more (the trace was re-imported shorter, the label file was wrong)
    # teaches nothing: it is left out, and said so.
    skipped = [e.view.name or f"trace {e.view.trace_id}" for e in examples if id(e) not in prepared]
    if len(usable) < MIN_TRAINING_TRACES:
        left_out = (
            f" ({len(skipped)} more label{'s' if len(skipped) != 1 else ''} point outside {'their' if len(skipped) != 1 else 'its'} trace: "
            f"{', '.join(skipped[:5])}{', …' if len(skipped) > 5 else ''})"
            if skipped
            else ""
        )
        raise MethodError(
            f"{len(usable)} labelled trace{'s' if len(usable) != 1 else ''} to learn from{left_out}; "
            f"at least {MIN_TRAINING_TRACES} are needed (label more, or add training projects)"
        )
    by_view = {id(e.view): prepared[id(e)] for e in usable}  # trace ids are 0 outside the database
    predictions: list[tuple[Example, Any]] = []
    done = {"folds": 0}
    folds = max(2, min(folds, len({e.group or e.view.trace_id for e in usable})))  # as cross_validate does

    def fitter(train_set: list[Example]):
        model = fit(train_set, prepared=[prepared[id(e)] for e in train_set])
        done["folds"] += 1
        progress(30 + int(60 * done["folds"] / folds), f"fold {done['folds']} of {folds}")

        def predict(view):
            result = model.run(view, features=by_view[id(view)].features)
            return result

        return predict

    def heuristic(train_set: list[Example]):
        # What the project gets without the model, on the same folds: the heuristic, with its priors calibrated on
        # the training folds' labels once they are enough (as a project's are: ``calibration_refresh``), scored
        # from the analysis each trace's features already hold.
        calibration = Calibration.fit((e.view, e.step) for e in train_set)

        def predict(view):
            table = calibration.priors_for(view)
            agent, step = heuristic_verdict(by_view[id(view)].features.analysis, view, table)
            return MethodResult(agent=agent, step=step, confidence=0.0, reason="")

        return predict

    cv = cross_validate(
        usable,
        {"learned": fitter, "heuristic": heuristic},
        k=folds,
        on_prediction=lambda e, r: predictions.append((e, r)),
    )
    progress(92, "final fit on every label")
    model = fit(usable, prepared=[prepared[id(e)] for e in usable], label=label)
    learned = cv["methods"]["learned"]
    return {
        "model": model,
        "trace_ids": sorted({e.view.trace_id for e in usable if e.view.trace_id}),
        "n_traces": len(usable),
        "n_steps": int(model.meta["n_steps"]),
        "cv": {
            "folds": cv["folds"],
            **_figures(learned),
            "baselines": learned["baselines"],
            "heuristic": _figures(cv["methods"]["heuristic"]),
        },
        "summary": {
            "strongest_features": model.strongest_features(),
            "confusion": agent_confusion(predictions),
            "habits": habits(model, usable),
            "sources": dict(Counter(e.source for e in usable)),
            "skipped": {"count": len(skipped), "traces": skipped[:20]},
        },
    }


# What the model page and ``train_attributor --json`` show of a scored method.
_SHOWN = ("n", "agent_accuracy", "step_accuracy", "joint_accuracy", "intervals", "step_accuracy_within")


def _figures(scored: dict[str, Any]) -> dict[str, Any]:
    return {key: scored[key] for key in _SHOWN}


def habits(model: Attributor, examples: list[Example], limit: int = 5) -> dict[str, Any]:
    """What the final fit took from the labels, for the model page: the agent and step rules the inner split chose
    (with each rule's held-out accuracy), the penalty multiplier, and the commonest blamed agents (as the labels spell
    them) and positions."""
    priors, n = model.priors, max(1, model.priors.n)
    spelled = {name_key(e.agent): e.agent for e in examples}
    return {
        "agent_rule": model.agent_rule,
        "agent_accuracy": model.meta.get("agent_accuracy") or {},
        "step_rule": model.step_rule,
        "step_accuracy": model.meta.get("step_rule_accuracy") or {},
        # The power of where labels sit under ``blend``, when the inner split's likelihood chose it (0: the model's
        # own most probable step).
        "step_prior_weight": model.meta.get("step_prior_weight")
        if model.meta.get("step_rule_accuracy")
        else None,
        "strength": model.meta.get("strength"),
        # Every labelled error the step-level detector learnt from (``errors``), the decisive ones included; None
        # for a model without one.
        "errors": {"n": model.meta.get("n_errors", 0), "traces": model.meta.get("n_traces", 0)}
        if model.errors is not None
        else None,
        "agents": [{"name": spelled.get(a, a), "share": c / n} for a, c in priors.agents.most_common(limit)],
        "ranks": [{"rank": r, "share": c / n} for r, c in priors.ranks.most_common(limit)],
    }


def agent_confusion(predictions: list[tuple[Example, Any]], limit: int = 8) -> dict[str, Any]:
    """Gold agent × predicted agent over the cross-validated predictions, for the commonest ``limit`` gold agents
    (the rest grouped as "other")."""
    gold = Counter(e.agent for e, _ in predictions)
    names = [a for a, _ in gold.most_common(limit)]

    def bucket(agent: str) -> str:
        return agent if agent in names else ("(none)" if not agent else "other")

    cells = Counter((bucket(e.agent), bucket(r.agent if r else "")) for e, r in predictions)
    columns = names + [c for c in ("other", "(none)") if any(p == c for _, p in cells)]
    rows = names + (["other"] if any(g == "other" for g, _ in cells) else [])
    return {"rows": rows, "columns": columns, "counts": [[cells[(g, p)] for p in columns] for g in rows]}


def attributor_make_default(
    *, model: AttributorModel, actor: AbstractBaseUser | None = None
) -> ProjectAttribution:
    """Make a trained model the project's default: the ``learned`` method uses it and Attribute preselects it."""
    from tracing.services import audit_record

    if model.status != AttributorStatus.SUCCEEDED:
        raise MethodError("only a trained model can be the default")
    with transaction.atomic():
        settings, _ = ProjectAttribution.objects.select_for_update().get_or_create(project=model.project)
        settings.attributor, settings.default_method = model, "learned"
        settings.save(update_fields=["attributor", "default_method", "updated_at"])
        audit_record(
            action="attributor.default",
            project=model.project,
            actor=actor,
            target=model.label,
            details={"model_id": model.pk},
        )
    return settings


def attributor_score_unseen(*, model: AttributorModel, user: AbstractBaseUser | None = None):
    """Queue a learned run of ``model`` over the project's labelled traces it never learned from: its figure on
    failures it has not seen (``selectors.labelled_unseen``). MethodError when there are none yet."""
    from ..services import run_create

    if model.status != AttributorStatus.SUCCEEDED:
        raise MethodError(f"{model.label} is not trained")
    ids = labelled_unseen(model)
    if not ids:
        raise MethodError(
            f"every labelled trace of {model.project.name} is one {model.label} learned from: "
            "confirm or label more runs, then score it on them"
        )
    return run_create(
        project=model.project,
        method="learned",
        trace_ids=ids,
        user=user,
        attributor=model,
        description=f"{model.label} on the {len(ids)} labelled trace{'s' if len(ids) != 1 else ''} it never learned from",
    )


def attributor_delete(*, model: AttributorModel, actor: AbstractBaseUser | None = None) -> None:
    """Delete a model an owner no longer wants. Not the project's default (another is chosen first, so the learned
    method never finds its model gone) and not one being trained (its worker would write into nothing). Runs and
    verdicts it made keep their figures and name it; a version retrained from it forgets where it came from."""
    from tracing.services import audit_record

    with transaction.atomic():
        locked = AttributorModel.objects.select_for_update().filter(pk=model.pk).first()
        if locked is None:
            return
        if ProjectAttribution.objects.filter(attributor=locked).exists():
            raise MethodError("it is the project's default: make another model the default first")
        if locked.status in (AttributorStatus.QUEUED, AttributorStatus.RUNNING):
            raise MethodError("it is being trained: delete it once its training has ended")
        audit_record(
            action="attributor.deleted",
            project=locked.project,
            actor=actor,
            target=locked.label,
            details={"model_id": locked.pk, "status": locked.status},
        )
        locked.delete()


def attributor_load(model: AttributorModel) -> Attributor:
    """The stored arrays as a usable model (never unpickled: see ``Attributor.from_dict``)."""
    try:
        return Attributor.from_dict(model.parameters, meta={"label": model.label, "id": model.pk})
    except ModelFormatError as exc:
        raise MethodError(f"model {model.label} cannot be used: {exc}") from None


def calibration_refresh(*, project: Project, force: bool = False) -> Calibration:
    """Refit the heuristic's priors from the project's verified labels when they changed since the last fit."""
    from ..selectors import light_trace_views

    signature = _label_signature(project)
    settings, _ = ProjectAttribution.objects.get_or_create(project=project)
    stored = Calibration.from_dict(settings.calibration)
    if stored is not None and not force and settings.calibration.get("signature") == signature:
        return stored
    labels = {}
    for trace_id, step, source in (
        GoldLabel.objects.filter(trace__project=project)
        .order_by("trace_id", "created_at", "id")
        .values_list("trace_id", "step_index", "source")
    ):
        # the label a verdict is scored against: adjudicated beats annotator beats the rest, newest first
        rank = {"adjudicated": 0, "annotator": 1}.get(source, 2)
        if trace_id not in labels or rank <= labels[trace_id][1]:
            labels[trace_id] = (step, rank)
    calibration = Calibration.fit(
        (view, labels[view.trace_id][0]) for view in light_trace_views(list(labels))
    )
    ProjectAttribution.objects.filter(pk=settings.pk).update(
        calibration=calibration.to_dict() | {"signature": signature}, calibrated_at=timezone.now()
    )
    return calibration


def _label_signature(project: Project) -> str:
    from django.db.models import Count

    agg = GoldLabel.objects.filter(trace__project=project).aggregate(n=Count("id"), last=Max("id"))
    return f"{agg['n']}:{agg['last']}"


# project id -> (calibrated_at, calibration): what this process last read. The stored calibration keeps the counts of
# every labelled trace (a trace is scored with its own label taken out), so at 20,000 labels reading and parsing it
# took 46 ms -- for every batch of 25 traces a run attributes.
_READ: dict[int, tuple[Any, Calibration | None]] = {}


def calibration_for(project: Project) -> Calibration | None:
    """The stored calibration, without refitting (runs read this; ``calibration_refresh`` writes it, moving
    ``calibrated_at``): parsed once per process and version."""
    stamp = ProjectAttribution.objects.filter(project=project).values_list("calibrated_at", flat=True).first()
    cached = _READ.get(project.pk)
    if cached is not None and stamp is not None and cached[0] == stamp:
        return cached[1]
    data = ProjectAttribution.objects.filter(project=project).values_list("calibration", flat=True).first()
    calibration = Calibration.from_dict(data) if data else None
    _READ[project.pk] = (stamp, calibration)
    return calibration
