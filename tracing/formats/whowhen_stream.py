"""Streaming Who&When: the ``history`` list is read item by item with ijson, so a 200 MB run is imported with the
memory of one batch of steps. Not a format of its own (no FORMAT): whowhen.py hands big files here.

The returned trace's ``steps`` is a generator. Keys around the history (question, labels, system prompts) are filled
in on the trace when the generator finishes, which the writer allows for: it saves the header and writes the labels
after the steps, inside the same transaction, so a bad label still rolls the whole trace back.

A streamed file must read exactly as the same file loaded whole (``load_json`` + ``parse_document``) would, or fail
with the same message:

- every history item is a step, numbered by its place in the list: an item that is not an object fails the file
  (via ``parse_message``), it is never skipped, so ``mistake_step`` always lands on the step it names;
- NaN, Infinity and -Infinity are kept as those words, as ``json.loads(parse_constant=...)`` keeps them, and a
  number too big for a float (``1e999``) becomes infinity as in ``json.loads``;
- nesting deeper than ``MAX_JSON_DEPTH`` is refused with the loader's message;
- the label and header keys are read whole, lists and objects included, so a bad ``mistake_step`` is reported
  with what it was.

Linear time: ijson's C backend (yajl) re-reads a token it has not finished from its first byte every time it is fed
more bytes, so one 48 MB string fed in 64 KB pieces cost 17 s. The file is fed in pieces that double while no event
comes out (a long token is being read) and go back to the base size as soon as one does: a token of n bytes is then
re-read O(n) times in all, and memory stays ~2x the longest token, which yajl buffers anyway.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import ijson

from .base import MAX_JSON_DEPTH, ParsedStep, ParsedTrace, Source, TraceFormatError

CHUNK_BYTES = 256 * 1024
# Keys whose value is read whole whatever its type: what the header, the agents and the gold label are made of.
# Other keys keep their value only when it is a scalar (a list or object there is skipped, not held in memory).
_KEPT_WHOLE = frozenset(
    {
        "question",
        "ground_truth",
        "question_ID",
        "is_correct",
        "mistake_agent",
        "mistake_step",
        "mistake_reason",
        "mistake_type",
        "system_prompt",
        "errors",
    }
)
_SHAPE = "a Who&When file must be an object with a 'history' list"
_OPEN = frozenset({"start_map", "start_array"})
_CLOSE = frozenset({"end_map", "end_array"})


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
    index = 0  # history items read so far, each one a step
    depth = 0  # containers open around the next event
    key: str | None = None  # the top-level key whose value comes next
    in_history = False  # inside the 'history' list (depth 2)
    history_lists = 0
    builder: ijson.ObjectBuilder | None = None  # the value being kept whole, and the depth it closes at
    built_at = 0
    for event, value in _events(source):
        if event in _OPEN:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise TraceFormatError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
        elif event in _CLOSE:
            depth -= 1
        if builder is not None:
            builder.event(event, value)
            if depth > built_at:
                continue
            kept, builder = builder.value, None
            if in_history:
                yield parse_message(index, kept)
                index += 1
            else:
                document[key] = kept  # type: ignore[index]  # a kept key, see _KEPT_WHOLE
            continue
        if depth == 0:
            if event != "end_map":
                raise TraceFormatError(_SHAPE)
        elif depth == 1:
            if event == "map_key":
                key = value
            elif event == "end_array":  # the history list closed
                in_history = False
            elif event == "start_map" and key is None:
                pass  # the document itself opens
            elif event not in _CLOSE and key is not None:
                # A scalar at the top level; a history that is one is not a list.
                if key == "history":
                    raise TraceFormatError(_SHAPE)
                document[key] = value
        elif depth == 2 and event == "start_array" and key == "history":
            in_history, history_lists = True, history_lists + 1
            if history_lists > 1:
                # json.loads would keep the last one; a stream has already imported the first by then, and
                # mistake_step would count in a list that is not the one imported.
                raise TraceFormatError("the file has more than one 'history' key")
        elif depth == 2 and event == "start_map" and key == "history":
            raise TraceFormatError(_SHAPE)
        elif in_history and depth == 2 and event not in _CLOSE:
            yield parse_message(index, value)  # a scalar item: parse_message says it is not an object
            index += 1
        elif in_history or (depth == 2 and event in _OPEN and key in _KEPT_WHOLE):
            builder, built_at = ijson.ObjectBuilder(), depth - 1
            builder.event(event, value)
    if history_lists == 0:
        raise TraceFormatError(_SHAPE)
    if index == 0:
        raise TraceFormatError("the 'history' list is empty: there are no steps to import")
    finish(trace, document, index)


def _events(source: Source) -> Iterator[tuple[str, Any]]:
    """The file's ijson events, read as ``load_json`` reads the file whole (see the module's docstring), or a
    TraceFormatError with the loader's message.

    NaN and Infinity are rare and finding them takes knowing where every string starts and ends, which costs more
    than parsing: the file is first read without looking for them, and only when yajl stops on something it cannot
    read is it read again with them quoted, the events already given skipped (the bytes before the stop are the same
    both times, and so are their events)."""
    given = 0
    try:
        for item in _read(source, constants=False):
            yield item
            given += 1
        return
    except _Unreadable:
        pass
    for number, item in enumerate(_read(source, constants=True)):
        if number >= given:
            yield item


class _Unreadable(Exception):
    """yajl stopped on something a second reading with NaN and Infinity quoted may read."""


def _read(source: Source, *, constants: bool) -> Iterator[tuple[str, Any]]:
    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events, use_float=False)  # Decimal for floats: 1e999 -> inf, not an error
    text = _Prefilter(constants=constants)
    size = CHUNK_BYTES
    try:
        with source.open() as fh:
            chunk = fh.read(size)
            if chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8) :]  # json.loads takes a BOM (utf-8-sig); yajl does not
            while chunk:
                _send(parser, text.feed(chunk), constants)
                # A piece that gave no event lies inside one long token: double the next, so the token is re-read
                # O(its length) times in all (see the module's docstring).
                size = CHUNK_BYTES if events else size * 2
                yield from _numbers(events)
                del events[:]
                chunk = fh.read(size)
        _send(parser, text.feed(b"", final=True), constants)
        parser.close()
    except (ijson.common.JSONError, UnicodeDecodeError) as exc:
        # UnicodeDecodeError: bytes yajl let through that are not UTF-8 (an encoded surrogate), decoded by ijson.
        raise TraceFormatError(_why(source, exc)) from None
    yield from _numbers(events)


def _send(parser: Any, piece: bytes, constants: bool) -> None:
    if not piece:
        return  # an empty piece would end the parser
    try:
        parser.send(piece)
    except ijson.common.JSONError:
        if constants:
            raise
        raise _Unreadable from None


def _numbers(events: list[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    for event, value in events:
        if event == "number" and type(value) is Decimal:
            value = float(value)  # as json.loads: 1.5 -> 1.5, 1e999 -> inf
        yield event, value


def _why(source: Source, exc: Exception) -> str:
    """The loader's message for a file ijson could not read: not UTF-8 first (as ``load_json`` decodes before it
    parses), then truncated, then yajl's own reason."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    with source.open() as fh:  # only on failure, once: linear
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as bad:
                return f"not UTF-8 text (invalid byte at offset {offset - len(decoder.getstate()[0]) + bad.start})"
            offset += len(chunk)
        try:
            decoder.decode(b"", True)
        except UnicodeDecodeError:
            return f"not UTF-8 text (invalid byte at offset {offset - len(decoder.getstate()[0])})"
    message = exc.args[0] if exc.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    first = (str(message).strip().splitlines() or ["syntax error"])[0].rstrip(".")
    if "premature EOF" in first:
        return "the JSON ends unexpectedly: the file looks truncated"
    # yajl's first line ("lexical error: invalid char in json text"), without the excerpt of the file it appends.
    return f"not valid JSON ({first})"


# A \u escape of a UTF-16 surrogate: a high half with its low half (a pair, kept), or a lone half (not a character).
_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
# Where _Prefilter may have to rewrite something: NaN and Infinity (their letters never appear outside strings in
# JSON), and escapes that may be surrogates. Found with bytes.find, which runs at memory speed.
_NEEDLES = (b"NaN", b"Infinity", b"\\ud", b"\\uD")
_ANY_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_HOLD = (
    12  # bytes held back from the end of a piece: the longest thing rewritten, a surrogate pair \ud83d\ude00
)


class _Prefilter:
    """Rewrites the bytes of the file, piece by piece, where yajl and ``json.loads`` read them differently:

    - a \\u escape of a lone UTF-16 surrogate (\\ud800 with no other half) becomes \\ufffd: yajl would turn a high
      one into "?" and fail on a low one, json.loads keeps it and PostgreSQL refuses it; U+FFFD keeps the place
      visible, as NUL is shown. Escapes are only in strings, so this needs no more than one regex pass;
    - with ``constants``, NaN, Infinity and -Infinity outside strings are quoted ("NaN"), as ``load_json`` keeps them
      (yajl refuses them). Whether a NaN is inside a string is the parity of the unescaped quotes before it, counted
      in C (escaped backslashes dropped, then escaped quotes, as ``check_json_depth`` does) from the previous such
      place: linear, but slower than the parse, hence only when needed (see ``_events``).

    The last ``_HOLD`` bytes of a piece wait for the next one, with any backslash or minus sign before them, so an
    escape or a constant is never cut in two and a piece never ends inside an escape."""

    def __init__(self, *, constants: bool) -> None:
        self.constants = constants
        self.in_string = False
        self.held = b""

    def feed(self, chunk: bytes, *, final: bool = False) -> bytes:
        data = self.held + chunk if self.held else chunk
        cut = len(data) if final else len(data) - _HOLD
        while 0 < cut < len(data) and data[cut - 1] in b"\\-":
            cut -= 1
        if cut <= 0:
            self.held = data
            return b""
        out: list[bytes] = []
        pos = self._constants(data, cut, out) if self.constants else self._surrogates(data, cut, out)
        if pos < cut and self.constants:
            self._advance(data, pos, cut, out)
        elif pos < cut:
            out.append(data[pos:cut])
        self.held = data[max(pos, cut) :]
        return b"".join(out)

    def _surrogates(self, data: bytes, cut: int, out: list[bytes]) -> int:
        pos = 0  # data[:pos] is in ``out``
        for escape in _ANY_SURROGATE.finditer(data):
            at = escape.start()
            if at >= cut:
                break
            if at < pos:
                continue  # the low half of a pair just kept
            text = data[pos:at]
            out.append(text)
            pos = at
            if (len(text) - len(text.rstrip(b"\\"))) % 2:
                continue  # an escaped backslash then "ud800": text, not an escape
            pos = self._surrogate(data, at, out)
        return pos

    def _surrogate(self, data: bytes, at: int, out: list[bytes]) -> int:
        """Where to go on after the surrogate escape at ``at``: a pair is kept, a lone half made U+FFFD."""
        pair = _SURROGATE.match(data, at)
        if pair is not None and pair.group(1):
            out.append(pair.group())
            return pair.end()
        out.append(b"\\ufffd")
        return at + 6

    def _constants(self, data: bytes, cut: int, out: list[bytes]) -> int:
        pos = 0  # data[:pos] is in ``out``; ``self.in_string`` says where data[pos] stands
        # Where each needle next starts, before ``cut`` (it may end after it: the held bytes are enough to hold it).
        found = [data.find(needle, 0, cut + len(needle) - 1) for needle in _NEEDLES]
        while True:
            at = min((k for k in found if k >= 0), default=-1)
            if at < 0:
                return pos
            which = found.index(at)
            found[which] = data.find(_NEEDLES[which], at + 1, cut + len(_NEEDLES[which]) - 1)
            if at < pos:  # inside what was just rewritten (the low half of a pair)
                continue
            if which >= 2 and _ANY_SURROGATE.match(data, at) is None:
                continue  # \\ud000: not a surrogate
            escaped = self._advance(data, pos, at, out)
            pos = at
            if escaped:
                continue
            if which >= 2:
                if self.in_string:
                    pos = self._surrogate(data, at, out)
            elif not self.in_string:
                token = _NEEDLES[which]
                minus = at > 0 and data[at - 1] == 0x2D and which == 1  # -Infinity
                if minus:
                    out[-1] = out[-1][:-1]
                out.append(b'"-' + token + b'"' if minus else b'"' + token + b'"')
                pos = at + len(token)

    def _advance(self, data: bytes, start: int, stop: int, out: list[bytes]) -> bool:
        """Pass data[start:stop] on, keeping track of strings; whether data[stop] is escaped by a backslash."""
        text = data[start:stop]
        out.append(text)
        bare = text.replace(b"\\\\", b"")
        if bare.replace(b'\\"', b"").count(b'"') % 2:
            self.in_string = not self.in_string
        return bare.endswith(b"\\")
