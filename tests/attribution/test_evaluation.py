"""Scoring verdicts against gold labels, with hand-made records whose figures can be worked out on paper."""

from __future__ import annotations

import pytest

from attribution.evaluation import Record, baselines, score, scorer_step_match

KEYS = {"n", "agent_accuracy", "step_accuracy", "joint_accuracy", "step_accuracy_within", "scorer_compatible",
        "baselines", "calls", "tokens", "cost"}


def _records() -> list[Record]:
    return [
        # right agent, right step
        Record("WebSurfer", 4, "WebSurfer", 4, n_steps=10, agents=("Orchestrator", "WebSurfer"), calls=1,
               tokens=100, cost=0.01),
        # right agent, step off by 10, yet the released scorer counts it ("2" is in "12")
        Record("websurfer", 12, "WebSurfer", 2, n_steps=20, agents=("Orchestrator", "WebSurfer", "human"),
               calls=3, tokens=300, cost=0.03),
        # wrong agent, step off by 3
        Record("Orchestrator", 6, "WebSurfer", 3, n_steps=8, agents=("Orchestrator", "WebSurfer"), calls=2,
               tokens=200, cost=0.02),
        # wrong agent, step off by 5
        Record("Coder", 0, "Verifier", 5, n_steps=20, agents=("Coder", "Verifier", "Terminal", "Planner"),
               calls=2, tokens=400, cost=0.04),
    ]


def test_the_score_has_exactly_the_documented_keys():
    assert set(score(_records())) == KEYS
    assert set(score(_records())["step_accuracy_within"]) == {"1", "3", "5"}


def test_agent_step_and_joint_accuracy_are_exact_matches():
    result = score(_records())
    assert result["n"] == 4
    assert result["agent_accuracy"] == 0.25  # "websurfer" is not "WebSurfer" for the exact figure
    assert result["step_accuracy"] == 0.25
    assert result["joint_accuracy"] == 0.25


def test_step_accuracy_within_k_counts_predictions_at_most_k_steps_away():
    assert score(_records())["step_accuracy_within"] == {"1": 0.25, "3": 0.5, "5": 0.75}


def test_the_scorer_compatible_figures_follow_the_released_who_and_when_scorer():
    compatible = score(_records())["scorer_compatible"]
    assert compatible["agent"] == 0.5  # case-insensitive
    assert compatible["step"] == 0.5  # "2" in "12" counts, as the released scorer counts it


@pytest.mark.parametrize(("pred", "gold", "counted"), [(1, 1, True), (12, 1, True), (12, 2, True), (21, 1, True),
                                                       (3, 13, False), (0, 10, False), (10, 0, True)])
def test_the_released_scorer_counts_a_step_when_the_gold_digits_appear_in_the_prediction(pred, gold, counted):
    assert scorer_step_match(pred, gold) is counted


def test_the_random_baseline_is_the_expected_accuracy_of_a_uniform_pick():
    random = score(_records())["baselines"]["random"]
    assert random["agent"] == round((1 / 2 + 1 / 3 + 1 / 2 + 1 / 4) / 4, 4)
    assert random["step"] == round((1 / 10 + 1 / 20 + 1 / 8 + 1 / 20) / 4, 4)


def test_the_majority_baseline_always_answers_the_most_frequent_gold_agent_and_step():
    majority = score(_records())["baselines"]["majority"]
    assert majority["agent"] == 0.75  # WebSurfer is gold in three of four
    assert majority["step"] == 0.25  # every gold step differs: any one is right once
    skewed = [Record("a", 0, "a", 5, n_steps=9, agents=("a",)), Record("a", 0, "a", 5, n_steps=9, agents=("a",)),
              Record("a", 0, "b", 1, n_steps=9, agents=("a", "b"))]
    assert baselines(skewed)["majority"] == {"agent": 0.6667, "step": 0.6667}


def test_spend_is_averaged_per_trace():
    result = score(_records())
    assert (result["calls"], result["tokens"], result["cost"]) == (2.0, 250.0, 0.025)


def test_accuracies_are_fractions_rounded_to_four_decimals():
    records = [Record("a", 1, "a", 1, n_steps=3, agents=("a", "b", "c"))] + \
              [Record("a", 1, "b", 2, n_steps=3, agents=("a", "b", "c"))] * 2
    result = score(records)
    assert result["agent_accuracy"] == 0.3333
    assert result["baselines"]["random"] == {"agent": 0.3333, "step": 0.3333}
    for value in (result["agent_accuracy"], result["step_accuracy"], result["joint_accuracy"],
                  *result["step_accuracy_within"].values(), *result["scorer_compatible"].values()):
        assert 0.0 <= value <= 1.0


def test_a_missing_verdict_counts_as_wrong_even_for_the_lenient_figures():
    # pred_step -1 is 1 away from gold step 0, and "1" is a substring of "-1": neither may count.
    records = [Record("", -1, "a", 0, n_steps=5, agents=("a",)), Record("", -1, "a", 1, n_steps=5, agents=("a",))]
    result = score(records)
    assert result["step_accuracy"] == result["joint_accuracy"] == 0.0
    assert result["step_accuracy_within"] == {"1": 0.0, "3": 0.0, "5": 0.0}
    assert result["scorer_compatible"] == {"agent": 0.0, "step": 0.0}


def test_an_empty_set_scores_zero_without_dividing_by_zero():
    result = score([])
    assert result["n"] == 0 and result["agent_accuracy"] == 0.0
    assert result["baselines"] == {"random": {"agent": 0.0, "step": 0.0}, "majority": {"agent": 0.0, "step": 0.0}}
