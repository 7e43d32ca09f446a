"""Fault-injection campaigns: sandbox runs broken offline, real traces broken through a replay hook on 127.0.0.1,
budgets that stop a campaign cleanly, cancellation, and replays that are never run twice."""

from __future__ import annotations

import pytest
from django.urls import reverse

from attribution import services
from attribution.methods import MethodError
from attribution.models import (
    CampaignStatus,
    Injection,
    InjectionCampaign,
    InjectionStatus,
    ProjectLlmSettings,
    ReplayRecord,
    Verdict,
)
from attribution.replay import perturb
from attribution.selectors import trace_view
from tests.attribution.test_http_hook import Hook, serving
from tracing import services as tracing_services
from tracing.formats.base import ParsedAgent, ParsedStep, ParsedTrace
from tracing.models import GoldLabel, LabelSource, Membership, Provenance, Role, Trace

pytestmark = pytest.mark.django_db


class System(Hook):
    """The team's system behind the hook: a replay fails when the corrected step differs from the recorded one."""

    def __init__(self, recorded: dict[str, str] | None = None, cost: float = 0.0) -> None:
        super().__init__()
        self.recorded = recorded or {}
        self.cost = cost

    def answer(self, payload: dict) -> dict:
        first = payload["corrections"][0]
        name = payload["trace"]["name"]
        broken = self.recorded.get(f"{name}:{first['index']}") != first["content"]
        answer = "wrong" if broken else payload["trace"]["ground_truth"]
        return {
            "continuation": [
                {"agent": first["agent"], "kind": "message", "content": first["content"]},
                {"agent": "writer", "kind": "message", "content": f"FINAL ANSWER: {answer}"},
            ],
            "outcome": "failure" if broken else "success",
            "final_answer": answer,
            "cost_usd": self.cost,
        }


@pytest.fixture
def system():
    with serving(System(cost=0.01)) as state:
        yield state


def real_trace(project, name: str = "crew/run-1") -> Trace:
    steps = [
        ParsedStep(
            speaker="user", agent=None, kind="human", content="How many moons has Mars? Answer with a number."
        ),
        ParsedStep(
            speaker="planner",
            agent="planner",
            kind="message",
            content="Researcher, find how many moons Mars has.",
        ),
        ParsedStep(
            speaker="researcher",
            agent="researcher",
            kind="tool_call",
            content='search({"query": "Mars moons", "limit": 3})',
            tool_name="search",
        ),
        ParsedStep(
            speaker="search", agent=None, kind="tool_result", content="Mars has 2 moons: Phobos and Deimos."
        ),
        ParsedStep(speaker="researcher", agent="researcher", kind="message", content="Mars has 2 moons."),
        ParsedStep(speaker="writer", agent="writer", kind="message", content="FINAL ANSWER: 2"),
    ]
    parsed = ParsedTrace(
        name=name,
        source_format="crewai",
        steps=steps,
        question="How many moons has Mars?",
        ground_truth="2",
        outcome="succeeded",
        agents=[
            ParsedAgent("planner", "You plan."),
            ParsedAgent("researcher", "You research."),
            ParsedAgent("writer", "You write the answer."),
        ],
    )
    return tracing_services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def use_hook(project, system: System) -> None:
    ProjectLlmSettings.objects.update_or_create(
        project=project, defaults={"replay_hook_url": system.url, "timeout_seconds": 10, "max_retries": 1}
    )


def test_a_sandbox_campaign_keeps_only_the_faults_that_break_the_run_labelled_at_the_fault(project):
    services.sandbox_clean_runs_generate(project=project, runs=4, seed=10)
    origins = list(Trace.objects.filter(project=project, outcome="succeeded"))
    assert len(origins) == 4
    campaign = services.campaign_create(
        project=project, trace_ids=[t.pk for t in origins], faults_per_trace=3, seed=0, enqueue=False
    )
    campaign = services.campaign_execute_inline(campaign=campaign)

    assert campaign.status == CampaignStatus.SUCCEEDED
    assert campaign.total == 12 and campaign.done == 12 and campaign.replays == 12
    kept = list(
        Injection.objects.filter(campaign=campaign, status=InjectionStatus.KEPT).select_related(
            "result_trace"
        )
    )
    assert kept and campaign.kept == len(kept)
    assert Injection.objects.filter(campaign=campaign, status=InjectionStatus.DISCARDED).count() == 12 - len(
        kept
    )
    for injection in kept:
        case = injection.result_trace
        assert case.derived_from_id == injection.origin_id and case.provenance == Provenance.INJECTED
        assert case.outcome == "failed"
        gold = GoldLabel.objects.get(trace=case)
        assert gold.source == LabelSource.INJECTED
        assert (gold.agent_name, gold.step_index) == (injection.agent_name, injection.step_index)
        assert gold.category == injection.category
    # The counterfactual method finds every injected step exactly on the kept cases.
    run = services.run_create(
        project=project, method="counterfactual", trace_ids=[i.result_trace_id for i in kept], enqueue=False
    )
    services.run_execute_inline(run=run)
    for verdict in Verdict.objects.filter(run=run).select_related("trace"):
        gold = GoldLabel.objects.get(trace=verdict.trace)
        assert verdict.step_index == gold.step_index, verdict.reason


def test_planning_again_or_rerunning_a_campaign_never_duplicates_cases(project):
    services.sandbox_clean_runs_generate(project=project, runs=2, seed=3)
    ids = list(Trace.objects.filter(project=project).values_list("pk", flat=True))
    first = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project, trace_ids=ids, faults_per_trace=2, seed=0, enqueue=False
        )
    )
    services.campaign_plan(campaign=first)
    assert Injection.objects.filter(campaign=first).count() == first.total == 4
    cases = Trace.objects.filter(project=project, provenance=Provenance.INJECTED).count()
    assert cases == first.kept
    for injection in Injection.objects.filter(campaign=first):
        services.injection_execute(injection_id=injection.pk)  # a re-delivered task: nothing changes
    second = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project, trace_ids=ids, faults_per_trace=2, seed=0, enqueue=False
        )
    )
    assert second.kept == first.kept
    assert Trace.objects.filter(project=project, provenance=Provenance.INJECTED).count() == cases


def test_a_replay_budget_stops_the_campaign_cleanly_and_skips_the_rest(project):
    services.sandbox_clean_runs_generate(project=project, runs=3, seed=20)
    ids = list(Trace.objects.filter(project=project).values_list("pk", flat=True))
    campaign = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project, trace_ids=ids, faults_per_trace=3, max_replays=4, enqueue=False
        )
    )
    assert campaign.status == CampaignStatus.STOPPED
    assert "replay budget of 4" in campaign.stop_reason
    assert campaign.replays == 4 == ReplayRecord.objects.filter(campaign=campaign).count()
    assert campaign.done == campaign.total == 9
    assert Injection.objects.filter(campaign=campaign, status=InjectionStatus.SKIPPED).count() == 5
    assert Injection.objects.filter(campaign=campaign, status=InjectionStatus.PENDING).count() == 0


def test_a_cancelled_campaign_skips_what_it_had_not_started(project):
    services.sandbox_clean_runs_generate(project=project, runs=2, seed=30)
    ids = list(Trace.objects.filter(project=project).values_list("pk", flat=True))
    campaign = services.campaign_create(project=project, trace_ids=ids, faults_per_trace=2, enqueue=False)
    services.campaign_claim(campaign_id=campaign.pk)
    services.campaign_plan(campaign=campaign)
    first = Injection.objects.filter(campaign=campaign).order_by("pk").first()
    services.injection_execute(injection_id=first.pk)
    assert services.campaign_cancel(campaign=campaign)
    for injection in Injection.objects.filter(campaign=campaign):
        services.injection_execute(injection_id=injection.pk)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CANCELLED and campaign.done == campaign.total == 4
    assert Injection.objects.filter(campaign=campaign, status=InjectionStatus.SKIPPED).count() == 3
    assert ReplayRecord.objects.filter(campaign=campaign).count() == 1


def test_a_real_trace_is_broken_through_the_replay_hook_with_offline_perturbations(project, system):
    trace = real_trace(project)
    use_hook(project, system)
    campaign = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project, trace_ids=[trace.pk], faults_per_trace=3, seed=1, max_cost=1, enqueue=False
        )
    )
    assert campaign.status == CampaignStatus.SUCCEEDED and campaign.total == 3
    assert len(system.requests) == 3
    assert float(campaign.cost) == pytest.approx(0.03)
    kept = list(Injection.objects.filter(campaign=campaign, status=InjectionStatus.KEPT))
    assert len(kept) == 3  # the system fails whenever a step differs from the recorded one
    for injection in kept:
        case = injection.result_trace
        view = trace_view(case)
        assert view.steps[injection.step_index].content == injection.faulty != injection.original
        assert [s.content for s in view.steps[: injection.step_index]] == [
            s.content for s in trace_view(trace).steps[: injection.step_index]
        ]
        assert view.steps[-1].content == "FINAL ANSWER: wrong"
        gold = GoldLabel.objects.get(trace=case)
        assert gold.source == LabelSource.INJECTED and gold.step_index == injection.step_index
        assert gold.category == perturb.KINDS[injection.fault_kind]
        assert case.metadata["injection"]["origin_trace_id"] == trace.pk


def test_a_cost_budget_stops_a_hook_campaign(project, system):
    traces = [real_trace(project, f"crew/run-{i}") for i in range(3)]
    use_hook(project, system)
    campaign = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project,
            trace_ids=[t.pk for t in traces],
            faults_per_trace=2,
            max_cost=0.025,
            enqueue=False,
        )
    )
    assert campaign.status == CampaignStatus.STOPPED and "cost budget" in campaign.stop_reason
    assert (
        len(system.requests) == campaign.replays == 3
    )  # the third replay crossed the limit; no fourth started


def test_a_finished_replay_is_read_back_not_run_again(project, system):
    trace = real_trace(project)
    use_hook(project, system)
    campaign = services.campaign_create(
        project=project, trace_ids=[trace.pk], faults_per_trace=1, enqueue=False
    )
    services.campaign_claim(campaign_id=campaign.pk)
    services.campaign_plan(campaign=campaign)
    injection = Injection.objects.get(campaign=campaign)
    from attribution.services.campaigns import _injection_replay

    _injection_replay(Injection.objects.select_related("campaign", "origin").get(pk=injection.pk))
    assert len(system.requests) == 1  # ... and then the worker died before settling the injection
    services.injection_execute(injection_id=injection.pk)
    assert len(system.requests) == 1
    injection.refresh_from_db()
    assert injection.status == InjectionStatus.KEPT


def test_campaigns_refuse_what_they_cannot_do(project):
    failed = real_trace(project)
    Trace.objects.filter(pk=failed.pk).update(outcome="failed")
    with pytest.raises(MethodError, match="no successful traces"):
        services.campaign_create(project=project, trace_ids=[failed.pk], enqueue=False)
    ok = real_trace(project, "crew/ok")
    with pytest.raises(MethodError, match="replay hook URL or a model"):
        services.campaign_create(project=project, trace_ids=[ok.pk], enqueue=False)
    ProjectLlmSettings.objects.create(project=project, replay_hook_url="http://127.0.0.1:9/replay")
    with pytest.raises(MethodError, match="need a model"):
        services.campaign_create(project=project, trace_ids=[ok.pk], writer="llm", enqueue=False)


def test_a_counterfactual_search_resumed_after_a_crash_reads_its_finished_replays_back(project):
    services.sandbox_cases_generate(project=project, runs=6, seed=40)
    trace = Trace.objects.filter(project=project, outcome="failed").first()
    run = services.run_create(project=project, method="counterfactual", trace_ids=[trace.pk], enqueue=False)
    services.run_execute_inline(run=run)
    verdict = Verdict.objects.get(run=run)
    stored = ReplayRecord.objects.filter(run=run, trace=trace)
    assert stored.count() == verdict.details["replay_count"] > 0
    # The same search again (a re-delivered task whose verdict was not yet written) replays nothing new.
    from attribution.methods import get_method

    class NoReplays:
        name = "none"

        def propose(self, trace, index):
            return "x"

        def replay(self, *args, **kwargs):
            raise AssertionError("a finished replay was run again")

    result = get_method("counterfactual").run(
        trace_view(trace), replayer=NoReplays(), store=services.RunReplayStore(run, trace)
    )
    assert result.step == verdict.step_index


def test_the_campaign_pages(owner_client, client, project, make_user, django_capture_on_commit_callbacks):
    services.sandbox_clean_runs_generate(project=project, runs=2, seed=50)
    page = owner_client.get(reverse("attribution:campaign_list", args=[project.slug]))
    assert (
        page.status_code == 200
        and b"Start campaign" in page.content
        and b"2 successful traces" in page.content
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            reverse("attribution:campaign_list", args=[project.slug]),
            {"q": "sandbox", "faults_per_trace": "2", "seed": "0", "writer": "perturb"},
        )
    assert response.status_code == 302 and len(callbacks) == 1
    campaign = InjectionCampaign.objects.get(project=project)
    services.campaign_execute_inline(campaign=campaign)
    detail = owner_client.get(reverse("attribution:campaign_detail", args=[campaign.pk])).content.decode()
    assert "Finished" in detail and "kept" in detail
    injection = Injection.objects.filter(campaign=campaign).exclude(status="pending").first()
    inspector = owner_client.get(
        reverse("attribution:injection_inspector", args=[injection.pk])
    ).content.decode()
    assert "fault injected here" in inspector and injection.fault_kind in inspector
    bad = owner_client.post(
        reverse("attribution:campaign_list", args=[project.slug]),
        {"q": "no such trace", "faults_per_trace": "2", "seed": "0", "writer": "perturb"},
    )
    assert bad.status_code == 400 and b"no successful traces" in bad.content

    stranger = make_user("stranger")
    client.force_login(stranger)
    assert client.get(reverse("attribution:campaign_detail", args=[campaign.pk])).status_code == 404
    assert client.get(reverse("attribution:injection_inspector", args=[injection.pk])).status_code == 404
    viewer = make_user("viewer")
    Membership.objects.create(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("attribution:campaign_detail", args=[campaign.pk])).status_code == 200
    assert (
        client.post(
            reverse("attribution:campaign_list", args=[project.slug]),
            {"faults_per_trace": "1", "seed": "0", "writer": "perturb"},
        ).status_code
        == 403
    )
    assert client.post(reverse("attribution:campaign_detail", args=[campaign.pk])).status_code == 403


def test_untrusted_step_text_is_escaped_in_the_injection_inspector(owner_client, project, system):
    trace = real_trace(project)
    from tracing.models import Step

    Step.objects.filter(trace=trace, index=1).update(content="<script>alert(1)</script> find 12 moons")
    use_hook(project, system)
    campaign = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project, trace_ids=[trace.pk], faults_per_trace=5, enqueue=False
        )
    )
    injection = Injection.objects.filter(campaign=campaign, step_index=1).first()
    assert injection is not None
    page = owner_client.get(reverse("attribution:injection_inspector", args=[injection.pk])).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_the_kept_cases_of_a_campaign_are_attributed_from_its_page(
    owner_client, project, django_capture_on_commit_callbacks
):
    from attribution.models import AttributionRun

    services.sandbox_clean_runs_generate(project=project, runs=2, seed=70)
    campaign = services.campaign_execute_inline(
        campaign=services.campaign_create(
            project=project,
            trace_ids=list(Trace.objects.filter(project=project).values_list("pk", flat=True)),
            faults_per_trace=2,
            enqueue=False,
        )
    )
    assert campaign.kept
    page = owner_client.get(reverse("attribution:campaign_detail", args=[campaign.pk])).content.decode()
    assert "Attribute the kept cases" in page
    with django_capture_on_commit_callbacks(execute=False):
        response = owner_client.post(
            reverse("attribution:campaign_detail", args=[campaign.pk]),
            {"attribute": "1", "method": "counterfactual", "with_ground_truth": "on"},
        )
    run = AttributionRun.objects.get(project=project)
    assert response["Location"] == reverse("attribution:run_detail", args=[run.pk])
    kept = set(
        Injection.objects.filter(campaign=campaign, result_trace__isnull=False).values_list(
            "result_trace_id", flat=True
        )
    )
    assert set(run.trace_ids) == kept and run.method == "counterfactual"
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SUCCEEDED  # attributing does not cancel
