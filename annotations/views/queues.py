"""Pages of the review queues. Every view authorizes while fetching: a queue, copy or item of a project the person
is not a member of answers 404; a viewer who tries to label, or a non-owner who tries to adjudicate, gets 403."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tracing import selectors as tracing_selectors
from tracing.models import Membership, Role

from .. import access, selectors, services
from ..forms import AnswerForm, DecisionForm, ItemFilterForm, QueueForm, QueueSettingsForm, StepForm
from ..models import Annotation, CopyStatus, ReviewQueue

OWNERS_ONLY = "Only owners manage queues and adjudicate"


def _labeller(queue: ReviewQueue, membership: Membership) -> None:
    if not selectors.may_label(queue=queue, membership=membership):
        raise PermissionDenied("You cannot label in this queue")


@login_required
@require_http_methods(["GET", "POST"])
def queue_list(request: HttpRequest, slug: str) -> HttpResponse:
    membership = access.project_for(request, slug)
    project = membership.project
    # GET parameters pre-fill the form, so a trace-list search can be turned into a queue by a link:
    # ?source=search&q=…&gold=no&format=whowhen
    # ?scope=<the trace list's query string>: its "Review them in a queue" link, every filter of the list.
    initial = {
        k: v
        for k, v in request.GET.items()
        if k in ("name", "source", "q", "gold", "format", "threshold", "scope")
    }
    if initial.get("scope"):
        initial["source"] = "search"
    form = QueueForm(request.POST or None, project=project, initial=initial)
    scope = request.POST.get("scope") if request.method == "POST" else request.GET.get("scope")
    if request.method == "POST":
        access.require_role(membership, Role.OWNER, OWNERS_ONLY)
        if form.is_valid():
            queue = form.queue_create(request.user)
            return redirect("annotations:queue_detail", queue_id=queue.pk)
    context = {
        "project": project,
        "membership": membership,
        "form": form,
        "queues": selectors.queues_for_project(project=project, user=request.user),
        "scope": tracing_selectors.trace_scope(project=project, scope=scope or ""),
    }
    return render(request, "annotations/queue_list.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def queue_detail(request: HttpRequest, queue_id: int) -> HttpResponse:
    queue, membership = access.queue_for(request, queue_id)
    form = ItemFilterForm(request.GET or None)
    items = selectors.queue_items(
        queue=queue,
        filters=form.filters() if form.is_bound else selectors.ItemFilters(),
        page=request.GET.get("page"),
    )
    context = {
        "queue": queue,
        "project": queue.project,
        "membership": membership,
        "form": form,
        "items": items,
        "progress": selectors.queue_progress(queue=queue, user=request.user),
        "may_label": selectors.may_label(queue=queue, membership=membership),
        "annotators": selectors.queue_annotators(queue=queue),
        "labellers": selectors.labellers(project=queue.project),
        "source_text": selectors.queue_source_text(queue),
    }
    return render(request, "annotations/queue_detail.html", context, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def queue_edit(request: HttpRequest, queue_id: int) -> HttpResponse:
    """An owner changes a live queue's settings (the filter stays: it is what the queue was made from)."""
    queue, membership = access.queue_for(request, queue_id, Role.OWNER, OWNERS_ONLY)
    form = QueueSettingsForm(request.POST or None, instance=queue)
    if request.method == "POST" and form.is_valid():
        services.queue_update(
            queue=form.instance,  # the form's cleaned values applied, not saved: the service saves
            lease_seconds=form.cleaned_data["lease_minutes"] * 60,
            annotators=form.cleaned_data["annotators"],
        )
        messages.success(request, "Queue settings saved.")
        return redirect("annotations:queue_detail", queue_id=queue.pk)
    context = {"queue": queue, "project": queue.project, "membership": membership, "form": form}
    return render(request, "annotations/queue_edit.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def queue_refill(request: HttpRequest, queue_id: int) -> HttpResponse:
    queue, _ = access.queue_for(request, queue_id, Role.OWNER, OWNERS_ONLY)
    added = services.queue_fill(queue=queue)
    messages.success(request, f"{added} trace{'' if added == 1 else 's'} added.")
    return redirect("annotations:queue_detail", queue_id=queue.pk)


@login_required
@require_GET
def queue_next(request: HttpRequest, queue_id: int) -> HttpResponse:
    """Lease the next copy (or return the one already held) and open it. Safe to repeat: a person holds at most one
    lease per queue, so a second visit returns the same copy."""
    queue, membership = access.queue_for(request, queue_id)
    _labeller(queue, membership)
    copy = services.annotation_claim(queue=queue, user=request.user)
    if copy is None:
        messages.info(request, "Nothing left for you in this queue. Thank you!")
        return redirect("annotations:queue_detail", queue_id=queue.pk)
    return redirect("annotations:label", annotation_id=copy.pk)


@login_required
@require_http_methods(["GET", "POST"])
def label(request: HttpRequest, annotation_id: int) -> HttpResponse:
    annotation, membership = access.annotation_for(request, annotation_id)
    _labeller(annotation.queue, membership)
    if annotation.annotator_id != request.user.pk or annotation.status != CopyStatus.LEASED:
        messages.info(request, "That item is no longer yours; here is your next one.")
        return redirect("annotations:queue_next", queue_id=annotation.queue_id)
    form = AnswerForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.annotation_submit(
                annotation=annotation, user=request.user, **form.cleaned_data_for_submit()
            )
            return redirect("annotations:queue_next", queue_id=annotation.queue_id)
        except services.QueueError as exc:
            form.add_error(None, str(exc))
    elif request.method == "GET":
        services.annotation_touch(annotation=annotation, user=request.user)
    return _render_label(request, annotation, membership, form)


@login_required
@require_http_methods(["GET", "POST"])
def answer_edit(request: HttpRequest, annotation_id: int) -> HttpResponse:
    """Reopen an answer its annotator gave, on the labelling screen, to change it while the item is undecided."""
    annotation, membership = access.annotation_for(request, annotation_id)
    _labeller(annotation.queue, membership)
    if annotation.annotator_id != request.user.pk or annotation.status != CopyStatus.SUBMITTED:
        messages.info(request, "That is not an answer of yours; here is your next item.")
        return redirect("annotations:queue_next", queue_id=annotation.queue_id)
    if request.method == "POST":
        form = AnswerForm(request.POST)
        if form.is_valid():
            try:
                services.annotation_revise(
                    annotation=annotation, user=request.user, **form.cleaned_data_for_submit()
                )
                messages.success(request, f"Your answer on {annotation.item.trace.name} was changed.")
                return redirect("annotations:queue_next", queue_id=annotation.queue_id)
            except services.QueueError as exc:
                form.add_error(None, str(exc))
    else:
        form = AnswerForm.showing(selectors.answer_data(annotation=annotation))
    return _render_label(request, annotation, membership, form, editing=True)


def _render_label(
    request: HttpRequest,
    annotation: Annotation,
    membership: Membership,
    form: AnswerForm,
    editing: bool = False,
) -> HttpResponse:
    where = StepForm(request.GET)
    data = where.cleaned_data if where.is_valid() else {}
    per_page = settings.CULPRIT_STEPS_PER_PAGE
    target = data.get("step")
    if editing and target is None and not data.get("page"):
        target = annotation.step_index  # a revision opens where the answer points
    page = (
        tracing_selectors.page_of_step(index=target, per_page=per_page)
        if target is not None
        else data.get("page")
    )
    context = selectors.label_context(
        annotation=annotation, page=page or 1, per_page=per_page, editing=editing
    )
    context.update(membership=membership, form=form, target=target)
    return render(request, "annotations/label.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def skip(request: HttpRequest, annotation_id: int) -> HttpResponse:
    annotation, membership = access.annotation_for(request, annotation_id)
    _labeller(annotation.queue, membership)
    try:
        services.annotation_skip(annotation=annotation, user=request.user)
    except services.QueueError as exc:
        messages.info(request, str(exc))
    return redirect("annotations:queue_next", queue_id=annotation.queue_id)


@login_required
@require_GET
def agreement(request: HttpRequest, queue_id: int) -> HttpResponse:
    queue, membership = access.queue_for(request, queue_id)
    context = {
        "queue": queue,
        "project": queue.project,
        "membership": membership,
        "report": selectors.agreement_report(queue=queue),
    }
    return render(request, "annotations/agreement.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def adjudication(request: HttpRequest, queue_id: int) -> HttpResponse:
    queue, membership = access.queue_for(request, queue_id, Role.OWNER, OWNERS_ONLY)
    if request.method == "POST":
        accepted = services.queue_accept_unanimous(queue=queue, user=request.user)
        messages.success(
            request, f"{accepted} unanimous item{'' if accepted == 1 else 's'} accepted as gold labels."
        )
        return redirect("annotations:adjudication", queue_id=queue.pk)
    rows = selectors.adjudication_rows(queue=queue)
    gold = selectors.reference_gold(trace_ids=[r.item.trace_id for r in rows if r.state == "disagree"])
    for row in rows:
        row.gold = gold.get(row.item.trace_id, [])
    context = {
        "queue": queue,
        "project": queue.project,
        "membership": membership,
        "disagree": [r for r in rows if r.state == "disagree"],
        "unanimous": [r for r in rows if r.state == "unanimous"],
        "resolved": [r for r in rows if r.state == "resolved"],
    }
    return render(request, "annotations/adjudication.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def adjudicate_item(request: HttpRequest, item_id: int) -> HttpResponse:
    """An owner decides one item: accept an answer (with its further errors), pick the decisive error among every
    labelled error of the trace (``DecisionForm``), or type a different one (``AnswerForm``)."""
    item, membership = access.item_for(request, item_id, Role.OWNER, OWNERS_ONLY)
    candidates = selectors.error_candidates(item=item)
    picking = request.method == "POST" and "decisive" in request.POST
    decision = DecisionForm(request.POST if picking else None, candidates=candidates)
    form = AnswerForm(request.POST if request.method == "POST" and not picking else None)
    bound = decision if picking else form
    if request.method == "POST" and bound.is_valid():
        data = decision.decision() if picking else form.cleaned_data_for_submit()
        data.pop("lead_time_ms", None)
        try:
            services.item_resolve(item=item, user=request.user, **data)
            messages.success(request, f"Trace {item.trace.name} resolved.")
            return redirect("annotations:adjudication", queue_id=item.queue_id)
        except services.QueueError as exc:
            bound.add_error(None, str(exc))
    context = selectors.decide_context(item=item, candidates=candidates)
    context.update(membership=membership, form=form, decision=decision)
    return render(request, "annotations/adjudicate_item.html", context, status=400 if bound.errors else 200)
