"""LLM-written faults in runs that succeeded: the writer's request, the deterministic choice of targets, and
``inject_real`` keeping only injections whose replay fails, as labelled cases the importer accepts.

The provider is the recorded litellm custom provider (``test_llm.py``) answering like a model from the prompt; the
replays are the real LLM-simulated replayer's.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from attribution.llm import LlmClient
from attribution.replay.base import Budget, ReplayError
from attribution.replay.fault_writer import (
    AFTER_RESULT_CATEGORIES,
    DESCRIPTIONS,
    TOOL_CALL_CATEGORIES,
    FaultWriter,
    applicable,
    choose_targets,
    inject_real,
    targets,
)
from attribution.replay.llm_sim import LlmSimulatedReplayer
from attribution.taxonomy import CATEGORIES
from tests.attribution import test_llm as shared
from tests.attribution.test_llm_replay import Simulation, calc_team, calc_trace, user_text
from tracing.models import GoldLabel, LabelSource, Provenance, Step
from tracing.services import trace_create_from_parsed

provider, model = shared.provider, shared.model


@pytest.fixture
def llm(project, provider, model) -> LlmClient:
    return LlmClient(model=model, api_key="sk-test", project=project, method="test", num_retries=0)


def succeeded():
    return calc_trace(reported="1729", outcome="succeeded")


def fault_at(number: str):
    """A writer that rewrites the calculator's report to ``number``."""
    return lambda m: {
        "content": f"The result is {number}.",
        "explanation": f"reports {number} instead of 1729",
    }


def test_targets_are_agent_actions_with_categories_that_fit_them_chosen_the_same_way_every_time():
    trace = succeeded()
    assert targets(trace) == [0, 1, 3, 4, 5]  # step 2 is the tool's output
    assert applicable(trace, 1) == TOOL_CALL_CATEGORIES and applicable(trace, 3) == AFTER_RESULT_CATEGORIES
    chosen = choose_targets(trace, 3, seed=7)
    assert chosen == choose_targets(trace, 3, seed=7) and len({i for i, _ in chosen}) == 3
    assert [i for i, _ in chosen] == sorted(i for i, _ in chosen)
    assert all(i in targets(trace) and c in applicable(trace, i) and c in CATEGORIES for i, c in chosen)
    assert {i for i, _ in choose_targets(trace, 50, seed=1)} == set(targets(trace))
    assert len({tuple(choose_targets(trace, 2, seed=s)) for s in range(20)}) > 1
    assert set(DESCRIPTIONS) <= set(CATEGORIES)


def test_the_writer_asks_for_a_plausible_error_of_the_category_without_the_ground_truth(llm, provider):
    sim = Simulation(provider, fault=fault_at("1792"))
    writer = FaultWriter(llm)
    assert writer.write(succeeded(), 3, "reflection.outcome_misinterpretation") == "The result is 1792."
    assert writer.last_explanation == "reports 1792 instead of 1729"
    (request,) = sim.seen["fault"]
    text = user_text(request)
    assert "Reflection: outcome misinterpretation" in text
    assert DESCRIPTIONS["reflection.outcome_misinterpretation"] in text
    assert 'Rewrite step 3 (agent "calculator"' in text and "<ground_truth>" not in text
    assert "Verified: 1729" not in text  # the writer sees the run up to the step only


def test_the_writer_refuses_tool_output_unknown_categories_and_unusable_answers(llm, provider):
    writer = FaultWriter(llm)
    with pytest.raises(ReplayError, match="not an agent's action"):
        writer.write(succeeded(), 2, "memory.hallucination")
    with pytest.raises(ReplayError, match="unknown error category"):
        writer.write(succeeded(), 3, "memory.amnesia")
    Simulation(provider, fault=lambda m: {"content": "The result is 1729.", "explanation": "no change"})
    with pytest.raises(ReplayError, match=r"could not rewrite step 3 .*must differ"):
        writer.write(succeeded(), 3, "memory.hallucination")


def test_an_injection_that_makes_the_run_fail_is_kept_as_a_labelled_case(llm, provider, project):
    trace = succeeded()
    sim = Simulation(
        provider,
        fault=fault_at("1792"),
        agent=calc_team(),
        judge=lambda m: {"verdict": "failure", "final_answer": "1792", "reason": "wrong"},
    )
    budget = Budget(max_replays=5)
    outcome = inject_real(
        trace,
        writer=FaultWriter(llm),
        replayer=LlmSimulatedReplayer(llm),
        index=3,
        category="reflection.outcome_misinterpretation",
        budget=budget,
    )
    assert outcome.kept and outcome.replay.outcome == "failure" and outcome.replay.final_answer == "1792"
    assert outcome.fault == {
        "index": 3,
        "agent": "calculator",
        "category": "reflection.outcome_misinterpretation",
        "original": "The result is 1729.",
        "faulty": "The result is 1792.",
        "explanation": "reports 1792 instead of 1729",
    }
    parsed = outcome.parsed
    assert [s.content for s in parsed.steps] == [
        "Calculator, please compute 12**3 + 1.",
        "calc('12**3 + 1')",
        "1729",
        "The result is 1792.",
        "Verified: 1792.",
        "FINAL ANSWER: 1792",
    ]
    assert parsed.outcome == "failed" and parsed.ground_truth == "1729" and parsed.question == trace.question
    (gold,) = parsed.gold
    assert (gold.agent, gold.step, gold.category, gold.confidence) == (
        "calculator",
        3,
        "reflection.outcome_misinterpretation",
        1.0,
    )
    assert gold.reason.startswith("injected fault: Reflection: outcome misinterpretation")
    assert (
        parsed.metadata["injection"]["origin_trace"] == "calc-run"
        and parsed.metadata["injection"]["index"] == 3
    )
    assert {a.name: a.system_prompt for a in parsed.agents}["verifier"] == "You recheck the calculator."
    assert budget.replays == 1 and sim.count("judge") == 1
    # The case is what the importer writes: the lead stores it with a link to the origin trace.
    stored = trace_create_from_parsed(
        project=project,
        upload=None,
        ordinal=0,
        parsed=parsed,
        provenance=Provenance.INJECTED,
        label_source=LabelSource.INJECTED,
    )
    label = GoldLabel.objects.get(trace=stored)
    assert (label.agent_name, label.step_index, label.source) == ("calculator", 3, LabelSource.INJECTED)
    assert (
        Step.objects.get(trace=stored, index=3).content == "The result is 1792."
        and stored.outcome == "failed"
    )


def test_a_harmless_injection_is_not_kept(llm, provider):
    # The verifier catches the wrong report: the replay still ends with the right answer.
    def team(messages: list[dict[str, str]]) -> dict[str, Any]:
        agent = re.search(r'role-play the agent "([^"]+)"', messages[0]["content"])[1]
        if agent == "verifier":
            return {
                "content": "Rechecked: 12**3 + 1 is 1729, not 1792.",
                "final_answer": "",
                "next": "planner",
            }
        return {"content": "FINAL ANSWER: 1729", "final_answer": "1729", "next": ""}

    Simulation(provider, fault=fault_at("1792"), agent=team)
    outcome = inject_real(
        succeeded(),
        writer=FaultWriter(llm),
        replayer=LlmSimulatedReplayer(llm),
        index=3,
        category="memory.hallucination",
    )
    assert not outcome.kept and outcome.parsed is None and outcome.replay.outcome == "success"


def test_a_control_replay_that_does_not_reproduce_the_success_keeps_nothing(llm, provider):
    # This simulator gets the run wrong whatever the step says, so a failure says nothing about the fault.
    Simulation(
        provider,
        fault=fault_at("1792"),
        judge=lambda m: {"verdict": "failure", "final_answer": "7"},
        agent=lambda m: {"content": "FINAL ANSWER: 7", "final_answer": "7", "next": ""},
    )
    outcome = inject_real(
        succeeded(),
        writer=FaultWriter(llm),
        replayer=LlmSimulatedReplayer(llm),
        index=3,
        category="memory.hallucination",
        control=True,
    )
    assert outcome.replay.outcome == "failure" and outcome.control.outcome == "failure"
    assert not outcome.kept and outcome.parsed is None


def test_only_runs_that_succeeded_take_a_fault(llm):
    with pytest.raises(ReplayError, match="runs that succeeded"):
        inject_real(
            calc_trace(),
            writer=FaultWriter(llm),
            replayer=LlmSimulatedReplayer(llm),
            index=3,
            category="memory.hallucination",
        )
    with pytest.raises(ReplayError, match="not an agent's action"):
        inject_real(
            replace(succeeded()),
            writer=FaultWriter(llm),
            replayer=LlmSimulatedReplayer(llm),
            index=2,
            category="memory.hallucination",
        )


# --- the sandbox benchmark with an LLM judge beside the heuristic -------------------------------------------------


def all_at_once(messages: list[dict[str, str]]) -> dict[str, Any]:
    """Blames the planner's first step, whatever the trace (enough to score, and always a valid answer)."""
    return {
        "agent": "planner",
        "step": 0,
        "reason": "the plan",
        "category": "planning.inefficient_plan",
        "confidence": 0.5,
    }


def benchmark(**options: Any) -> dict[str, Any]:
    out = StringIO()
    call_command("sandbox_benchmark", runs=8, seed=1, json=True, stdout=out, **options)
    return json.loads(out.getvalue())


def test_the_benchmark_runs_the_llm_judge_beside_the_heuristic_only_when_asked(provider, model):
    plain = benchmark()
    assert not any(k.startswith("judge_") for k in plain)
    provider.respond = all_at_once
    judged = benchmark(judge_model=model)
    assert {k: v for k, v in judged.items() if not k.startswith("judge_")} == plain
    n = judged["injected"]
    assert n > 0 and judged["judge_model"] == model and judged["judge_method"] == "all_at_once"
    assert judged["judge_calls"] - judged["judge_cached_calls"] == len(provider.requests) == n
    assert (
        judged["judge_failed"] == 0
        and 0 <= judged["judge_step_accuracy"] <= judged["judge_agent_accuracy"] <= 1
    )
    assert judged["judge_cost"] > 0
    provider.respond = "no idea"
    garbage = benchmark(judge_model=f"{model}-x")
    assert garbage["judge_failed"] == n and garbage["judge_step_accuracy"] == 0.0


def test_an_injection_campaign_with_llm_written_faults_replays_them_through_the_hook(
    project, provider, model
):
    """The campaign plans taxonomy categories, the project's model writes each fault, the team's system replays it
    (its hook wins over the simulator), and the failures come back as cases labelled with the category."""
    from attribution import services
    from attribution.models import Injection, ProjectLlmSettings
    from tests.attribution.test_campaigns import System, real_trace
    from tests.attribution.test_http_hook import serving

    Simulation(provider, fault=fault_at("1792"))
    trace = real_trace(project)
    with serving(System()) as system:
        ProjectLlmSettings.objects.create(
            project=project, model=model, replay_hook_url=system.url, timeout_seconds=10, max_retries=1
        )
        campaign = services.campaign_execute_inline(
            campaign=services.campaign_create(
                project=project, trace_ids=[trace.pk], faults_per_trace=2, writer="llm", enqueue=False
            )
        )
    assert campaign.status == "succeeded" and campaign.total == 2 and campaign.kept == 2
    for injection in Injection.objects.filter(campaign=campaign):
        assert injection.category in CATEGORIES and injection.fault_kind == injection.category
        assert injection.faulty == "The result is 1792."
        gold = GoldLabel.objects.get(trace=injection.result_trace)
        assert gold.source == LabelSource.INJECTED and gold.category == injection.category
        assert "reports 1792 instead of 1729" in gold.reason
    assert [r["json"]["corrections"][0]["content"] for r in system.requests] == ["The result is 1792."] * 2
