"""The text side of the heuristic's detectors: the patterns they search for, where a match can be
(``attribution.prefilter``), and the normal form answers are compared in. Split from ``heuristic`` so that module
stays about the evidence and the verdict."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
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
    Branch(r"\b[45]\d\d (?:Client|Server) Error", "client error|server error", gates=" error"),
    Branch(r"status(?: code)?:? [45]\d\d\b", "status", anchored=True),
    Branch(
        r"\b(?:execution|request|download) failed\b",
        "execution failed|request failed|download failed",
        anchored=True,
        gates="failed",
    ),
)
_EMPTY_SCAN = Alternation(
    Branch(
        r"\bno (?:results?|matches|data|information) (?:found|were found|available)\b",
        "no result|no matches|no data|no information",
        anchored=True,
        gates="no ",
    ),
    Branch(r"\bnot found\b", "not found", anchored=True),
    Branch(r"\breturned no\b", "returned no", anchored=True),
    # A line of its own, padded with spaces or tabs only: ``^\s*`` would run on over every following blank line
    # from each line start, quadratic in a run of blank lines (a match starts on the word's own line instead; the
    # snippet collapses the whitespace either way).
    Branch(r"^[^\S\n]*(?:None|\[\]|\{\}|nan|null)[^\S\n]*$", "none|[]|{}|nan|null"),
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
    Branch(r"^[^\S\n]*TERMINATE[^\S\n]*$", "terminate"),  # a line of its own, as above
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
    return " ".join(_words_of(_unseparated(text)))


# A dot followed by a digit, after a letter or digit: the only place where a word of ``_WORD`` holds anything but
# letters and digits ('3.14', 'v2.0'). The dot first, so ``re`` jumps from dot to dot.
_DECIMAL = re.compile(r"\.(?<=[a-z0-9]\.)[0-9]")
# Every byte but a lower-case letter, a digit (and, in the second table, a dot) becomes a space.
_NOT_WORD = bytes(c if chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789" else 32 for c in range(256))
_NOT_WORD_OR_DOT = bytes(c if chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789." else 32 for c in range(256))


def _words_of(unseparated: str) -> list[str]:
    """``_WORD.findall(unseparated)``, for less: the loop detector's largest part.

    Away from a decimal a word is a run of lower-case letters and digits, so the words are what is left once
    everything else is spaced out (a non-ASCII character becomes one "?" byte, so positions hold) and the text is
    split: C passes, a quarter cheaper than the regex. Only the space-delimited pieces that hold a decimal are read
    with the regex itself: no word crosses a space, so it finds in a piece what it finds there in the whole text."""
    first = _DECIMAL.search(unseparated)
    if first is None:
        return unseparated.encode("ascii", "replace").translate(_NOT_WORD).decode("ascii").split()
    spaced = unseparated.encode("ascii", "replace").translate(_NOT_WORD_OR_DOT).decode("ascii")
    words: list[str] = []
    done = 0  # where the text not yet read starts: 0, or the space after the last piece read
    for site in _DECIMAL.finditer(spaced, first.start()):
        at = site.start()
        if at < done:
            continue  # a second decimal in the piece just read
        start = spaced.rfind(" ", done, at) + 1  # 0 when the piece starts the text
        end = spaced.find(" ", at)
        if end < 0:
            end = len(spaced)
        # Between pieces with a decimal every dot is a separator.
        words += spaced[done:start].replace(".", " ").split()
        words += _WORD.findall(spaced, start, end)
        done = end
    words += spaced[done:].replace(".", " ").split()
    return words


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


class _StepSearch:
    """The steps before the final one whose normalised text holds a value as whole words, in order.

    ``_contains(normed[i], value)`` is true only where every word of the value is a substring of ``unseparated[i]``,
    so the steps are found by looking for one of its words (the longest, likely the rarest) in all their
    unseparated texts joined by newlines (no word holds one), one C search from hit to hit, rather than step by
    step in Python; a step holding it is then tested as before. Where each step starts in the joined text maps a
    hit back to its step."""

    def __init__(self, n: int, unseparated: _Lazy, normed: _Lazy) -> None:
        self._unseparated, self._normed = unseparated, normed
        texts = [unseparated[i] for i in range(n)]
        self._joined = "\n".join(texts)
        self._starts = starts = []
        at = 0
        for text in texts:
            starts.append(at)
            at += len(text) + 1

    def steps_with(self, value: str, start: int = 0) -> Iterator[int]:
        """Each step i >= ``start`` for which ``_contains(normed[i], value)``, in order."""
        words = value.split()
        if not words:
            return  # an empty needle is in nothing (``_contains``)
        key = max(words, key=len)
        starts, joined = self._starts, self._joined
        i = start
        while i < len(starts):
            at = joined.find(key, starts[i])
            if at < 0:
                return
            i = bisect_right(starts, at) - 1
            unseparated = self._unseparated[i]
            if all(word in unseparated for word in words) and _contains(self._normed[i], value):
                yield i
            i += 1


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word containment on normalised text: '22' is not in '2022'."""
    if not needle or needle not in haystack:  # the plain substring test is the cheap half of the answer
        return False
    return _whole_word(needle).search(haystack) is not None


@lru_cache(maxsize=1024)
def _whole_word(needle: str) -> re.Pattern[str]:
    r"""``(?<![\w.])needle(?!\w)``, written with the needle first: a pattern that starts with a look-behind has no
    literal prefix, so ``re`` tries it at every character (a third of the answer-origin detector's time); the
    look-behind after the needle, over the needle and the character before it, says the same."""
    escaped = re.escape(needle)
    return re.compile(rf"{escaped}(?<![\w.]{escaped})(?!\w)")


_MADE_UP_SCAN = Alternation(
    Branch(
        r"\b(?:hypothetical|placeholder|dummy|mock(?:ed)? data|simulat(?:e|ed|ing|ion)|sample data|example data|"
        r"for demonstration|fictional|made[- ]up|let'?s assume|assuming|YOUR_[A-Z_]+|replace (?:this|with))\b",
        "hypothetical|placeholder|dummy|mock data|mocked data|simulat|sample data|example data|for demonstration"
        "|fictional|made-up|made up|let's assume|lets assume|assuming|your_|replace this|replace with",
        anchored=True,
        gates="data|made|assum|replace ",
    )
)
_MADE_UP = _MADE_UP_SCAN.pattern
