"""The fallback for text logs no specific format knows: speaker turns found from header lines it discovers itself.

It tries a family of header shapes that multi-agent consoles use::

    Planner (to chat_manager):          ---------- Coder ----------          2024-… | INFO | name - message
    HyperAgent_x - INFO - Planner's Response: …                              Response from Supervisor Agent
    **Reviewer**: …     ### Critic     # Agent: Writer     [Alice] …     <Bob> …     >> Carol     Name: …

and keeps the family that repeats most (speakers seen twice count fully, one-off names a quarter) among those with
at least two distinct speakers, each at one consistent position (the same indentation or heading level). Every
header starts a turn that runs to the next header of that family. It scores exactly 0.5 wherever it finds two turns,
so any specific format that recognises a file wins; the trace says it was a guess in its warnings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from .base import ParsedStep, ParsedTrace, Source, TraceFormatError, normalise_speaker
from .textlog import (
    AgentNames,
    build_trace,
    dedent_body,
    head_text,
    kind_from_cues,
    looks_like_json,
    outcome_from_tail,
    read_text,
    trim_blank_lines,
)

# Up to five words; separators are not word characters, so a long line cannot make the regex backtrack.
_NAME = r"[A-Za-z][A-Za-z0-9'.]*(?:[ _-][A-Za-z0-9'.]+){0,4}"
_PREFIX = (
    r"(?:\[[^\]\n]*\d[^\]\n]*\][ \t]*|\d{4}-\d\d-\d\d[T ][\d:.,]+(?:Z|[+-]\d\d:?\d\d)?[ \t]*(?:[-|][ \t]*)?)"
)
_LEVEL = r"(?:TRACE|DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)"


@dataclass(frozen=True)
class _Family:
    name: str
    pattern: re.Pattern[str]
    weight: float
    by_indent: bool  # loose shapes must keep one indentation; distinctive ones may nest


_END = r"(?:[ \t]+(?P<rest>[^\n]*))?[ \t]*$"  # the rest of a header line, when it carries text


def _family(name: str, pattern: str, weight: float, by_indent: bool) -> _Family:
    return _Family(name, re.compile(pattern, re.MULTILINE), weight, by_indent)


_FAMILIES = [
    _family(
        "to",
        r"^(?P<indent>[ \t]*)(?P<speaker>[^\s()][^()\n]{0,60}?) \(to (?P<to>[^()\n]{1,60})\):[ \t]*$",
        1.0,
        False,
    ),
    _family(
        "dashes",
        r"^(?P<indent>[ \t]*)-{3,}[ \t]+(?P<speaker>[^-\s][^\n]{0,60}?)[ \t]+-{3,}[ \t]*$",
        1.0,
        False,
    ),
    _family(
        "loglevel",
        rf"^(?P<indent>)[^|\n]{{1,40}}?\|[ \t]*{_LEVEL}[ \t]*\|[ \t]*"
        r"(?P<speaker>[\w.<>-]+?)(?::[\w<>]+:\d+)?[ \t]+-[ \t](?P<rest>[^\n]*)$",
        1.0,
        False,
    ),
    _family(
        "level-dash",
        rf"^(?P<indent>)[^\n]*?\b{_LEVEL}[ \t]+-[ \t]+"
        rf"(?P<speaker>[A-Za-z][\w .>-]{{0,50}}?)(?:'s Response)?:{_END}",
        1.0,
        False,
    ),
    _family(
        "from",
        r"^(?P<indent>[ \t]*)(?:Response|Reply|Message|Output|Answer) from (?P<speaker>[^\n]{1,50}?)"
        r"(?: to (?P<to>[^\n]{1,50}?))?:?[ \t]*$",
        0.9,
        False,
    ),
    _family(
        "heading",
        r"^(?P<indent>#{1,6})[ \t]+(?:(?:Agent|Speaker|Role|From)[ \t]*:[ \t]*)?"
        r"(?P<speaker>[^:#\n]{1,50}?)[ \t]*#*[ \t]*$",
        0.9,
        True,
    ),
    _family("bold", rf"^(?P<indent>[ \t]*)\*\*(?P<speaker>{_NAME})(?::\*\*|\*\*[ \t]*:){_END}", 0.9, True),
    _family(
        "bracket",
        r"^(?P<indent>[ \t]*)\[(?P<speaker>[^\]\n]{1,50})\][ \t]*:?"
        r"(?:[ \t]+(?P<rest>[^\n(][^\n]*))?[ \t]*$",
        0.8,
        True,
    ),
    _family(
        "arrows",
        r"^(?P<indent>[ \t]*)>{2,}[ \t]*(?P<speaker>[A-Za-z][\w -]{0,40}?\w)[ \t]*"
        r"(?::[ \t]*(?P<rest>[^\n]*))?$",
        0.8,
        True,
    ),
    _family("angle", rf"^(?P<indent>[ \t]*)<(?P<speaker>[A-Za-z][\w .-]{{0,40}})>[ \t]*:?{_END}", 0.7, True),
    _family(
        "colon",
        rf"^(?P<indent>[ \t]*)(?P<prefix>{_PREFIX})?"
        rf"(?P<speaker>{_NAME}(?:->{_NAME})?(?: \([^()\n]{{1,40}}\))?)[ \t]*:{_END}",
        0.7,
        True,
    ),
]

# Labels that open lines in tool output, tracebacks and prompts but never name a speaker.
_NOT_SPEAKERS = set(
    """
thought thoughts action observation note notes arguments args input inputs output outputs error warning traceback
final question answer step steps task result results instruction solution example plan code exitcode call status
progress link snippet title file http https url reason summary request tool tools description returns raises
parameters usage context content source type value date time cost total number finish next e.g i.e info debug
critical trace warn id key name path line page query response prompt command expected actual
""".split()
) | {
    "call id",
    "input arguments",
    "tool arguments",
    "tool description",
    "tool name",
    "tool input",
    "tool output",
    "next speaker",
    "final answer",
    "action input",
    "search results",
    "code output",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "using tool",
}
# Lines of code and prose that end in a colon.
_NOT_FIRST_WORDS = set(
    "class def the a an this that it if for while else elif try except with return import from see".split()
)
_HTML_TAGS = set(
    "a b i p br hr div span html head body ul ol li table tr td th img pre code em strong".split()
)
_TYPED = re.compile(r"^[A-Z]\w*(?:Message|Event)\s*\((?P<name>[^()]+)\)$")
_ROLE_IN_MESSAGE = re.compile(r"^(?P<name>[\w .-]{1,40}?)\((?P<profile>[^()]{1,40})\):")
# The leading run stays on its own line and, like the runs around the colon, never gives back what it took:
# letting it cross blank lines made every line start rescan the rest of the file (quadratic on "\n" * 50000).
# The text found is the same (only the match's start moves to its own line): the old run could only end where
# a line's own run ends, and the first line that matches is still found first.
_TASK_LINE = re.compile(
    r"^(?:[#*]|[^\S\n])*+(?:task|question|task_prompt|instruction|enter your prompt)"
    r"\**+\s*+:\**\s*+(?P<text>\S[^\n]*+)$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class _Header:
    start: int
    end: int
    line: str
    speaker: str
    recipient: str
    rest: str


def _valid(family: str, speaker: str) -> bool:
    words = " ".join(re.sub(r"\s*\([^()]*\)$", "", speaker).lower().split())  # "Traceback (most recent…)"
    first = words.split(" ", 1)[0].strip("'.")
    if (
        not words
        or words in _NOT_SPEAKERS
        or first in _NOT_FIRST_WORDS
        or re.search(r"(?:error|exception)$", words)
    ):
        return False
    if family == "bracket":  # timestamps, log levels and checkboxes are not names
        return (
            bool(re.search(r"[A-Za-z]", speaker))
            and not re.search(r"\d{2}", speaker)
            and words not in _NOT_SPEAKERS
        )
    if family == "angle":
        return words not in _HTML_TAGS and not words.startswith("/")
    return True


def _headers(text: str, family: _Family) -> dict[str, list[_Header]]:
    """This family's header lines, grouped by position (indentation or heading level)."""
    groups: dict[str, list[_Header]] = {}
    for m in family.pattern.finditer(text):
        speaker = m.group("speaker").strip()
        if not _valid(family.name, speaker):
            continue
        rest = (m.groupdict().get("rest") or "").strip()
        recipient = (m.groupdict().get("to") or "").strip()
        speaker, recipient, rest = _clean(family.name, speaker, recipient, rest)
        # Position: the indentation (or heading level), and whether a timestamp prefix came first.
        key = (m.group("indent") if family.by_indent else "") + (
            "+prefix" if m.groupdict().get("prefix") else ""
        )
        groups.setdefault(key, []).append(
            _Header(m.start(), m.end(), m.group(0).strip(), speaker, recipient, rest)
        )
    return groups


def _clean(family: str, speaker: str, recipient: str, rest: str) -> tuple[str, str, str]:
    typed = _TYPED.match(speaker)
    if typed:  # AutoGen-style "TextMessage (coder)"
        speaker = typed.group("name").strip()
    if "->" in speaker and not recipient:  # HyperAgent-style "Navigator->Planner"
        speaker, _, recipient = (part.strip() for part in speaker.partition("->"))
    if family == "loglevel":
        role = _ROLE_IN_MESSAGE.match(rest)
        if role:  # "Alice(Engineer): to do WriteCode" names the acting role better than the logger does
            speaker = f"{role.group('name').strip()}({role.group('profile').strip()})"
    return speaker, recipient, rest


def _score(headers: list[_Header]) -> float:
    counts = Counter(h.speaker for h in headers)
    if len(headers) < 2 or len(counts) < 2:
        return 0.0
    return sum(n if n >= 2 else 0.25 for n in counts.values())


def find_headers(text: str) -> list[_Header]:
    """The header lines of the best-repeating family, or [] when no family has two turns by two speakers."""
    best: tuple[float, int, list[_Header]] = (0.0, 0, [])
    for rank, family in enumerate(_FAMILIES):
        for group in _headers(text, family).values():
            score = _score(group) * family.weight
            if score > best[0]:
                best = (score, -rank, group)
    return best[2]


class GenericTextLog:
    name = "text-log"
    label = "text log (speakers guessed)"

    def detect(self, source: Source) -> float:
        text = head_text(source)
        if text is None or not text.strip():
            return 0.0
        return 0.5 if len(find_headers(text)) >= 2 else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        text, warnings = read_text(source)
        if looks_like_json(text):
            raise TraceFormatError("this is JSON, not a text log")
        headers = find_headers(text)
        if len(headers) < 2:
            raise TraceFormatError(
                "no speaker header lines found (looked for lines like 'Name:', '[Name]', "
                "'**Name**:', '### Name', 'Name (to Other):', '---------- Name ----------')"
            )
        names, steps, line, previous = AgentNames(), [], 1, 0
        for i, header in enumerate(headers):
            line += text.count("\n", previous, header.start)
            previous = header.start
            end = headers[i + 1].start if i + 1 < len(headers) else len(text)
            steps.append(_step(text, header, end, line, names))
        steps = [s for s in steps if s.content or s.kind == "human"]
        example = headers[0].line if len(headers[0].line) <= 80 else headers[0].line[:77] + "..."
        warnings.append(
            f"imported by the generic text-log fallback: speakers guessed from header lines like '{example}'"
        )
        question = next((s.content for s in steps if s.kind == "human"), "")
        if not question:
            task = _TASK_LINE.search(text)
            question = task.group("text").strip() if task else ""
        tail = "\n".join(s.content for s in steps[-2:])
        preamble = text[: headers[0].start].strip()
        yield build_trace(
            source,
            fmt=self.name,
            label=self.label,
            steps=steps,
            question=question,
            outcome=outcome_from_tail(tail),
            warnings=warnings,
            metadata={"header_example": example, "preamble_lines": preamble.count("\n") + 1}
            if preamble
            else {"header_example": example},
        )


def _step(text: str, header: _Header, end: int, line: int, names: AgentNames) -> ParsedStep:
    body = trim_blank_lines(dedent_body(text[header.end : end]))
    content = "\n".join(part for part in (header.rest, body) if part)
    parts = normalise_speaker(header.speaker)
    agent = names(parts.agent or header.speaker)
    kind = "thought" if parts.tag in ("thought", "thinking") else kind_from_cues(header.line, content, agent)
    return ParsedStep(
        speaker=header.speaker,
        agent=agent,
        kind=kind,
        content=content,
        recipient=header.recipient or parts.recipient,
        raw={"header": header.line, "line": line},
    )


FORMAT = GenericTextLog()
