"""Case-insensitive alternations that only look where a match can be, with the same answers as ``re``.

Python's ``re`` finds no literal prefix in a case-insensitive alternation such as ``exitcode: [1-9]|\\bHTTP ?[45]\\d\\d``,
so it tries every branch at every character: the heuristic's detectors spent half their time there (6.6 ms of the
31 ms of a Who&When run went to one pattern). Here each branch comes with ``hints``, lower-case strings of which
every match of the branch holds one; looking those up in the lower-cased text is a C substring search, and a branch
whose hints are absent is not searched at all. A branch whose matches *start* with a hint ("anchored") is tried only
where a hint starts (``pattern.match(text, pos)`` sees the text before ``pos``, so ``\\b`` and look-behinds hold).
The leftmost match over the branches, the earliest branch on a tie, is what the joined pattern's ``search`` returns:
the same position, text and groups.

Lower-casing is a faithful stand-in for ``re.IGNORECASE`` on every character but three: under IGNORECASE ``İ``
and ``ı`` match ``i`` and ``ſ`` matches ``s``, while ``str.lower`` does not turn them into those letters, and ``İ``
is the one character that ``str.lower`` lengthens, which would shift positions (both checked over every code point
with Python 3.11). Text holding one of them is searched with the joined pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def folded(text: str) -> str | None:
    """``text`` lower-cased for hint lookups (same length, same positions), or None when hints cannot be trusted."""
    # Three substring tests, not a character class: ``re`` walks a non-ASCII text character by character, and a
    # sixth of Who&When's steps are not ASCII (0.05 ms of a run).
    if not text.isascii() and ("\u0130" in text or "\u0131" in text or "\u017f" in text):
        return None
    return text.lower()


@dataclass(frozen=True)
class Branch:
    regex: str
    hints: str  # lower-case strings separated by "|": every match of ``regex`` holds one
    anchored: bool = False  # every match starts with one of the hints
    # Lower-case strings separated by "|", each held by several hints: those hints are looked up only where it is
    # found ("data" for "sample data" and "mock data"), one pass over the text instead of several where it is not.
    gates: str = ""


class Alternation:
    """``re.compile("|".join(branches), flags | re.IGNORECASE)``, searched branch by branch where hints allow."""

    def __init__(self, *branches: Branch, flags: int = 0) -> None:
        flags |= re.IGNORECASE
        if any(b.hints != b.hints.lower() or b.gates != b.gates.lower() for b in branches):
            raise ValueError("hints are looked up in lower-cased text: write them in lower case")
        self.pattern = re.compile("|".join(b.regex for b in branches), flags)
        self._branches = [
            (re.compile(b.regex, flags), tuple(b.hints.split("|")), _lookups(b), b.anchored) for b in branches
        ]

    def search(self, text: str) -> re.Match[str] | None:
        return self.search_folded(text, folded(text))

    def search_folded(self, text: str, low: str | None) -> re.Match[str] | None:
        """``self.pattern.search(text)``, where ``low`` is ``folded(text)`` (computed once for several patterns)."""
        if low is None:
            return self.pattern.search(text)
        best: re.Match[str] | None = None
        for pattern, hints, lookups, anchored in self._branches:
            # Plain loops: any() with a generator costs more than the lookups.
            for gate, group in lookups:
                if gate is not None and gate not in low:
                    continue  # a hint holding the gate cannot be in a text without it
                for hint in group:
                    if hint in low:
                        break
                else:
                    continue
                break  # a hint is there: the branch may match
            else:
                continue
            match = _first_at(pattern, hints, text, low) if anchored else pattern.search(text)
            # Strictly before: on a tie the earlier branch wins, as in the joined pattern.
            if match is not None and (best is None or match.start() < best.start()):
                best = match
        return best


def _lookups(branch: Branch) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
    """The branch's hints grouped behind the first of its gates that each holds (None: looked up always)."""
    gates = [g for g in branch.gates.split("|") if g]
    groups: dict[str | None, list[str]] = {}
    for hint in branch.hints.split("|"):
        groups.setdefault(next((g for g in gates if g in hint), None), []).append(hint)
    return tuple((gate, tuple(hints)) for gate, hints in groups.items())


def _first_at(pattern: re.Pattern[str], hints: tuple[str, ...], text: str, low: str) -> re.Match[str] | None:
    if len(hints) == 1:  # one hint is found from left to right: the first start that matches is the leftmost
        hint = hints[0]
        at = low.find(hint)
        while at >= 0:
            if match := pattern.match(text, at):
                return match
            at = low.find(hint, at + 1)
        return None
    starts = set()
    for hint in hints:
        at = low.find(hint)
        while at >= 0:
            starts.add(at)
            at = low.find(hint, at + 1)
    for at in sorted(starts):
        if match := pattern.match(text, at):
            return match
    return None
