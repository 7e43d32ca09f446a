"""Inter-annotator agreement, as pure functions over plain values (no Django), so the textbook cases test them.

Queues use Krippendorff's alpha as the chance-corrected coefficient: an item may have one, two or five answers (copies
still open, skips, overlap changed), and alpha is the coefficient that takes any number of coders per unit and missing
values without dropping units. Cohen's kappa (two raters, e.g. one method against the human reference) and Fleiss'
kappa (a fixed number of raters per subject) are here too, for the judge-versus-human table and for comparison.

Raw agreement on top of the coefficients, because people read "84% of pairs named the same agent" faster than
"alpha = 0.71": pairwise rates over every unordered pair of answers to the same item.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations


def _nominal(a: Hashable, b: Hashable) -> float:
    return 0.0 if a == b else 1.0


def _interval(a: Hashable, b: Hashable) -> float:
    return (float(a) - float(b)) ** 2


METRICS: dict[str, Callable[[Hashable, Hashable], float]] = {"nominal": _nominal, "interval": _interval}


def krippendorff_alpha(units: Iterable[Sequence[Hashable]], metric: str = "nominal") -> float | None:
    """Krippendorff's alpha over ``units``, each the values its coders gave (missing values simply left out).

    Units with fewer than two values cannot be paired and are dropped, as in Krippendorff (2011). Returns None when
    alpha is undefined (fewer than two pairable values, or every value the same so no disagreement is expected).
    """
    delta = METRICS[metric]
    coincidence: Counter[tuple[Hashable, Hashable]] = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidence[(c, k)] += 1 / (m - 1)
    totals: Counter[Hashable] = Counter()
    for (c, _k), weight in coincidence.items():
        totals[c] += weight
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(weight * delta(c, k) for (c, k), weight in coincidence.items())
    expected = sum(totals[c] * totals[k] * delta(c, k) for c in totals for k in totals)
    if expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters who rated the same items (``first[i]`` and ``second[i]`` are item i)."""
    if len(first) != len(second):
        raise ValueError("both raters must rate the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(1 for a, b in zip(first, second, strict=True) if a == b) / n
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from a subjects x categories table of counts; every subject needs the same number of raters."""
    if not table:
        return None
    raters = sum(table[0])
    if raters < 2 or any(sum(row) != raters for row in table):
        raise ValueError("Fleiss' kappa needs the same number (at least two) of raters for every subject")
    subjects = len(table)
    per_subject = [(sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in table]
    p_bar = sum(per_subject) / subjects
    shares = [sum(row[j] for row in table) / (subjects * raters) for j in range(len(table[0]))]
    p_e = sum(p * p for p in shares)
    if p_e == 1:
        return None
    return (p_bar - p_e) / (1 - p_e)


@dataclass(frozen=True)
class Answer:
    """One annotator's answer for one item: who made the decisive error, and at which step."""

    rater: Hashable
    agent: str
    step: int


@dataclass
class PairRates:
    pairs: int = 0
    agent: int = 0
    step_exact: int = 0
    step_within: int = 0

    def add(self, a: Answer, b: Answer, k: int) -> None:
        self.pairs += 1
        self.agent += a.agent == b.agent
        self.step_exact += a.step == b.step
        self.step_within += abs(a.step - b.step) <= k

    def rate(self, field: str) -> float | None:
        return getattr(self, field) / self.pairs if self.pairs else None


def pairwise(units: Iterable[Sequence[Answer]], k: int) -> tuple[PairRates, dict[Hashable, PairRates]]:
    """Agreement over every unordered pair of answers to the same unit: overall, and per rater (pairs they are in)."""
    overall = PairRates()
    per_rater: dict[Hashable, PairRates] = {}
    for answers in units:
        for a, b in combinations(answers, 2):
            overall.add(a, b, k)
            for rater in (a.rater, b.rater):
                per_rater.setdefault(rater, PairRates()).add(a, b, k)
    return overall, per_rater


def rater_kappa(units: Iterable[Sequence[Answer]], rater: Hashable, field: str = "agent") -> float | None:
    """One rater against everyone else: Cohen's kappa over every pair (their answer, another's answer to the same
    unit), pooled. The per-annotator chance-corrected figure; None when the rater shares no unit with anyone."""
    mine: list[Hashable] = []
    theirs: list[Hashable] = []
    for answers in units:
        for own in (a for a in answers if a.rater == rater):
            for other in (a for a in answers if a.rater != rater):
                mine.append(getattr(own, field))
                theirs.append(getattr(other, field))
    return cohen_kappa(mine, theirs) if mine else None


def majority(answers: Sequence[Answer]) -> tuple[str, int] | None:
    """The (agent, step) most answers chose, or None when there is no answer or the top is tied."""
    counts = Counter((a.agent, a.step) for a in answers).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def unanimous(answers: Sequence[Answer]) -> bool:
    return len(answers) >= 1 and len({(a.agent, a.step) for a in answers}) == 1
