"""Scoring verdicts against gold labels, with hand-made records whose figures can be worked out on paper."""

from __future__ import annotations

import random

import pytest

from attribution.evaluation import (
    Constants,
    Record,
    _leave_one_out,
    baselines,
    score,
    scorer_step_match,
    wilson,
)

KEYS = {
    "n",
    "agent_accuracy",
    "step_accuracy",
    "joint_accuracy",
    "intervals",
    "step_accuracy_within",
    "scorer_compatible",
    "baselines",
    "calls",
    "tokens",
    "cost",
}
BASELINES = {"majority", "first", "last", "random", "random_blamed"}


def _records() -> list[Record]:
    return [
        # right agent, right step
        Record(
            "WebSurfer",
            4,
            "WebSurfer",
            4,
            n_steps=10,
            agents=("Orchestrator", "WebSurfer"),
            calls=1,
            tokens=100,
            cost=0.01,
        ),
        # right agent, step off by 10, yet the released scorer counts it ("2" is in "12")
        Record(
            "websurfer",
            12,
            "WebSurfer",
            2,
            n_steps=20,
            agents=("Orchestrator", "WebSurfer", "human"),
            calls=3,
            tokens=300,
            cost=0.03,
        ),
        # wrong agent, step off by 3
        Record(
            "Orchestrator",
            6,
            "WebSurfer",
            3,
            n_steps=8,
            agents=("Orchestrator", "WebSurfer"),
            calls=2,
            tokens=200,
            cost=0.02,
        ),
        # wrong agent, step off by 5
        Record(
            "Coder",
            0,
            "Verifier",
            5,
            n_steps=20,
            agents=("Coder", "Verifier", "Terminal", "Planner"),
            calls=2,
            tokens=400,
            cost=0.04,
        ),
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


@pytest.mark.parametrize(
    ("pred", "gold", "counted"),
    [
        (1, 1, True),
        (12, 1, True),
        (12, 2, True),
        (21, 1, True),
        (3, 13, False),
        (0, 10, False),
        (10, 0, True),
    ],
)
def test_the_released_scorer_counts_a_step_when_the_gold_digits_appear_in_the_prediction(pred, gold, counted):
    assert scorer_step_match(pred, gold) is counted


def test_the_random_baseline_is_the_expected_accuracy_of_a_uniform_pick():
    random = score(_records())["baselines"]["random"]
    assert random["agent"] == round((1 / 2 + 1 / 3 + 1 / 2 + 1 / 4) / 4, 4)
    assert random["step"] == round((1 / 10 + 1 / 20 + 1 / 8 + 1 / 20) / 4, 4)


def test_the_majority_baseline_is_fitted_on_the_other_records_never_on_the_one_it_scores():
    majority = score(_records())["baselines"]["majority"]
    assert majority["agent"] == 0.75  # WebSurfer is gold in three of four: each is right by the other three
    assert majority["step"] == 0.0  # every gold step differs: the others never name it
    skewed = [
        Record("a", 0, "a", 5, n_steps=9, agents=("a",)),
        Record("a", 0, "a", 5, n_steps=9, agents=("a",)),
        Record("a", 0, "b", 1, n_steps=9, agents=("a", "b")),
    ]
    # Left out, an "a"/5 record sees "a"/5 and "b"/1: the agent tie goes to "a" (right), the step tie to the
    # smaller step 1 (wrong); the "b"/1 record sees only "a"/5 (wrong twice).
    assert (baselines(skewed)["majority"]["agent"], baselines(skewed)["majority"]["step"]) == (0.6667, 0.0)


def test_each_record_is_scored_by_the_constants_fitted_on_every_other_record():
    # records sharing a gold (agent, step) share their constants (issue 19): still those of every other record
    rng = random.Random(19)
    records = [Record("", 0, rng.choice("abcd"), rng.randrange(4), n_steps=9) for _ in range(60)]
    records.append(Record("", 0, "once", 7, n_steps=9))  # left out, it is blamed by no other record
    assert _leave_one_out(records) == [
        Constants.fit(records[:i] + records[i + 1 :]) for i in range(len(records))
    ]


def test_constant_baselines_learn_from_the_training_records_when_given():
    train = [Record("", 0, "Coder", 3, n_steps=9, agents=("Coder",))] * 3
    result = score(_records(), train=train)["baselines"]["majority"]
    assert (result["agent"], result["step"]) == (0.0, 0.25)  # "Coder" is never gold here; step 3 is once


def test_a_baseline_computed_on_the_scored_set_could_not_fail_and_is_not_what_we_report():
    # one trace: a majority taken from the scored set would be right by construction
    single = [Record("x", 1, "Agent", 4, n_steps=9, agents=("Agent", "Other"))]
    assert score(single)["baselines"]["majority"]["step"] == 0.0


def test_first_and_last_action_baselines_read_the_traces_own_ends():
    records = [
        Record(
            "",
            0,
            "a",
            1,
            n_steps=5,
            agents=("a", "b"),
            first_agent="a",
            first_step=1,
            last_agent="b",
            last_step=4,
        ),
        Record(
            "",
            0,
            "b",
            4,
            n_steps=5,
            agents=("a", "b"),
            first_agent="a",
            first_step=1,
            last_agent="b",
            last_step=4,
        ),
    ]
    b = baselines(records)
    assert (b["first"]["agent"], b["first"]["step"]) == (0.5, 0.5)
    assert (b["last"]["agent"], b["last"]["step"]) == (0.5, 0.5)


def test_random_among_ever_blamed_agents_narrows_the_pick_to_agents_blamed_in_training():
    train = [Record("", 0, "a", 0, n_steps=3, agents=("a", "b", "c"))]
    test = [Record("", 0, "a", 0, n_steps=3, agents=("a", "b", "c"))]
    b = baselines(test, train)
    assert b["random"]["agent"] == 0.3333 and b["random_blamed"]["agent"] == 1.0


@pytest.mark.parametrize(
    ("hits", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (50, 100, 0.4038, 0.5962)],
)
def test_wilson_intervals_match_the_published_formula(hits, n, low, high):
    assert wilson(hits, n) == [low, high]


def test_every_accuracy_and_baseline_carries_an_interval():
    result = score(_records())
    assert set(result["intervals"]) == {"agent", "step", "joint"}
    lo, hi = result["intervals"]["agent"]
    assert lo <= result["agent_accuracy"] <= hi
    assert set(result["baselines"]) == BASELINES
    for figure in result["baselines"].values():
        assert figure["agent_ci"][0] <= figure["agent"] <= figure["agent_ci"][1]


def test_spend_is_averaged_per_trace():
    result = score(_records())
    assert (result["calls"], result["tokens"], result["cost"]) == (2.0, 250.0, 0.025)


def test_accuracies_are_fractions_rounded_to_four_decimals():
    records = [Record("a", 1, "a", 1, n_steps=3, agents=("a", "b", "c"))] + [
        Record("a", 1, "b", 2, n_steps=3, agents=("a", "b", "c"))
    ] * 2
    result = score(records)
    assert result["agent_accuracy"] == 0.3333
    assert (result["baselines"]["random"]["agent"], result["baselines"]["random"]["step"]) == (0.3333, 0.3333)
    for value in (
        result["agent_accuracy"],
        result["step_accuracy"],
        result["joint_accuracy"],
        *result["step_accuracy_within"].values(),
        *result["scorer_compatible"].values(),
    ):
        assert 0.0 <= value <= 1.0


def test_a_missing_verdict_counts_as_wrong_even_for_the_lenient_figures():
    # pred_step -1 is 1 away from gold step 0, and "1" is a substring of "-1": neither may count.
    records = [
        Record("", -1, "a", 0, n_steps=5, agents=("a",)),
        Record("", -1, "a", 1, n_steps=5, agents=("a",)),
    ]
    result = score(records)
    assert result["step_accuracy"] == result["joint_accuracy"] == 0.0
    assert result["step_accuracy_within"] == {"1": 0.0, "3": 0.0, "5": 0.0}
    assert result["scorer_compatible"] == {"agent": 0.0, "step": 0.0}


def test_an_empty_set_scores_zero_without_dividing_by_zero():
    result = score([])
    assert result["n"] == 0 and result["agent_accuracy"] == 0.0
    assert all(b["agent"] == b["step"] == 0.0 for b in result["baselines"].values())
