"""What every trace format plug-in produces and consumes.

A format module exposes one ``FORMAT`` object with a ``name``, a human ``label``, a cheap ``detect`` that returns a
confidence in [0, 1] from the source's head, and a ``parse`` that yields normalised traces (``ParsedTrace``) or, for
label files, labels for traces that live in other files (``ParsedLabels``), one at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import accumulate
from typing import Any, Protocol

HEAD_BYTES = 64 * 1024
# Deeper JSON than this is refused before Python's recursive parser sees it (it would raise RecursionError near
# 1,000 levels; real traces stay under 40: the deepest file in shared/data nests 19 levels).
MAX_JSON_DEPTH = 200


class TraceFormatError(Exception):
    """The input cannot be imported; the message is shown to the person as is (after the file name)."""


@dataclass
class ParsedAgent:
    name: str
    system_prompt: str = ""


@dataclass
class ParsedStep:
    """One step. ``kind`` is one of message, thought, llm_call, tool_call, tool_result, human, system."""

    speaker: str  # the source's own speaker string, unnormalised
    agent: str | None  # normalised agent name
    kind: str
    content: str
    recipient: str = ""
    tool_name: str = ""
    tool_arguments: Any = None
    parent: int | None = (
        None  # index of the parent step in this trace (span trees); must be smaller than ours
    )
    span_id: str = ""  # the source's id for the span/observation/run this step came from
    started_at: datetime | None = None
    ended_at: datetime | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    raw: Any = None


@dataclass
class ParsedGold:
    """A decisive-error label: the step by index, or by the source's span id (resolved when the trace is known)."""

    agent: str = ""  # empty: the agent of the labelled step
    step: int | None = None
    span_id: str = ""
    reason: str = ""
    category: str = ""
    confidence: float | None = None
    # Datasets that list several errors per run (TRAIL) mark the one attribution is scored against; the others are
    # kept as error labels beside it. Single-label formats leave the defaults.
    decisive: bool = True
    family: str = ""  # the taxonomy family of ``category``: "TRAIL", "MAST", "AgentRx", "" for none
    impact: str = ""  # HIGH / MEDIUM / LOW as the source gives it
    evidence: str = ""


@dataclass
class ParsedTrace:
    name: str
    source_format: str
    steps: list[ParsedStep]
    agents: list[ParsedAgent] = field(default_factory=list)
    gold: list[ParsedGold] = field(default_factory=list)
    external_id: str = ""
    question: str = ""
    ground_truth: str = ""
    outcome: str = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(
        default_factory=list
    )  # shown in the import report, e.g. "span X has no parent"


@dataclass
class ParsedLabels:
    """Labels shipped in a file of their own (AgentRx ground truth, TRAIL labels) for a trace found by its
    ``external_id`` in the same project, imported before or after the labels."""

    target_external_id: str
    labels: list[ParsedGold]
    source_format: str
    warnings: list[str] = field(default_factory=list)
    # Merged into the target trace's metadata: e.g. ``{"labelled_errors": 0}`` for a TRAIL file listing no error,
    # so the run is marked as looked at and found clean rather than left unlabelled.
    metadata: dict[str, Any] = field(default_factory=dict)


def scrub_nul(value: Any) -> Any:
    """``value`` with NUL characters in its strings replaced by U+FFFD: PostgreSQL text and jsonb refuse NUL, and
    files from the wild carry it (a TRAIL label file writes "frame\\u0000by\\u0000frame"). U+FFFD keeps the place
    visible."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {scrub_nul(k): scrub_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_nul(v) for v in value]
    return value


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by their names as strings (kept visible, storable anywhere)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class Source:
    """A named blob of bytes with lazy, cached access to its head and its JSON document."""

    def __init__(self, name: str, opener: Callable[[], Any], size: int) -> None:
        self.name = name
        self.size = size
        self._opener = opener
        self._head: bytes | None = None
        self._json: Any = None
        self._json_loaded = False

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Source:
        import io

        return cls(name, lambda: io.BytesIO(data), len(data))

    def open(self) -> Any:
        return self._opener()

    @property
    def head(self) -> bytes:
        if self._head is None:
            with self.open() as fh:
                self._head = fh.read(HEAD_BYTES)
        return self._head

    def head_text(self) -> str:
        return self.head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")

    def json(self) -> Any:
        if not self._json_loaded:
            self._json = load_json(self)
            self._json_loaded = True
        return self._json


# Readers that need the whole document in memory refuse files above this size (a parsed JSON document takes 5-10x
# its size in Python objects, so 64 MB already means ~500 MB of RAM). Who&When and every JSON Lines format stream
# instead and take files of any size up to the upload limit.
MAX_WHOLE_JSON_BYTES = 64 * 1024 * 1024


def json_message(exc: json.JSONDecodeError) -> str:
    """The decoder's reason without its dangling "at" ("Invalid control character at" + where)."""
    return exc.msg.removesuffix(" at")


def load_json(source: Source) -> Any:
    if source.size > MAX_WHOLE_JSON_BYTES:
        raise TraceFormatError(
            f"the file is {source.size // (1024 * 1024)} MB and this reader loads files whole, up to "
            f"{MAX_WHOLE_JSON_BYTES // (1024 * 1024)} MB; split it, or export it as JSON Lines (streamed at any size)"
        )
    with source.open() as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise TraceFormatError("the file is empty")
    check_json_depth(text)
    try:
        return json.loads(text, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        # The parser ran out of input (or out of a string) before the document closed: the file was cut short.
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise TraceFormatError(
                f"the JSON ends unexpectedly at line {exc.lineno}, column {exc.colno}: the file looks truncated"
            ) from None
        raise TraceFormatError(
            f"not valid JSON: {json_message(exc)} at line {exc.lineno}, column {exc.colno}"
        ) from None


_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def check_json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` without recursing, in linear time: strings are dropped, the brackets
    left are turned into +1/-1 and the running sum's peak is the depth. A text with no more opening brackets than
    ``limit``, strings included, cannot nest deeper: counting them answers for most records (a Who&When run holds a
    few dozen) at ~1/30 of the full check.

    Strings go without a regex (which cost ~1.3 ms for a 100 KB Who&When record whose steps quote code, issue 19):
    escaped backslashes, then escaped quotes, are deleted, and what lies between the remaining quotes alternates
    outside, inside. Where the text is broken (a backslash outside any string) the parser stops at that character,
    and everything before it is classified exactly, so no nesting the parser reaches escapes the count. Every pass
    runs in C: linear for hostile input too (bench/json_depth.py)."""
    if text.count("[") + text.count("{") <= limit:
        return
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[::2])
    if outside.count("[") + outside.count("{") <= limit:
        return
    brackets = _NOT_BRACKETS.sub("", outside)
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit:
        raise TraceFormatError(f"the JSON nests deeper than {limit} levels")


def _constant(name: str) -> str:
    # NaN / Infinity / -Infinity are not JSON, though Python writes them: keep them as text, which any database takes.
    return name


def loads_line(text: str, number: int) -> Any:
    """One JSON Lines record, depth-checked, or a TraceFormatError naming the line."""
    check_json_depth(text)
    try:
        return json.loads(text, parse_constant=_constant)
    except ValueError as exc:
        raise TraceFormatError(f"line {number} is not valid JSON ({exc})") from None


def list_of_records_confidence(
    source: Source, *, markers: tuple[str, ...], keys: tuple[str, ...], score: float = 0.95
) -> float:
    """Detection for files that are a JSON list of records: cheap marker check on the head, then the first 20
    records must all be objects with ``keys``. Never raises."""
    head = source.head_text()
    if not head.startswith("[") or not all(f'"{marker}"' in head for marker in markers):
        return 0.0
    try:
        document = source.json()
    except TraceFormatError:
        return 0.0
    if (
        isinstance(document, list)
        and document
        and all(isinstance(r, dict) and all(k in r for k in keys) for r in document[:20])
    ):
        return score
    return 0.0


def mostly(records: Any, is_record: Callable[[Any], bool]) -> bool:
    """Detection for a list of records one bad one must not hide: the first record and at least half of the first
    20 pass ``is_record``. A bad record further on is then refused by its position when the file is parsed, instead
    of the whole file being "of no known format"."""
    if not isinstance(records, list) or not records:
        return False
    head = [is_record(r) for r in records[:20]]
    return head[0] and sum(head) * 2 >= len(head)


def json_text(value: Any) -> str:
    """Text for a step's content: strings as they are, anything else as readable JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


class TraceFormat(Protocol):
    name: str
    label: str

    def detect(self, source: Source) -> float: ...

    def parse(self, source: Source) -> Iterator[ParsedTrace | ParsedLabels]: ...


@dataclass(frozen=True)
class Speaker:
    agent: str
    recipient: str = ""
    tag: str = ""


def normalise_speaker(raw: str) -> Speaker:
    """``Orchestrator (-> WebSurfer)`` -> Orchestrator to WebSurfer; ``Orchestrator (thought)`` -> tag thought."""
    if isinstance(raw, str) and len(raw) <= 300:
        return _normalise_speaker_cached(raw)
    return _normalise_speaker(raw)


def _normalise_speaker(raw: str) -> Speaker:
    r"""Split ``name (tag)`` / ``name (-> recipient)`` at the first ``(`` after the last inner ``)``.

    This is what the former regex ``^(?P<name>.*?)\s*\((?:\s*->\s*(?P<to>[^)]*)|(?P<tag>[^)]*))\)\s*$``
    matched (the bracket must close at the very end with no ``)`` inside; the name is the shortest such prefix, may
    not hold a newline, and may not be empty), computed with string scans so it is linear in the name's length:
    the regex backtracked quadratically on names like ``a( ( ( ...`` with no closing bracket."""
    text = (raw or "").strip()
    end = len(text) - 1
    if end < 0 or text[end] != ")":
        return Speaker(agent=text)
    opening = text.find("(", text.rfind(")", 0, end) + 1, end)
    if opening <= 0:  # no bracket to split at, or nothing before it
        return Speaker(agent=text)
    name = text[:opening].rstrip()
    if "\n" in name:
        return Speaker(agent=text)
    inner = text[opening + 1 : end]
    rest = inner.lstrip()
    if rest.startswith("->"):
        return Speaker(agent=name, recipient=rest[2:].strip())
    return Speaker(agent=name, tag=inner.strip().lower())


# A run repeats a handful of speakers in every step, and the answer is immutable: one parse per name, not per step
# (issue 19). Short names only, so a hostile file cannot fill the cache with big strings.
_normalise_speaker_cached = lru_cache(maxsize=4096)(_normalise_speaker)
