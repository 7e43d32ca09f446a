"""A judge's verdict is checked against the trace: the blamed agent must own the blamed step, and a verdict nothing
offline supports is flagged as low confidence instead of being stored as certain."""

from __future__ import annotations

import pytest

from attribution import prompts
from attribution.methods.base import MethodResult, StepView, TraceView
from attribution.methods.heuristic import analyse
from attribution.methods.sanity import LOW_CONFIDENCE, flag_unsupported
from attribution.selectors import trace_view
from tests.attribution import test_llm as shared
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import JobStatus, Trace

provider, model = shared.provider, shared.model  # the recorded provider and a model name of each test's own


def _trace() -> TraceView:
    steps = (
        StepView(0, "human", "human", "How many birds?"),
        StepView(1, "Orchestrator", "message", "Search it."),
        StepView(2, "WebSurfer", "tool_call", "search('birds')"),
        StepView(3, "Terminal", "tool_result", "3"),
        StepView(4, "Orchestrator", "message", "FINAL ANSWER: 4"),
    )
    return TraceView(
        trace_id=1,
        name="t",
        question="How many birds?",
        ground_truth="3",
        outcome="failure",
        steps=steps,
        agents=("human", "Orchestrator", "WebSurfer", "Terminal"),
    )


def test_the_blamed_agent_must_own_the_blamed_step():
    trace = _trace()
    assert prompts.check_pair({"agent": "Orchestrator", "step": 1}, trace) is None
    assert (
        prompts.check_pair({"agent": "WebSurfer", "step": 3}, trace) is None
    )  # the output of its own tool call
    error = prompts.check_pair({"agent": "Orchestrator", "step": 2}, trace)
    assert error and '"WebSurfer"' in error and "step 2" in error
    assert (
        prompts.check_pair({"agent": "Orchestrator", "step": 99}, trace) is None
    )  # the range check reports it


@pytest.mark.django_db
def test_a_verdict_nothing_offline_supports_is_flagged_low_confidence(project):
    for path in whowhen_files()[
        :12
    ]:  # a run with a step the heuristic is silent on, by another agent than its pick
        (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
        assert job.status == JobStatus.SUCCEEDED, job.error
        view = trace_view(Trace.objects.get(pk=job.trace_ids[0]))
        a = analyse(view)
        ranked = sorted(a.candidates, key=lambda i: (-a.raw[i], i))
        pick_agent = a.ctx.steps[a.ctx.blamed(ranked[0])].agent
        signalled = {s.step for s in a.signals if s.signal != "ancestor"}
        lonely = next(
            (i for i in ranked[5:] if i not in signalled and view.steps[i].agent != pick_agent), None
        )
        if lonely is not None:
            break
    assert lonely is not None

    judged = MethodResult(
        agent=view.steps[lonely].agent, step=lonely, confidence=0.95, reason="the judge says so"
    )
    flagged = flag_unsupported(view, judged)
    assert flagged.confidence == LOW_CONFIDENCE and f"step {lonely}" in flagged.details["low_confidence"]

    supported = MethodResult(agent=pick_agent, step=ranked[0], confidence=0.95, reason="agrees")
    assert flag_unsupported(view, supported) is supported


@pytest.mark.django_db
def test_a_run_stores_a_judges_unsupported_verdict_as_low_confidence(project, provider, model, monkeypatch):
    from cryptography.fernet import Fernet

    from attribution import crypto, services
    from attribution.models import ProjectLlmSettings, VerdictStatus
    from tests.attribution.test_llm_methods import HAND, imported

    monkeypatch.setenv("CULPRIT_FERNET_KEYS", Fernet.generate_key().decode())
    view = imported(project, HAND)
    a = analyse(view)
    ranked = sorted(a.candidates, key=lambda i: (-a.raw[i], i))
    pick_agent = a.ctx.steps[a.ctx.blamed(ranked[0])].agent
    signalled = {s.step for s in a.signals if s.signal != "ancestor"}
    lonely = next(i for i in ranked[5:] if i not in signalled and view.steps[i].agent != pick_agent)
    ProjectLlmSettings.objects.create(
        project=project, model=model, api_key_encrypted=crypto.encrypt("sk-y"), max_retries=0
    )
    provider.script = [
        {"agent": view.steps[lonely].agent, "step": lonely, "reason": "trust me", "confidence": 0.99}
    ]
    run = services.run_execute_inline(
        run=services.run_create(
            project=project, method="all_at_once", trace_ids=[view.trace_id], enqueue=False
        )
    )
    (verdict,) = run.verdicts.all()
    assert verdict.status == VerdictStatus.OK and verdict.step_index == lonely
    assert (
        verdict.confidence == LOW_CONFIDENCE
        and "no offline signal supports" in verdict.details["low_confidence"]
    )
