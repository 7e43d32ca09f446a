"""The agreement coefficients against published worked examples."""

from __future__ import annotations

import pytest

from annotations.agreement import (
    Answer,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    majority,
    pairwise,
    rater_kappa,
    unanimous,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers, twelve units,
# missing values ("." in the paper) left out. Published: nominal alpha = 0.743, interval alpha = 0.849.
_OBSERVERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
KRIPPENDORFF_UNITS = [[row[u] for row in _OBSERVERS if row[u] is not None] for u in range(12)]


def test_nominal_alpha_matches_krippendorffs_worked_example():
    assert krippendorff_alpha(KRIPPENDORFF_UNITS, "nominal") == pytest.approx(0.743, abs=5e-4)


def test_interval_alpha_matches_krippendorffs_worked_example():
    assert krippendorff_alpha(KRIPPENDORFF_UNITS, "interval") == pytest.approx(0.849, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_negative_for_systematic_disagreement():
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["c", "c"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a", "b"], ["b", "a"], ["a", "b"]]) < 0


def test_alpha_is_undefined_without_pairs_or_without_variation():
    assert krippendorff_alpha([["a"], ["b"]]) is None
    assert krippendorff_alpha([["a", "a"], ["a", "a"]]) is None


def test_cohens_kappa_matches_the_textbook_two_by_two_table():
    # 50 proposals: both yes 20, A yes B no 5, A no B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)


def test_cohens_kappa_refuses_unpaired_ratings():
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_matches_the_fourteen_rater_example():
    # Fleiss (1971) style worked example (as on Wikipedia): 10 subjects, 14 raters, 5 categories -> kappa 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_needs_the_same_number_of_raters_per_subject():
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [2, 1]])


def test_fleiss_and_alpha_agree_closely_on_complete_data():
    # With no missing data, nominal alpha and Fleiss' kappa differ only by a small-sample correction.
    units = [["a", "a", "b"], ["b", "b", "b"], ["a", "c", "c"], ["c", "c", "c"], ["a", "a", "a"]]
    table = [[u.count(c) for c in "abc"] for u in units]
    assert krippendorff_alpha(units) == pytest.approx(fleiss_kappa(table), abs=0.05)


def test_pairwise_rates_count_every_pair_and_each_raters_pairs():
    units = [
        [Answer("ann", "Coder", 4), Answer("bob", "Coder", 5), Answer("cy", "Planner", 4)],
        [Answer("ann", "WebSurfer", 9), Answer("bob", "WebSurfer", 9)],
    ]
    overall, per = pairwise(units, k=1)
    assert (overall.pairs, overall.agent, overall.step_exact, overall.step_within) == (4, 2, 2, 4)
    assert per["cy"].pairs == 2 and per["cy"].agent == 0 and per["cy"].rate("step_within") == 1.0
    assert per["ann"].rate("agent") == pytest.approx(2 / 3)


def test_majority_and_unanimity():
    a, b, c = Answer(1, "X", 3), Answer(2, "X", 3), Answer(3, "Y", 1)
    assert majority([a, b, c]) == ("X", 3)
    assert majority([a, c]) is None
    assert unanimous([a, b]) and not unanimous([a, c])


def test_a_raters_kappa_pools_their_pairs_with_everyone_else():
    units = [
        [Answer("a", "X", 1), Answer("b", "X", 1)],
        [Answer("a", "Y", 2), Answer("b", "Y", 2)],
        [Answer("a", "X", 3), Answer("b", "Y", 3)],
        [Answer("c", "X", 1)],
    ]
    # a vs b: X/X, Y/Y, X/Y -> p_o 2/3, p_e (2*1 + 1*2)/9 = 4/9 -> kappa (2/3 - 4/9) / (5/9) = 0.4
    assert rater_kappa(units, "a") == pytest.approx(0.4)
    assert rater_kappa(units, "c") is None
