"""Who&When as JSON Lines: one Who&When document per line, one trace per line (what dataset exports write)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from .base import ParsedTrace, Source, TraceFormatError, loads_line
from .jsonlines import PEEK_LINE_BYTES
from .whowhen import parse_document


class WhoAndWhenJsonl:
    name = "whowhen-jsonl"
    label = "Who&When JSONL"
    # Every trace comes whole with its steps as a list: a big file may be read in a forked process while the
    # importer writes (tracing.services.parse_ahead).
    parse_ahead = True

    def detect(self, source: Source) -> float:
        if not source.head_text().startswith("{"):
            return 0.0
        with source.open() as fh:
            first, rest = fh.readline(PEEK_LINE_BYTES), fh.read(64)
        if not first.endswith(b"\n") and rest:
            return 0.0  # a first line longer than the peek: one big document, not JSON Lines
        try:
            document = loads_line(first.decode("utf-8-sig"), 1)
        except (TraceFormatError, UnicodeDecodeError):
            return 0.0  # the first line is not a whole document: not JSON Lines
        if not isinstance(document, dict) or not isinstance(document.get("history"), list):
            return 0.0
        # A single-line .json file is plain Who&When; a second document (or the .jsonl name) makes it JSON Lines.
        return 0.97 if rest.strip() or source.name.lower().endswith(".jsonl") else 0.3

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        stem = PurePosixPath(source.name.replace("\\", "/")).stem
        with source.open() as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
                except UnicodeDecodeError:
                    raise TraceFormatError(f"line {number} is not UTF-8 text") from None
                if not line:
                    continue
                document = loads_line(line, number)
                if not isinstance(document, dict) or not isinstance(document.get("history"), list):
                    raise TraceFormatError(f"line {number} is not a Who&When document (no 'history' list)")
                name = str(document.get("trace_name") or document.get("name") or f"{stem}/{number}")
                try:
                    yield parse_document(document, name=name)
                except TraceFormatError as exc:
                    raise TraceFormatError(f"line {number}: {exc}") from None


FORMAT = WhoAndWhenJsonl()
