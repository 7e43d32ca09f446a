"""Shared machinery for the raw text-log formats (a helper, not a format).

Multi-agent frameworks print their runs as console text: a header line names who speaks (``---------- Coder
----------``, ``Planner (to chat_manager):``, ``[2023-20-09 13:50:40 INFO] Programmer: ...``) and everything up to the
next header is that turn. Each ``text_*`` module knows its own headers; this module decodes the bytes, splits text at
header lines, guesses step kinds from cue words, keeps agent spellings consistent and builds the trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from .base import ParsedAgent, ParsedStep, ParsedTrace, Source, TraceFormatError

# Terminal colour and cursor codes: consoles print them around speaker names, captured logs keep them.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# What may follow "[" in a JSON array: a value. "[2023-20-09 13:50:38 INFO] ..." and "[Planner] ..." are logs.
_JSON_SCALAR = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


def read_text(source: Source) -> tuple[str, list[str]]:
    """The whole file as text, or a TraceFormatError saying why it is not UTF-8 text.

    Line ends become ``\\n`` and terminal colour codes are removed (a warning says how many); nothing else changes.
    """
    with source.open() as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(
            f"not UTF-8 text (invalid byte at offset {exc.start}); save the log as UTF-8"
        ) from None
    if not text.strip():
        raise TraceFormatError("the file is empty")
    if "\x00" in text:
        raise TraceFormatError("binary data (NUL bytes), not a text log")
    warnings: list[str] = []
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    codes = len(_ANSI.findall(text))
    if codes:
        text = _ANSI.sub("", text)
        warnings.append(f"removed {codes} terminal colour code(s) from the log")
    return text, warnings


def head_text(source: Source) -> str | None:
    """The first 64 KB as text for detectors, or None when it is empty, binary, not UTF-8 or JSON."""
    head = source.head
    if not head.strip() or b"\x00" in head[:4096]:
        return None
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # only a character cut in two at the 64 KB boundary is forgiven
            return None
        text = head[: exc.start].decode("utf-8-sig")
    text = _ANSI.sub("", text.replace("\r\n", "\n"))
    return None if looks_like_json(text) else text


def looks_like_json(text: str) -> bool:
    """JSON starts with ``{`` or ``[``; a bracketed log prefix such as ``[2023-… INFO] text`` does not count."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        return True
    if not stripped.startswith("["):
        return False
    rest = stripped[1:].lstrip()
    if not rest or rest[0] in '{["]':
        return True
    return bool(_JSON_SCALAR.fullmatch(re.match(r"[^,\]\s]*", rest).group(0)))


@dataclass
class Block:
    """One header line and the text up to the next header."""

    match: re.Match[str]
    body: str
    line: int  # 1-based line number of the header

    @property
    def header(self) -> str:
        return self.match.group(0).strip()


def split_blocks(text: str, header: re.Pattern[str]) -> tuple[str, list[Block]]:
    """Split ``text`` at every match of ``header`` (a MULTILINE pattern matching whole header lines).

    Returns the text before the first header and the blocks; bodies lose their blank first and last lines only.
    """
    matches = list(header.finditer(text))
    if not matches:
        return text, []
    blocks = []
    line = text.count("\n", 0, matches[0].start()) + 1
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        blocks.append(Block(match=match, body=trim_blank_lines(text[match.end() : end]), line=line))
        line += text.count("\n", match.start(), end)
    return text[: matches[0].start()], blocks


def trim_blank_lines(text: str) -> str:
    """Drop blank lines at both ends and trailing spaces; indentation of the first real line is kept."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines).rstrip()


def dedent_body(text: str) -> str:
    """Remove the indentation all non-blank lines share (nested logs indent whole turns)."""
    lines = text.split("\n")
    widths = [len(line) - len(line.lstrip(" ")) for line in lines if line.strip()]
    cut = min(widths, default=0)
    return "\n".join(line[cut:] for line in lines)


class AgentNames:
    """One spelling per agent: ``spotify`` and ``Spotify`` in one log are the same agent, the first spelling wins."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        clean = " ".join(name.split())
        return self._seen.setdefault(clean.casefold(), clean)


# Loguru's default line, used by MetaGPT and OpenManus: "2024-03-11 15:02:11.455 | INFO     | module:func:12 - msg".
LOGURU_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) \| (?P<level>[A-Z]+) *\| "
    r"(?P<module>[\w.<>-]+):(?P<func>[\w<>]+):(?P<lineno>\d+) - (?P<msg>[^\n]*)$",
    re.MULTILINE,
)


# --- step kinds from cue words --------------------------------------------------------------------------------------

HUMAN_SPEAKERS = {
    "user",
    "human",
    "admin",
    "customer",
    "user_proxy",
    "userproxy",
    "human_proxy",
    "humanproxy",
}
_THOUGHT_HEADER = re.compile(r"\b(thought|thoughts|thinking|reasoning|reflection)\b", re.IGNORECASE)
_RESULT_HEADER = re.compile(
    r"ToolCallExecution|FunctionExecutionResult|tool[ _-]?(?:output|result|response)|function[ _-]?(?:output|result)"
    r"|observation|execution (?:output|result)|code output",
    re.IGNORECASE,
)
_CALL_HEADER = re.compile(
    r"ToolCallRequest|FunctionCall|tool[ _-]?call|function[ _-]?call|using tool", re.IGNORECASE
)
# Possessive runs: "\s*#*\s*" could split a long blank run between its two "\s*" in quadratically many ways.
# No alternative starts with white space or "#" can follow "#", so giving back never found a match anyway.
_RESULT_BODY = re.compile(
    r"^\s*+(?:exitcode:|\*{3,} Response from calling (?:tool|function)|Observation:|#*+\s*+Tool Output:"
    r"|\[FunctionExecutionResult\()",
    re.IGNORECASE,
)
_CALL_BODY = re.compile(
    r"^\s*+(?:\*{3,} Suggested (?:tool|function) call|#*+\s*+Using tool:|Action:|\[FunctionCall\()",
    re.IGNORECASE,
)
_THOUGHT_BODY = re.compile(r"^\s*+#*+\s*+(?:Thought|Thinking|Reasoning)\s*+:", re.IGNORECASE)


def kind_from_cues(header: str, body: str, speaker: str = "") -> str:
    """The step kind that cue words in a header and the start of its body suggest; ``message`` when none do."""
    if _THOUGHT_HEADER.search(header):
        return "thought"
    if _RESULT_HEADER.search(header) or _RESULT_BODY.match(body):
        return "tool_result"
    if _CALL_HEADER.search(header) or _CALL_BODY.match(body):
        return "tool_call"
    if is_human(speaker):
        return "human"
    if speaker.strip().lower() == "system":
        return "system"
    if _THOUGHT_BODY.match(body):
        return "thought"
    return "message"


def is_human(speaker: str) -> bool:
    return speaker.strip().lower().replace(" ", "_") in HUMAN_SPEAKERS


# --- outcome from what the log says at its end ----------------------------------------------------------------------

_FAILED = re.compile(
    r"task failed|failed to (?:complete|solve)|maxim(?:um|al) (?:number of )?(?:turns|rounds|steps)[^\n]*reached"
    r"|reached max(?:imum)? (?:turns|rounds|steps)|status[=:]\s*['\"]?fail(?:ed|ure)?\b",
    re.IGNORECASE,
)
_TERMINATE = re.compile(r"\bTERMINATE\b")


def outcome_from_tail(tail: str) -> tuple[str, str]:
    """("failed" | "succeeded" | "unknown", the cue) from the end of a run: a failure notice wins over TERMINATE."""
    failed = _FAILED.search(tail)
    if failed:
        return "failed", failed.group(0)
    if _TERMINATE.search(tail):
        return "succeeded", "TERMINATE"
    return "unknown", ""


# --- building the trace ---------------------------------------------------------------------------------------------


def parse_json_loose(text: str) -> Any:
    """JSON text as data when it parses, else the text itself (tool arguments are often almost-JSON)."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError:
            return stripped
    return stripped


def utc(value: str, *formats: str) -> datetime | None:
    """A log timestamp read with the first format that fits, as UTC (logs rarely say their time zone)."""
    for fmt in formats:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def agents_in_order(steps: Iterable[ParsedStep]) -> list[ParsedAgent]:
    seen: dict[str, ParsedAgent] = {}
    for step in steps:
        if step.agent and step.agent not in seen:
            seen[step.agent] = ParsedAgent(name=step.agent)
    return list(seen.values())


def trace_name(path: str) -> str:
    """``runs/ag2.log`` -> ``ag2``: the file name without its extension."""
    name = PurePosixPath(path.replace("\\", "/")).name
    return name.rsplit(".", 1)[0] if "." in name.strip(".") else name or path


def build_trace(
    source: Source,
    *,
    fmt: str,
    label: str,
    steps: list[ParsedStep],
    question: str = "",
    outcome: tuple[str, str] = ("unknown", ""),
    external_id: str = "",
    metadata: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> ParsedTrace:
    if not steps:
        raise TraceFormatError(f"no {label} turns found: the log has none of its speaker header lines")
    meta = dict(metadata or {})
    meta.setdefault("log_format", label)
    if outcome[1]:
        meta["outcome_cue"] = outcome[1]
    return ParsedTrace(
        name=trace_name(source.name),
        source_format=fmt,
        steps=steps,
        agents=agents_in_order(steps),
        external_id=external_id,
        question=question.strip(),
        outcome=outcome[0],
        metadata=meta,
        warnings=list(warnings or []),
    )


def panel_title(line: str, left: str, right: str) -> str | None:
    """The title drawn in a Rich panel's top (``╭── Title ──╮``) or bottom border line, None for another line. String
    operations: a pattern with two runs of ``─`` around a lazy title backtracked quadratically on a long border."""
    line = line.rstrip()
    if not (line.startswith(left) and line.endswith(right) and len(line) >= 2):
        return None
    return line[1:-1].strip("─ ")


def panel_body(lines: list[str], start: int) -> tuple[str, int]:
    """The text inside a Rich panel whose top border is the line before ``start``: its ``│ … │`` lines up to the
    ``╰`` border, the border, the padding and the common indentation taken off; and the index after the border."""
    body, i = [], start
    while i < len(lines) and not lines[i].lstrip().startswith("╰"):
        line = lines[i].rstrip()
        if line.startswith("│"):
            line = line[1:]
            line = line[:-1] if line.endswith("│") else line
        body.append(line.rstrip())
        i += 1
    return dedent_body("\n".join(body)).strip("\n"), i + 1


def count_matches(pattern: re.Pattern[str], text: str, limit: int = 50) -> int:
    """How many times ``pattern`` matches, stopping at ``limit`` (detectors only need to know "a few")."""
    count = 0
    for _ in pattern.finditer(text):
        count += 1
        if count >= limit:
            break
    return count
