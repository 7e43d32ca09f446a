from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tracing import selectors as tracing_selectors
from tracing.models import Membership, Project, Role

from . import access, selectors, services
from .forms import (
    AutoAttributeForm,
    CampaignForm,
    EvaluationForm,
    LlmSettingsForm,
    SandboxForm,
    StartRunForm,
    default_method,
    model_facts,
)
from .learning import selectors as learning_selectors
from .methods import MethodError, all_methods
from .models import AttributionRun, ProjectLlmSettings


@login_required
@require_GET
def trace_panel(request: HttpRequest, trace_id: int) -> HttpResponse:
    """The verdict panel of the trace page (loaded there with hx-get): verdicts beside the gold label, the suspicion
    strip of the newest verdict, and a form to run a method on this trace."""
    trace, membership = access.trace_for(request, trace_id)
    return render(request, "attribution/trace_panel.html", _panel_context(trace, membership))


def _panel_context(trace, membership: Membership) -> dict:
    # The Attribute form preselects the project's default method (set on its models page).
    form = StartRunForm(initial={"with_ground_truth": True}, project=trace.project)
    return selectors.trace_panel_context(trace, membership) | {"form": form}


@login_required
@require_POST
def trace_attribute(request: HttpRequest, trace_id: int) -> HttpResponse:
    trace, membership = access.trace_for(request, trace_id, Role.ANNOTATOR, access.CONTRIBUTORS_ONLY)
    form = StartRunForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            services.run_create(
                project=trace.project,
                method=form.cleaned_data["method"],
                trace_ids=[trace.pk],
                user=request.user,
                with_ground_truth=form.cleaned_data["with_ground_truth"],
                description=f"trace {trace.name}",
            )
        except MethodError as exc:
            error = str(exc)
    error = error or "; ".join(e for errs in form.errors.values() for e in errs)
    if not request.htmx:  # without JavaScript: the trace's page, saying why nothing started
        if error:
            messages.error(request, error)
        return redirect("tracing:trace_detail", trace_id=trace.pk)
    context = _panel_context(trace, membership)
    context["error"] = error
    return render(request, "attribution/trace_panel.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def run_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    # ?scope=<the trace list's query string>: the traces its "Attribute them" link was clicked on.
    scope = request.POST.get("scope") if request.method == "POST" else request.GET.get("scope")
    form = (
        StartRunForm(request.POST)
        if request.method == "POST"
        else StartRunForm(
            initial={"with_ground_truth": True, "scope": scope or ""}, project=membership.project
        )
    )
    if request.method == "POST":
        access.contributor(membership)
        if form.is_valid():
            try:
                run = _start_filtered_run(request, membership, form)
                return redirect("attribution:run_detail", run_id=run.pk)
            except MethodError as exc:
                form.add_error(None, str(exc))
    context = {
        "project": membership.project,
        "membership": membership,
        "form": form,
        "runs": selectors.runs_for_project(membership.project.pk),
        "scope": tracing_selectors.trace_scope(project=membership.project, scope=scope or ""),
        "sandbox_form": SandboxForm(),
        "auto_form": AutoAttributeForm(project=membership.project),
        "auto": selectors.auto_attribute_status(project=membership.project),
    }
    return render(request, "attribution/run_list.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def run_auto(request: HttpRequest, slug: str) -> HttpResponse:
    """Owners choose whether traces that arrive are attributed automatically, and by which method."""
    membership = access.project_for(request, slug, Role.OWNER, OWNERS_AUTO)
    form = AutoAttributeForm(request.POST)
    if form.is_valid():
        mode, method = form.cleaned_data["mode"], form.cleaned_data["method"]
        try:
            services.auto_attribute_set(
                project=membership.project, mode=mode, method=method, actor=request.user
            )
        except MethodError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                "New traces are no longer attributed automatically."
                if mode == "off"
                else f"New {'failed ' if mode == 'failed' else ''}traces are attributed automatically with {method}.",
            )
    else:
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
    return redirect("attribution:run_list", slug=slug)


OWNERS_AUTO = "Only the project's owners choose automatic attribution"


def _start_filtered_run(request: HttpRequest, membership: Membership, form: StartRunForm) -> AttributionRun:
    filters, described = form.trace_filters()
    return services.run_create(
        project=membership.project,
        method=form.cleaned_data["method"],
        trace_ids=tracing_selectors.trace_ids(project=membership.project, filters=filters),
        user=request.user,
        with_ground_truth=form.cleaned_data["with_ground_truth"],
        description=described,
    )


@login_required
@require_http_methods(["GET", "POST"])
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run, membership = access.run_for(request, run_id)
    if request.method == "POST":
        access.contributor(membership)
        services.run_cancel(run=run)
        return redirect("attribution:run_detail", run_id=run.pk)
    context = selectors.run_detail_context(run) | {"project": run.project, "membership": membership}
    template = "attribution/run_detail.html#progress" if request.htmx else "attribution/run_detail.html"
    return render(request, template, context)


@login_required
@require_GET
def evaluation(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    preselected = default_method(membership.project) or "heuristic"
    form = EvaluationForm(request.GET or {"method": preselected, "split": "all"})
    data = form.cleaned_data if form.is_valid() else {"method": preselected, "split": "all"}
    method, split = data.get("method") or preselected, data.get("split") or "all"
    context = selectors.evaluation_page(project=membership.project, method=method, split=split)
    context |= {
        "project": membership.project,
        "membership": membership,
        "form": form,
        "method": method,
        "split": split,
    }
    if method == "learned":  # its Run button names the traces its model never learned from
        ids, model = learning_selectors.evaluation_selection(project=membership.project, method=method)
        context |= {"to_run": len(ids), "to_run_model": model}
    return render(request, "attribution/evaluation.html", context)


@login_required
@require_POST
def sandbox_generate(request: HttpRequest, slug: str) -> HttpResponse:
    """Queue sandbox runs (failed v2 runs unless v1 is asked for; fault-free v1 runs for campaigns): they appear in
    the trace list as ``sandbox2/task-…`` and ``sandbox/task-…`` traces. A bad field says so on the page."""
    membership = access.project_for(request, slug, Role.ANNOTATOR, access.CONTRIBUTORS_ONLY)
    form = SandboxForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "Sandbox runs not generated: "
            + "; ".join(
                f"{form.fields[f].label or f}: {e}" for f, errors in form.errors.items() for e in errors
            ),
        )
    else:
        messages.success(
            request, "Sandbox runs queued: they appear in the trace list as the worker writes them."
        )
        services.sandbox_generate_start(
            project=membership.project,
            runs=form.cleaned_data["runs"],
            seed=form.cleaned_data["seed"],
            clean=form.cleaned_data.get("clean") or 0,
            version=form.cleaned_data["version"],
            mode=form.cleaned_data["mode"],
        )
    if request.POST.get("next") == "campaigns":
        return redirect("attribution:campaign_list", slug=slug)
    return redirect("attribution:run_list", slug=slug)


@login_required
@require_GET
def replay_inspector(request: HttpRequest, verdict_id: int) -> HttpResponse:
    verdict, membership = access.verdict_for(request, verdict_id)
    try:
        selected = int(request.GET["replay"]) if "replay" in request.GET else None
    except ValueError:
        selected = None
    context = selectors.replay_inspector_context(verdict, selected) | {
        "project": verdict.trace.project,
        "membership": membership,
    }
    return render(request, "attribution/replay_inspector.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def llm_settings(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(
        request, slug, Role.OWNER, "Only owners change the project's model settings"
    )
    current = selectors.llm_settings_for(project=membership.project)
    form = LlmSettingsForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        services.llm_settings_save(
            settings=form.instance,  # the form's cleaned values applied, not saved: the service saves and audits
            api_key=form.cleaned_data["api_key"],
            clear_key=form.cleaned_data["clear_api_key"],
            hook_auth=form.cleaned_data["replay_hook_auth"],
            actor=request.user,
        )
        return redirect("attribution:llm_settings", slug=slug)
    context = _llm_context(membership, current) | {"form": form}
    return render(request, "attribution/llm_settings.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def llm_test_connection(request: HttpRequest, slug: str) -> HttpResponse:
    """One tiny request with the saved settings: the model's answer, latency or error (htmx swaps it in)."""
    membership = access.project_for(
        request, slug, Role.OWNER, "Only owners test the project's model settings"
    )
    result = services.llm_test_connection(project=membership.project)
    template = "attribution/llm_settings.html#connection" if request.htmx else "attribution/llm_settings.html"
    current = selectors.llm_settings_for(project=membership.project)
    context = _llm_context(membership, current) | {
        "connection": result,
        "form": LlmSettingsForm(instance=current),
    }
    return render(request, template, context)


def _llm_context(membership: Membership, current: ProjectLlmSettings) -> dict:
    project: Project = membership.project
    return {
        "project": project,
        "membership": membership,
        "has_key": bool(current.api_key_encrypted),
        "methods": all_methods(),
        "spent": selectors.project_spend(project=project),
        "facts": model_facts(current.model),
        "usage": selectors.llm_usage(project=project),
    }


@login_required
@require_POST
def evaluation_start(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug, Role.ANNOTATOR, access.CONTRIBUTORS_ONLY)
    form = EvaluationForm(request.POST)
    if not form.is_valid():
        return redirect("attribution:evaluation", slug=slug)
    method = form.cleaned_data["method"]
    ids, model = learning_selectors.evaluation_selection(project=membership.project, method=method)
    try:
        run = services.run_create(
            project=membership.project,
            method=method,
            trace_ids=ids,
            user=request.user,
            description=f"evaluation (the labels {model.label} never learned from)"
            if model
            else "evaluation",
        )
    except MethodError as exc:
        return render(
            request,
            "attribution/evaluation.html",
            {
                "project": membership.project,
                "membership": membership,
                "form": form,
                "error": str(exc),
                "result": None,
                "labelled": len(ids),
            },
            status=400,
        )
    return redirect("attribution:run_detail", run_id=run.pk)


@login_required
@require_http_methods(["GET", "POST"])
def campaign_list(request: HttpRequest, slug: str) -> HttpResponse:
    """Injection campaigns: break successful runs on purpose to manufacture labelled failures."""
    membership = access.project_for(request, slug)
    project = membership.project
    form = CampaignForm(request.POST, project=project) if request.method == "POST" else CampaignForm()
    if request.method == "POST":
        access.contributor(membership)
        if form.is_valid():
            data = form.cleaned_data
            filters = tracing_selectors.TraceFilters(
                q=data["q"], source_format=data["format"], outcome="succeeded"
            )
            ids = tracing_selectors.trace_ids(project=project, filters=filters)
            described = ", ".join(
                f"{k}={v}" for k, v in (("search", data["q"]), ("format", data["format"])) if v
            )
            try:
                campaign = services.campaign_create(
                    project=project,
                    trace_ids=ids,
                    faults_per_trace=data["faults_per_trace"],
                    seed=data["seed"],
                    writer=data["writer"],
                    max_replays=data["max_replays"],
                    max_tokens=data["max_tokens"],
                    max_cost=data["max_cost"],
                    user=request.user,
                    description=f"{len(ids)} successful trace{'s' if len(ids) != 1 else ''}"
                    f"{f' ({described})' if described else ''}",
                )
                return redirect("attribution:campaign_detail", campaign_id=campaign.pk)
            except MethodError as exc:
                form.add_error(None, str(exc))
    context = {
        "project": project,
        "membership": membership,
        "form": form,
        "sandbox_form": SandboxForm(),
        "campaigns": selectors.campaigns_for_project(project.pk),
        "succeeded": tracing_selectors.trace_count(
            project=project, filters=tracing_selectors.TraceFilters(outcome="succeeded")
        ),
    }
    return render(request, "attribution/campaign_list.html", context, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """A campaign's progress and injections; POST cancels it, or (``attribute``) starts a run of a method over the
    labelled cases it kept, so the method can be scored against faults whose step is known."""
    campaign, membership = access.campaign_for(request, campaign_id)
    error = ""
    if request.method == "POST":
        access.contributor(membership)
        if "attribute" not in request.POST:
            services.campaign_cancel(campaign=campaign)
            return redirect("attribution:campaign_detail", campaign_id=campaign.pk)
        form = StartRunForm(request.POST)
        if form.is_valid():
            kept = selectors.campaign_kept_trace_ids(campaign=campaign)
            try:
                run = services.run_create(
                    project=campaign.project,
                    method=form.cleaned_data["method"],
                    trace_ids=kept,
                    user=request.user,
                    with_ground_truth=form.cleaned_data["with_ground_truth"],
                    description=f"cases kept by campaign #{campaign.pk}",
                )
                return redirect("attribution:run_detail", run_id=run.pk)
            except MethodError as exc:
                error = str(exc)
        else:
            error = "; ".join(e for errs in form.errors.values() for e in errs)
    context = selectors.campaign_detail_context(campaign, request.GET.get("status", "")) | {
        "project": campaign.project,
        "membership": membership,
        "error": error,
        "attribute_form": StartRunForm(initial={"method": "counterfactual", "with_ground_truth": True}),
    }
    template = (
        "attribution/campaign_detail.html#progress" if request.htmx else "attribution/campaign_detail.html"
    )
    return render(request, template, context)


@login_required
@require_GET
def injection_inspector(request: HttpRequest, injection_id: int) -> HttpResponse:
    injection, membership = access.injection_for(request, injection_id)
    context = selectors.injection_inspector_context(injection) | {
        "project": injection.campaign.project,
        "membership": membership,
    }
    return render(request, "attribution/injection_inspector.html", context)
