"""The models section of a project: learned attributors (train one, follow its training live, read its
cross-validated figures, make it the default) and the heuristic's calibrated priors."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tracing.models import Role

from .. import access
from ..charts import accuracy_chart, confusion_matrix_from_counts
from ..evaluation import best_baseline
from ..methods.base import MethodError
from ..models import AttributorModel, AttributorStatus, ProjectAttribution
from ..selectors.evaluation_page import _CHART_BASELINE_NAMES, BASELINE_NAMES, baseline_rows
from . import selectors, services
from .agents import RULES
from .forms import RetrainForm, TrainForm
from .model import STEP_RULES

BAR_STEPS = 20  # a feature bar's width in 5% steps (.w0–.w20): the CSP forbids style attributes


TRAINERS_ONLY = "Viewers cannot train or choose models"
RETRAIN_AFTER_DEFAULT = ProjectAttribution._meta.get_field("retrain_after").default


def _partial(request: HttpRequest, template: str, name: str) -> str:
    # HtmxMiddleware adds Vary: HX-Request. A history restore wants the whole page, never the fragment the poll asked for.
    wants_partial = request.htmx
    return f"{template}#{name}" if wants_partial else template


@login_required
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    project = membership.project
    counts = selectors.label_counts(project_id=project.pk)
    form = TrainForm(request.POST or None, user=request.user, project=project, counts=counts)
    if request.method == "POST":
        access.contributor(membership, TRAINERS_ONLY)
        if form.is_valid():
            data = form.cleaned_data
            try:
                model = services.attributor_create(
                    project=project,
                    name=data["name"],
                    projects=data["projects"],
                    sources=data["sources"],
                    folds=data["folds"],
                    user=request.user,
                )
                return redirect("attribution:model_detail", model_id=model.pk)
            except MethodError as exc:
                form.add_error(None, str(exc))
    models = selectors.attributor_models_of(project=project)
    settings = selectors.attribution_settings_of(project=project)
    context = {
        "project": project,
        "membership": membership,
        "form": form,
        "models": models,
        "training": any(not m.is_finished for m in models),
        "settings": settings,
        "labelled_now": (
            selectors.labelled_traces_count(
                project_ids=settings.attributor.training_project_ids,
                sources=settings.attributor.label_sources,
            )
            if settings and settings.attributor and not request.htmx  # the 1 s poll renders the table alone
            else None
        ),
        "retrain_form": RetrainForm(
            initial={"retrain_after": settings.retrain_after if settings else RETRAIN_AFTER_DEFAULT}
        ),
        "counts": counts,
        "calibration": selectors.calibration_summary(project=project),
    }
    return render(
        request,
        _partial(request, "attribution/model_list.html", "models"),
        context,
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def model_recalibrate(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug, Role.ANNOTATOR, TRAINERS_ONLY)
    calibration = services.calibration_refresh(project=membership.project, force=True)
    messages.success(
        request,
        f"Heuristic recalibrated from {calibration.n_labels} label"
        f"{'' if calibration.n_labels == 1 else 's'}.",
    )
    return redirect("attribution:model_list", slug=slug)


@login_required
@require_POST
def model_retrain_after(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug, Role.ANNOTATOR, TRAINERS_ONLY)
    form = RetrainForm(request.POST)
    if form.is_valid():
        every = form.cleaned_data["retrain_after"]
        services.retrain_after_set(project=membership.project, every=every, actor=request.user)
        messages.success(
            request,
            f"The default model is retrained after {every} new labelled trace{'' if every == 1 else 's'}."
            if every
            else "The default model is no longer retrained automatically.",
        )
    else:
        messages.error(request, "Retrain after: " + "; ".join(form.errors.get("retrain_after", ["a number"])))
    return redirect("attribution:model_list", slug=slug)


@login_required
@require_GET
def model_detail(request: HttpRequest, model_id: int) -> HttpResponse:
    model, membership = access.model_for(request, model_id)
    settings = selectors.attribution_settings_of(project=model.project)
    context = {
        "project": model.project,
        "membership": membership,
        "model": model,
        "is_default": settings is not None and settings.attributor_id == model.pk,
        "unseen": len(selectors.labelled_unseen(model)) if model.status == AttributorStatus.SUCCEEDED else 0,
    } | _results(model)
    return render(request, _partial(request, "attribution/model_detail.html", "body"), context)


@login_required
@require_POST
def model_make_default(request: HttpRequest, model_id: int) -> HttpResponse:
    model, membership = access.model_for(request, model_id, Role.ANNOTATOR, TRAINERS_ONLY)
    try:
        services.attributor_make_default(model=model, actor=request.user)
    except MethodError as exc:
        messages.error(request, str(exc))
    return redirect("attribution:model_detail", model_id=model.pk)


@login_required
@require_POST
def model_score_unseen(request: HttpRequest, model_id: int) -> HttpResponse:
    """Run the model over the project's labelled traces it never learned from, and show that run."""
    model, membership = access.model_for(request, model_id, Role.ANNOTATOR, TRAINERS_ONLY)
    try:
        run = services.attributor_score_unseen(model=model, user=request.user)
    except MethodError as exc:
        messages.error(request, str(exc))
        return redirect("attribution:model_detail", model_id=model.pk)
    return redirect("attribution:run_detail", run_id=run.pk)


@login_required
@require_POST
def model_delete(request: HttpRequest, model_id: int) -> HttpResponse:
    model, membership = access.model_for(request, model_id, Role.OWNER, "Only owners delete models")
    try:
        services.attributor_delete(model=model, actor=request.user)
    except MethodError as exc:
        messages.error(request, f"{model.label} was not deleted: {exc}")
        return redirect("attribution:model_detail", model_id=model.pk)
    messages.success(request, f"Deleted {model.label}.")
    return redirect("attribution:model_list", slug=membership.project.slug)


# --- what the pages show -------------------------------------------------------------------------------------------


def _results(model: AttributorModel) -> dict[str, Any]:
    cv, summary = model.cv or {}, model.summary or {}
    if not cv.get("intervals"):
        return {"cv": None}
    result = cv | {"baselines": cv.get("baselines") or {}}
    heuristic = cv.get("heuristic") if isinstance(cv.get("heuristic"), dict) else None
    return {
        "cv": cv,
        "heuristic": heuristic,
        "assessment": _assessment(result, heuristic),
        "baselines": baseline_rows(result) if result["baselines"] else [],
        "chart": _chart(model, result, heuristic),
        "features": _features(summary.get("strongest_features") or []),
        "confusion": confusion_matrix_from_counts(summary.get("confusion") or {}, chart_id="model-confusion"),
        "sources": sorted((summary.get("sources") or {}).items()),
        "habits": _habits(summary.get("habits")),
        **_versions(model),
    }


def _versions(model: AttributorModel) -> dict[str, Any]:
    """Each trained version of the model's name: its labelled traces, cross-validated figures, the best baseline on
    its folds and the change from the version before (the project's learning loop, in figures), and as a chart."""
    rows, previous = [], None
    for version in selectors.model_versions(model=model):
        cv = version.cv or {}
        if not cv.get("intervals"):
            continue
        best = {f: best_baseline(cv, f) for f in ("agent", "step")} if cv.get("baselines") else {}
        row = {
            "model": version,
            "current": version.pk == model.pk,
            "agent": cv["agent_accuracy"],
            "step": cv["step_accuracy"],
            "agent_ci": cv["intervals"]["agent"],
            "step_ci": cv["intervals"]["step"],
            "n": cv.get("n", version.n_traces),
            "best_agent": best.get("agent", (None, None))[1],
            "best_step": best.get("step", (None, None))[1],
            "agent_change": None if previous is None else cv["agent_accuracy"] - previous["agent"],
            "step_change": None if previous is None else cv["step_accuracy"] - previous["step"],
        }
        rows.append(row)
        previous = row
    if len(rows) < 2:
        return {"versions": None}
    chart = accuracy_chart(
        [
            {
                "label": f"v{r['model'].version}" + (" (this one)" if r["current"] else ""),
                "agent": r["agent"],
                "agent_ci": r["agent_ci"],
                "step": r["step"],
                "step_ci": r["step_ci"],
                "n": r["n"],
            }
            for r in rows
        ],
        chart_id=f"model-{model.pk}-versions",
        title=f"Cross-validated accuracy of every version of {model.name}, with 95% intervals",
    )
    return {"versions": rows, "versions_chart": chart}


def _habits(habits: Any) -> dict[str, Any] | None:
    """The stored habits with the rule table in the order the rules are tried (models trained before have none)."""
    if not isinstance(habits, dict):
        return None
    accuracy, steps = habits.get("agent_accuracy") or {}, habits.get("step_accuracy") or {}
    return habits | {
        "rules": [(rule, accuracy[rule]) for rule in RULES if rule in accuracy],
        "step_rules": [(rule, steps[rule]) for rule in STEP_RULES if rule in steps],
    }


def _assessment(result: dict[str, Any], heuristic: dict[str, Any] | None) -> dict[str, Any]:
    """Whether the model is worth making the default, in words: per figure, its cross-validated accuracy against
    the heuristic on the same folds, calibrated as the project's is (models trained before 2026-12-04 have no such
    figure), and against the strongest trivial baseline fitted on the training folds."""
    figures = []
    for figure, word in (("agent", "Agent"), ("step", "Step")):
        value = result[f"{figure}_accuracy"]
        row: dict[str, Any] = {"figure": word, "value": value, "heuristic": None, "baseline": None}
        if heuristic is not None:
            row["heuristic"] = heuristic[f"{figure}_accuracy"]
            row["heuristic_points"] = round(100 * (value - row["heuristic"]), 1)
            row["heuristic_gap"] = abs(row["heuristic_points"])
        if result["baselines"]:
            name, best = best_baseline(result, figure)
            row["baseline"], row["baseline_name"] = best, _baseline_label(figure, name)
            row["above_baseline"] = value > best
        figures.append(row)
    below = heuristic is not None and all(row["heuristic_points"] < 0 for row in figures)
    n = result.get("n", 0)
    return {
        "figures": figures,
        "below_heuristic": below,
        "n": n,
        "trace_points": round(100 / n, 1) if n else 0,
    }


def _baseline_label(figure: str, name: str) -> str:
    return _CHART_BASELINE_NAMES[figure].get(name) or BASELINE_NAMES.get(name, name)  # the evaluation's words


def _chart(
    model: AttributorModel, result: dict[str, Any], heuristic: dict[str, Any] | None
) -> dict[str, Any]:
    rows = [_chart_row(model.label, result)]
    if heuristic is not None:
        rows.append(_chart_row("heuristic (same folds)", heuristic))
    lines = []
    for figure in ("agent", "step") if result["baselines"] else ():
        name, value = best_baseline(result, figure)
        lines.append(
            {
                "label": _baseline_label(figure, name),
                figure: value,
                "step" if figure == "agent" else "agent": None,
            }
        )
    return accuracy_chart(
        rows,
        lines,
        chart_id=f"model-{model.pk}-chart",
        title=f"Cross-validated agent and step accuracy of {model.label}"
        + (" and of the heuristic on the same folds" if len(rows) > 1 else "")
        + ", with 95% intervals",
    )


def _chart_row(label: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "label": label,
        "agent": figures["agent_accuracy"],
        "agent_ci": figures["intervals"]["agent"],
        "step": figures["step_accuracy"],
        "step_ci": figures["intervals"]["step"],
        "n": figures.get("n", 0),
    }


def _features(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Signed weights as bars: the width is the weight's share of the largest, in BAR_STEPS steps."""
    largest = max((abs(float(f["weight"])) for f in features), default=0.0) or 1.0
    return [
        {
            "feature": f["feature"],
            "weight": float(f["weight"]),
            "sign": "pos" if f["weight"] >= 0 else "neg",
            "width": round(BAR_STEPS * abs(float(f["weight"])) / largest),
        }
        for f in features
    ]
