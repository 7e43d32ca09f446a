"""Streaming Who&When: the ``history`` list is read item by item with ijson, so a 200 MB run is imported with the
memory of one batch of steps. Not a format of its own (no FORMAT): whowhen.py hands big files here.

The returned trace's ``steps`` is a generator. Keys around the history (question, labels, system prompts) are filled
in on the trace when the generator finishes, which the writer allows for: it saves the header and writes the labels
after the steps, inside the same transaction, so a bad label still rolls the whole trace back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ijson

from .base import ParsedStep, ParsedTrace, Source, TraceFormatError

_SCALARS = {"string", "number", "boolean", "null"}


def parse_streaming(
    source: Source,
    *,
    name: str,
    parse_message: Callable[[int, Any], ParsedStep],
    finish: Callable[[ParsedTrace, dict[str, Any], int], None],
) -> ParsedTrace:
    trace = ParsedTrace(name=name, source_format="whowhen", steps=[])
    trace.steps = _steps(source, trace, parse_message, finish)
    return trace


def _steps(
    source: Source,
    trace: ParsedTrace,
    parse_message: Callable[[int, Any], ParsedStep],
    finish: Callable[[ParsedTrace, dict[str, Any], int], None],
) -> Iterator[ParsedStep]:
    document: dict[str, Any] = {}
    index = 0
    builder: ijson.ObjectBuilder | None = None
    errors: ijson.ObjectBuilder | None = None
    with source.open() as fh:
        try:
            for prefix, event, value in ijson.parse(fh, use_float=True):
                if builder is not None or (
                    prefix == "history.item" and event in ("start_map", "start_array")
                ):
                    builder = builder or ijson.ObjectBuilder()
                    builder.event(event, value)
                    if prefix == "history.item" and event in ("end_map", "end_array"):
                        yield parse_message(index, builder.value)
                        index += 1
                        builder = None
                elif prefix.startswith("errors.item"):  # Culprit's exports: every labelled error, kept whole
                    errors = errors or _list_builder()
                    errors.event(event, value)
                elif "." not in prefix and prefix and event in _SCALARS:
                    document[prefix] = value
                elif prefix.startswith("system_prompt.") and event in _SCALARS and prefix.count(".") == 1:
                    document.setdefault("system_prompt", {})[prefix.split(".", 1)[1]] = value
        except ijson.common.IncompleteJSONError:
            raise TraceFormatError("the JSON ends unexpectedly: the file looks truncated") from None
        except ijson.common.JSONError as exc:
            raise TraceFormatError(f"not valid JSON ({exc})") from None
    if index == 0:
        raise TraceFormatError("the 'history' list is empty or missing: there are no steps to import")
    if errors is not None:
        document["errors"] = errors.value
    finish(trace, document, index)


def _list_builder() -> ijson.ObjectBuilder:
    """A builder already inside a list, so the ``errors.item`` events fed to it add items instead of replacing one."""
    builder = ijson.ObjectBuilder()
    builder.event("start_array", None)
    return builder
