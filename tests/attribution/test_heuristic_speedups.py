"""The heuristic's shortcuts (issue 19) give exactly what the plain computations they replace give, on the inputs the
golden traces (tests/attribution/test_heuristic_golden.py) may not hold: decimals and non-ASCII text for the word
splitter, needles at the edges of words, gated hints, values that straddle two steps, and a value's words in the
question."""

from __future__ import annotations

import random
import re

import pytest

from attribution.methods import heuristic as h
from attribution.methods.base import StepView, TraceView
from attribution.methods.heuristic_text import (
    _EMPTY_SCAN,
    _MADE_UP_SCAN,
    _TOOL_ERROR_SCAN,
    _WORD,
    _contains,
    _norm,
    _unseparated,
    _whole_word,
    _words_of,
)
from attribution.prefilter import folded


def _random_texts(alphabet: str, n: int, longest: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest))) for _ in range(n)]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pi is 3.14, e is 2.718.",
        "version 1.2.3 and v2.0-beta, 1.5kg",
        ".5 a..1 1..2 x.y 7. end.",
        "café 3.5 naïve — 10.25% İstanbul ſ",
        "tabs\tand\nnewlines\x1c\x85\u2028 and 4.2\u00a0m",
        "ÉCOLE 12,345.67 $5,200,000.",
    ],
)
def test_the_word_splitter_finds_the_words_the_regex_finds(text):
    for unseparated in (text, text.lower(), _unseparated(text)):
        assert _words_of(unseparated) == _WORD.findall(unseparated)


def test_the_word_splitter_agrees_with_the_regex_on_random_text():
    for alphabet in ("ab1.. ,", "z9.0 \n-é", "1.2 .x"):
        for text in _random_texts(alphabet, 20_000, 16, seed=len(alphabet)):
            assert _words_of(text) == _WORD.findall(text), repr(text)


def test_whole_word_containment_is_the_look_behind_first_pattern():
    def before(needle: str) -> re.Pattern[str]:
        return re.compile(rf"(?<![\w.]){re.escape(needle)}(?![\w])")

    haystacks = _random_texts("ab1. _é", 4000, 12, seed=1)
    needles = [n for n in _random_texts("ab1. ", 400, 4, seed=2) if n]
    for haystack, needle in zip(haystacks, needles * 10):
        assert (_whole_word(needle).search(haystack) is None) == (before(needle).search(haystack) is None)
    assert _contains("in 2022 there", "2022") and not _contains("in 2022 there", "22")
    assert not _contains("v1.22 out", "22") and _contains("a 22 b", "22")


@pytest.mark.parametrize(
    "text", ["plain ascii", "Straße", "İstanbul", "ıi", "ſ long s", "naïve", "KELVIN \u212a"]
)
def test_folding_refuses_the_three_characters_lower_case_does_not_fold_as_re_does(text):
    untrusted = re.search("[\u0130\u0131\u017f]", text) is not None
    assert folded(text) == (None if untrusted else text.lower())


@pytest.mark.parametrize(
    "text",
    [
        "Sample data is used here",
        "sampled data, not sample-data",
        "We have DATA but no mock of it",
        "Let's assume the value is 3",
        "assumed, not assuming",
        "It was made up. Made-up numbers.",
        "replace this with the key, or replace with yours",
        "the request failed after the download failed",
        "404 Client Error: not found",
        "no results found\nNo data available",
        "no  results found",
        "nothing here at all",
    ],
)
def test_gated_hints_find_what_the_joined_pattern_finds(text):
    for scan in (_MADE_UP_SCAN, _TOOL_ERROR_SCAN, _EMPTY_SCAN):
        fast, plain = scan.search(text), scan.pattern.search(text)
        assert (fast and (fast.span(), fast[0])) == (plain and (plain.span(), plain[0]))


_FRAGMENTS = [
    "HTTP 404",
    "http://x.org/404 ",
    "HTTP Error 500",
    "status: 503",
    "Status code 200",
    "exitcode: 0",
    "exitcode: 1 ",
    "ValueError: bad",
    "Traceback (most recent call last)",
    "request failed",
    "Download Failed",
    "not found",
    "No results found",
    "None",
    "[]",
    "nan",
    "\n",
    "  ",
    "Code output:",
    "TERMINATE",
    "FINAL ANSWER: 42",
    '"is_request_satisfied": {"reason": "x", "answer": true}',
    "let's assume",
    "Assuming",
    "mocked data",
    "YOUR_API_KEY",
    "replace with",
    "İ",
    "word",
    ", ",
]


def test_every_scan_finds_what_its_joined_pattern_finds_on_random_text():
    rng = random.Random(11)
    scans = [
        _TOOL_ERROR_SCAN,
        _EMPTY_SCAN,
        _MADE_UP_SCAN,
        h._DONE_SCAN,
        h._FINAL_ANSWER_SCAN,
        h._NO_CODE_SCAN,
    ]
    for _ in range(3000):
        text = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(0, 8)))
        for scan in scans:
            fast, plain = scan.search(text), scan.pattern.search(text)
            assert (fast and (fast.span(), fast.groups())) == (plain and (plain.span(), plain.groups())), text


def _view(
    contents: list[str], *, question: str = "Find it.", outcome: str = "failed", gt: str = ""
) -> TraceView:
    agents = ["Alpha", "Beta"]
    steps = tuple(
        StepView(index=i, agent=agents[i % 2], kind="message", content=content)
        for i, content in enumerate(contents)
    )
    return TraceView(
        trace_id=0,
        name="",
        question=question,
        ground_truth=gt,
        outcome=outcome,
        steps=steps,
        agents=tuple(agents),
    )


def _steps_with_one_by_one(ctx: h._Context, value: str, start: int = 0) -> list[int]:
    """What the detector did before: each step before the final one, in order, normalised and tested."""
    return [i for i in range(start, ctx.final) if _contains(_norm(ctx.steps[i].content), value)]


def test_the_steps_holding_a_value_are_those_a_step_by_step_scan_finds():
    contents = [
        "The total is 5,200 dollars",
        "We said total",  # the value's first word ends this step ...
        "is 5200 then",  # ... and the rest starts the next: not a match
        "",
        "TOTAL IS 5200!",
        "subtotal is 52000",  # not whole words
        "The total is 5200.5 exactly",
        "FINAL ANSWER: total is 5200",
    ]
    ctx = h._Context(_view(contents), with_ground_truth=False)
    assert ctx.final == len(contents) - 1
    for value in ("total is 5200", "5200", "is", "total", "5200 5", "exactly", "nowhere", "then tot"):
        for start in (0, 1, 3, 5, 7):
            assert list(h._steps_with(ctx, value, start)) == _steps_with_one_by_one(ctx, value, start), value


def test_the_steps_holding_a_value_agree_with_the_scan_on_random_steps():
    rng = random.Random(7)
    words = ["ab", "abc", "b", "1.5", "15", "x1", "a"]
    for _ in range(200):
        contents = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(8)]
        contents.append("FINAL ANSWER: done")
        ctx = h._Context(_view(contents), with_ground_truth=False)
        for _ in range(5):
            value = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
            start = rng.randint(0, 8)
            assert list(h._steps_with(ctx, value, start)) == _steps_with_one_by_one(ctx, value, start)


def _answer_values_before(ctx: h._Context) -> list[str]:
    """``_answer_values`` as it was: the question and system prompts normalised whole, every time."""
    text = h._without_code(ctx.answer).replace("TERMINATE", " ")[-h._ANSWER_TAIL :]
    given = _norm(" ".join([ctx.trace.question, *ctx.trace.system_prompts.values()]))
    raw = [*h.tokens_of(text), *h._BOLD.findall(text), *h._NAME.findall(text)]
    if len(text) <= h._SHORT_ANSWER:
        raw += re.split(r"[,;\n]| and ", text)
    values = []
    for item in raw:
        normed = _norm(item)
        words = normed.split()
        if len(normed) < 2 or all(w in h._COMMON for w in words) or _contains(given, normed):
            continue
        values.append(normed)
    return list(dict.fromkeys(values))


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("How many gyms are in Ohio?", "FINAL ANSWER: Muscle Headz Gym, Ohio WV YMCA"),
        ("What is 1,234 plus 5?", "FINAL ANSWER: 1,239 and 1,234"),
        ("Name the Planet of the Apes sequel.", "FINAL ANSWER: **Beneath the Planet of the Apes**, 1970"),
        ("Is 3.14 pi?", "FINAL ANSWER: 3.14, 3.1, 14, pi"),
        ("Ohio gyms", "FINAL ANSWER: Ohiogyms, gyms Ohio, Ohio gyms"),
    ],
)
def test_the_answer_values_leave_out_what_the_question_says_as_before(question, answer):
    ctx = h._Context(_view(["Start.", "Some work.", answer], question=question), with_ground_truth=False)
    assert ctx.answer
    assert h._answer_values(ctx) == _answer_values_before(ctx)


def test_a_message_with_code_is_read_without_it_and_one_without_shares_its_folded_text():
    boilerplate = "There is no code from the last 1 message"
    contents = [
        f"Run this:\n```python\nprint('{boilerplate}')\n```\nthen report.",
        f"{boilerplate}. Exitcode: 1 Traceback (most recent call last)",
        "FINAL ANSWER: 4",
    ]
    ctx = h._Context(_view(contents), with_ground_truth=False)
    for i, step in enumerate(ctx.steps):
        text = h._without_code(step.content)
        assert ctx.low_text[i] == folded(text)
        plain = h._NO_CODE_SCAN.pattern.search(text)
        assert (ctx.no_code_text[i] and ctx.no_code_text[i][0]) == (plain and plain[0])
    assert ctx.no_code[0] and not ctx.no_code_text[0]
