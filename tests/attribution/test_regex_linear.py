"""Patterns run on trace text (the heuristic's detectors, the simulator's answer line, the perturber's call
arguments) cost time linear in the text: each hostile input here took minutes with the old patterns (a run of
blank lines before a word: 49 s at 50 KB; spaces after "final answer": 11 s), so finishing at all is the check.
The answers on ordinary text are unchanged (compared on 100,000 random strings and every Who&When step when they
were rewritten)."""

from __future__ import annotations

from attribution.methods.heuristic_text import _DONE, _DONE_SCAN, _EMPTY, _EMPTY_SCAN, _snippet
from attribution.replay.llm_sim import stated_answer
from attribution.replay.perturb import _swap

BLANK_LINES = "\n" * 200_000


def test_a_run_of_blank_lines_before_a_word_costs_one_pass():
    assert _EMPTY_SCAN.search(BLANK_LINES + "nonex") is None
    assert _EMPTY.search(BLANK_LINES + "nullx") is None
    assert _DONE_SCAN.search(BLANK_LINES + "terminatex") is None
    assert not _DONE.search(BLANK_LINES + "TERMINATED")


def test_the_empty_and_done_lines_are_found_as_before():
    for text in ("None", "  None  ", "result:\n\n   []\n", "x\n\t{}\t\nmore", "nan", "\n\nnull\n\n"):
        match = _EMPTY_SCAN.search(text)
        assert match is not None, text
        assert _snippet(match[0], 30) in {"None", "[]", "{}", "nan", "null"}
    for text in ("None of them", "x None", "[1]", "nullable"):
        assert _EMPTY_SCAN.search(text) is None, text
    assert _DONE_SCAN.search("All done.\n  TERMINATE  \n") is not None
    assert _DONE_SCAN.search("please TERMINATE now") is None


def test_a_long_run_of_spaces_after_final_answer_costs_one_pass():
    assert stated_answer("final answer" + " " * 200_000) == ""
    assert stated_answer("FINAL ANSWER" + " " * 200_000 + ": 42") == "42"
    assert stated_answer("The final answer is: Paris\nFinal Answer：  Lyon ") == "Lyon"


def test_a_long_run_of_commas_in_a_call_costs_one_pass():
    assert _swap("(" * 100_000 + "," * 100_000) is None
    assert _swap("search(query, limit) then") == "search(limit, query) then"
