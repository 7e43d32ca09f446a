"""Reading a big file in a process forked from the importer, while the importer writes what was read before.

An import of many small traces spends about as long reading them (JSON, the reader's shaping of each step, then
``writer.trace_prepare``: the rows, content hash and totals) as writing them, and the writing mostly waits for
PostgreSQL. One process did both in turn, so each side idled while the other worked. Here a child process forked
for the file parses and prepares its traces and sends them through a pipe; a thread of the importer unpickles them
into a bounded queue, a couple of batches ahead of the writer (issue 19: Who&When bundles on 2 cores).

Only formats that say every trace they yield has its steps as a list (``parse_ahead = True``: nothing streamed
from the file, so everything can be pickled) and files above ``PARSE_AHEAD_ABOVE`` bytes go this way: a fork costs
a few milliseconds. What comes out is what ``fmt.parse`` gives, in the same order, with the same errors raised at
the same place: a format error after trace N arrives after trace N, so the job fails and undoes as it always did.
"""

from __future__ import annotations

import gc
import os
import pickle
import queue
import signal
import struct
import threading
import traceback
from collections.abc import Iterator
from typing import Any

from ..formats import ParsedLabels, ParsedTrace, Source, TraceFormat
from .writer import PreparedTrace, trace_prepare

PARSE_AHEAD_ABOVE = 2 * 1024 * 1024  # bytes; below this a fork costs more than it saves
CHUNK = 25  # traces per pickle: big enough to pickle cheaply, small enough to start writing soon
QUEUED_CHUNKS = 40  # at most two batches (ingest.BATCH_TRACES) read ahead of the writer

Item = tuple[ParsedTrace | ParsedLabels, PreparedTrace | None]


def parsed_items(fmt: TraceFormat, source: Source) -> Iterator[Item]:
    """``(item, prepared)`` for every item of ``fmt.parse(source)``: ``prepared`` is ``trace_prepare(item)`` when
    the child already computed it, None when the caller still has to (always, when the file is read in-process)."""
    if not _worth_forking(fmt, source):
        for item in fmt.parse(source):
            yield item, None
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        _child(fmt, source, write)
    os.close(write)
    chunks: queue.Queue[tuple[str, Any]] = queue.Queue(QUEUED_CHUNKS)
    stop = threading.Event()
    reader = threading.Thread(target=_receive, args=(read, chunks, stop), name="parse-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, payload = chunks.get()
            if kind == "items":
                yield from payload
            elif kind == "end":
                return
            else:
                raise payload
    finally:
        stop.set()  # the writer stopped early (an error, or the consumer let go): end the child and the thread
        _end_child(pid)
        while reader.is_alive():
            try:
                chunks.get_nowait()
            except queue.Empty:
                reader.join(0.05)


def _worth_forking(fmt: TraceFormat, source: Source) -> bool:
    return getattr(fmt, "parse_ahead", False) and source.size > PARSE_AHEAD_ABOVE and hasattr(os, "fork")


def _child(fmt: TraceFormat, source: Source, fd: int) -> None:
    """Parse and prepare, pickling chunks into ``fd``; an exception goes down the pipe after the items before it.
    Leaves with ``os._exit`` whatever happens: the parent's code must never run on here, and the parent's database
    connection, inherited, must not be closed by this process (that would end the parent's session)."""
    status = 1
    try:
        signal.signal(
            signal.SIGTERM, signal.SIG_DFL
        )  # a worker's warm-shutdown handler is the parent's business
        with os.fdopen(fd, "wb") as out:
            chunk: list[Item] = []
            try:
                for item in fmt.parse(source):
                    chunk.append((item, _prepare(item)))
                    if len(chunk) >= CHUNK:
                        _send(out, "items", chunk)
                        chunk = []
            except Exception as exc:  # the parent raises it where fmt.parse would have
                _send(out, "items", chunk)
                _send(out, "error", _picklable(exc))
            else:
                _send(out, "items", chunk)
                _send(out, "end", None)
        status = 0
    except BrokenPipeError:
        status = 0  # the parent stopped reading: it no longer wants the rest
    finally:
        os._exit(status)


def _prepare(item: ParsedTrace | ParsedLabels) -> PreparedTrace | None:
    if not isinstance(item, ParsedTrace) or not isinstance(item.steps, list):
        return None
    try:
        return trace_prepare(item).travel_light()
    except Exception:  # left to the writer, which fails the file at the same trace as without the child
        return None


def _picklable(exc: Exception) -> Exception:
    """``exc`` with the child's traceback as a note (the parent logs it), or a stand-in if it does not pickle."""
    exc.add_note("in the parse-ahead process:\n" + "".join(traceback.format_exception(exc)))
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, made a line above
    except Exception:
        stand_in = RuntimeError(f"{exc.__class__.__name__}: {exc}")
        stand_in.__notes__ = exc.__notes__
        return stand_in
    return exc


_LENGTH = struct.Struct("!Q")


def _send(out: Any, kind: str, payload: Any) -> None:
    data = pickle.dumps((kind, payload), pickle.HIGHEST_PROTOCOL)
    out.write(_LENGTH.pack(len(data)))
    out.write(data)


def _receive(fd: int, chunks: queue.Queue, stop: threading.Event) -> None:
    """The parent's reading thread: unpickle chunks into ``chunks`` until the end, an error, or ``stop``."""
    with os.fdopen(fd, "rb") as pipe:
        while not stop.is_set():
            head = pipe.read(_LENGTH.size)
            data = pipe.read(_LENGTH.unpack(head)[0]) if len(head) == _LENGTH.size else b""
            if not data:  # the child died without saying why (killed, out of memory)
                kind, payload = "error", RuntimeError("the parse-ahead process ended unexpectedly")
            else:
                # A chunk is tens of thousands of new containers: the cyclic collector, running again and again
                # while they were made, tripled the cost of loading them (they hold no cycles to collect).
                collecting = gc.isenabled()
                gc.disable()
                try:
                    kind, payload = pickle.loads(data)  # noqa: S301 - written by our own forked child
                except Exception as exc:
                    kind, payload = "error", exc
                finally:
                    if collecting:
                        gc.enable()
            while not stop.is_set():
                try:
                    chunks.put((kind, payload), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if kind != "items":
                return


def _end_child(pid: int) -> None:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if not done:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass
