"""One JSON document or JSON Lines, read the same way (not a format: a helper for OTLP/JSON, Phoenix, OpenAI chat).

Exporters write both: the OTel Collector's file exporter writes one export request per line, Phoenix and OpenAI
fine-tuning files come as JSON arrays or as one record per line. ``peek`` gives the first value cheaply for
``detect``; ``read_values`` gives every value for ``parse``.
"""

from __future__ import annotations

import json
from typing import Any

from .base import Source, TraceFormatError, check_json_depth

# The longest first line (or whole document) a detector reads to guess the shape.
PEEK_LINE_BYTES = 8 * 1024 * 1024


def peek(source: Source) -> tuple[Any, bool] | None:
    """``(first value, is_lines)``: the whole document, or the first line of JSON Lines; None when neither parses.

    Never raises: detectors call it.
    """
    try:
        head = source.head_text()
        if not head or head[0] not in "[{":
            return None
        with source.open() as fh:
            # Bounded: a detector must not read a 200 MB one-line document to make a guess.
            first, rest = fh.readline(PEEK_LINE_BYTES), fh.read(256)
        try:
            value = json.loads(first.decode("utf-8-sig"))
        except ValueError:  # also UnicodeDecodeError: a pretty-printed document's first line is "{" or "["
            if source.size > PEEK_LINE_BYTES:
                return None  # too big to load for a guess; the person can still pick the format by hand
            return source.json(), False
        return value, bool(rest.strip())
    except (TraceFormatError, OSError, RecursionError):
        return None


def read_values(source: Source) -> tuple[list[Any], bool]:
    """``(values, is_lines)``: ``[document]`` for one JSON document, one value per non-empty line for JSON Lines."""
    peeked = peek(source)
    if peeked is None or not peeked[1]:
        return [source.json()], False  # source.json() raises the precise syntax error when the file is broken
    values = []
    with source.open() as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise TraceFormatError(f"line {number} is not UTF-8 text") from None
            if not line:
                continue
            check_json_depth(line)
            try:
                values.append(json.loads(line))
            except ValueError as exc:
                raise TraceFormatError(f"line {number} is not valid JSON ({exc})") from None
    return values, True
