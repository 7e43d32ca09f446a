"""A person's own label from the trace page (``services.trace_labels``): confirm a verdict or correct it, or take
the label back. Both answer with the trace page's verdict panel (htmx) or send the person back to the trace."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from attribution.forms import StartRunForm
from attribution.selectors import trace_panel_context, verdict_on_trace
from tracing.access import trace_for
from tracing.models import Membership, Role, Trace

from .. import services
from ..forms import TraceLabelForm

LABELLERS_ONLY = "Only the project's owners and annotators label traces"


@login_required
@require_POST
def trace_label(request: HttpRequest, trace_id: int) -> HttpResponse:
    trace, membership = trace_for(request, trace_id, Role.ANNOTATOR, LABELLERS_ONLY)
    form = TraceLabelForm(request.POST)
    error, done = "", ""
    if not form.is_valid():
        error = "; ".join(e for errors in form.errors.values() for e in errors)
    else:
        data = form.cleaned_data
        verdict = None
        step, agent = data["step_index"], data["agent_name"]
        if data["verdict"] is not None:
            verdict = verdict_on_trace(trace=trace, verdict_id=data["verdict"])
            if verdict is None:
                error = "That verdict is not on this trace."
            else:
                step, agent = verdict.step_index, verdict.agent_name
        if not error:
            try:
                label = services.trace_label_save(
                    trace=trace,
                    user=request.user,
                    step_index=step,
                    agent_name=agent,
                    category=data["category"] if verdict is None else (verdict.category or ""),
                    reason=data["reason"],
                    verdict=verdict,
                )
            except services.QueueError as exc:
                error = str(exc)
            else:
                done = f"Labelled: {label.agent_name or 'no agent'} at step {label.step_index}."
    return _answer(request, trace, membership, error=error, done=done)


@login_required
@require_POST
def trace_label_remove(request: HttpRequest, trace_id: int) -> HttpResponse:
    trace, membership = trace_for(request, trace_id, Role.ANNOTATOR, LABELLERS_ONLY)
    removed = services.trace_label_remove(trace=trace, user=request.user)
    if removed:
        return _answer(request, trace, membership, done="Your label is taken back.")
    return _answer(
        request,
        trace,
        membership,
        error="You have no label of your own here to take back (a queue's decision is changed in its queue).",
    )


def _answer(
    request: HttpRequest, trace: Trace, membership: Membership, *, error: str = "", done: str = ""
) -> HttpResponse:
    if not request.htmx:
        if error:
            messages.error(request, error)
        elif done:
            messages.success(request, done)
        return redirect("tracing:trace_detail", trace_id=trace.pk)
    context = trace_panel_context(trace, membership) | {
        "form": StartRunForm(initial={"with_ground_truth": True}, project=trace.project),
        "label_error": error,
        "label_done": done,
    }
    return render(request, "attribution/trace_panel.html", context)
