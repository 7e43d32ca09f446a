"""The text side of the heuristic's detectors: the patterns they search for, where a match can be
(``attribution.prefilter``), and the normal form answers are compared in. Split from ``heuristic`` so that module
stays about the evidence and the verdict."""

from __future__ import annotations

import re
from functools import lru_cache

from ..prefilter import Alternation, Branch

_CODE_BLOCK = re.compile(r"```[\w+-]*[ \t]*\n.*?```", re.DOTALL)
# Code an agent wrote for execution is fenced with a language tag; Magentic-One's WebSurfer fences OCR text without
# one, which is a page read, not code written.
_CODE = re.compile(r"```(?:python|py|sh|bash|shell|console|javascript|js|sql|r)[ \t]*\n", re.IGNORECASE)
# Each pattern is searched branch by branch, only where its hints (lower case, "|" between them) show a match can
# be (attribution.prefilter); "anchored": every match starts with a hint. Searched whole at every step they cost
# 15 of the 31 ms of a Who&When run. The joined patterns (``_TOOL_ERROR`` ...) are the same as before.
_TOOL_ERROR_SCAN = Alternation(
    Branch(r"exitcode: [1-9]\d*", "exitcode: ", anchored=True),
    Branch(r"Traceback \(most recent call last\)", "traceback (most recent call last)", anchored=True),
    Branch(r"\b\w*(?:Error|Exception): .{0,60}", "error: |exception: "),
    Branch(r"\bHTTP(?: Error)? ?[45]\d\d\b", "http", anchored=True),
    Branch(r"\b[45]\d\d (?:Client|Server) Error", "client error|server error"),
    Branch(r"status(?: code)?:? [45]\d\d\b", "status", anchored=True),
    Branch(
        r"\b(?:execution|request|download) failed\b",
        "execution failed|request failed|download failed",
        anchored=True,
    ),
)
_EMPTY_SCAN = Alternation(
    Branch(
        r"\bno (?:results?|matches|data|information) (?:found|were found|available)\b",
        "no result|no matches|no data|no information",
        anchored=True,
    ),
    Branch(r"\bnot found\b", "not found", anchored=True),
    Branch(r"\breturned no\b", "returned no", anchored=True),
    Branch(r"^\s*(?:None|\[\]|\{\}|nan|null)\s*$", "none|[]|{}|nan|null"),
    Branch(r"Code output:\s*$", "code output:", anchored=True),
    Branch(r"\bNothing to summarize\b", "nothing to summarize", anchored=True),
    flags=re.MULTILINE,
)
# Runtime boilerplate that is not an agent's failure: AG2's terminal answering a message with no code in it.
_NO_CODE_SCAN = Alternation(
    Branch(r"There is no code from the last \d+ message", "there is no code from the last ", anchored=True),
    Branch(r"No code block detected", "no code block detected", anchored=True),
)
_DONE_SCAN = Alternation(
    Branch(r"^\s*TERMINATE\s*$", "terminate"),
    Branch(r"\bRequest satisfied\b", "request satisfied", anchored=True),
    Branch(r"FINAL ANSWER:", "final answer:", anchored=True),
    Branch(
        r"\"is_request_satisfied\":\s*\{[^}]*\"answer\":\s*true", '"is_request_satisfied":', anchored=True
    ),
    flags=re.MULTILINE,
)
_FINAL_ANSWER_SCAN = Alternation(Branch(r"FINAL ANSWER:\s*(.+)", "final answer:", anchored=True))
_TOOL_ERROR, _EMPTY, _NO_CODE = _TOOL_ERROR_SCAN.pattern, _EMPTY_SCAN.pattern, _NO_CODE_SCAN.pattern
_DONE, _FINAL_ANSWER = _DONE_SCAN.pattern, _FINAL_ANSWER_SCAN.pattern
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def _without_code(text: str) -> str:
    return _CODE_BLOCK.sub(" ", text)


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ``(?<=\d),(?=\d{3}\b)`` with the comma first, so ``re`` jumps from comma to comma instead of trying every character.
_THOUSANDS = re.compile(r",(?<=\d,)(?=\d{3}\b)")


def _norm(text: str) -> str:
    """Lower case, thousands separators dropped, punctuation to spaces: '$5,200,000.' -> '5200000'."""
    return " ".join(_WORD.findall(_unseparated(text)))


def _unseparated(text: str) -> str:
    """``text`` lower-cased without thousands separators: every word of ``_norm(text)`` is a substring of it."""
    text = text.lower()
    return _THOUSANDS.sub("", text) if "," in text else text


class _Lazy:
    """One value per step, computed the first time a detector asks for it (most steps are never asked twice)."""

    def __init__(self, n: int, compute) -> None:
        self._values: list = [_UNSET] * n
        self._compute = compute

    def __getitem__(self, i: int):
        value = self._values[i]
        if value is _UNSET:
            value = self._values[i] = self._compute(i)
        return value


_UNSET = object()


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word containment on normalised text: '22' is not in '2022'."""
    if not needle or needle not in haystack:  # the plain substring test is the cheap half of the answer
        return False
    return _whole_word(needle).search(haystack) is not None


@lru_cache(maxsize=1024)
def _whole_word(needle: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.]){re.escape(needle)}(?![\w])")


_MADE_UP_SCAN = Alternation(
    Branch(
        r"\b(?:hypothetical|placeholder|dummy|mock(?:ed)? data|simulat(?:e|ed|ing|ion)|sample data|example data|"
        r"for demonstration|fictional|made[- ]up|let'?s assume|assuming|YOUR_[A-Z_]+|replace (?:this|with))\b",
        "hypothetical|placeholder|dummy|mock data|mocked data|simulat|sample data|example data|for demonstration"
        "|fictional|made-up|made up|let's assume|lets assume|assuming|your_|replace this|replace with",
        anchored=True,
    )
)
_MADE_UP = _MADE_UP_SCAN.pattern
