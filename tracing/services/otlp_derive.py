"""Deriving an OTLP trace's steps from its stored spans (``otlp_build`` and ``otlp_build_many`` write them): each
span's path, acting agent and steps, as the span formats derive them from a whole trace (``formats/spans.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..formats.otel_traces import _is_silent, _shown_attributes
from ..formats.spans import Span, _steps_for
from .otlp_records import _parsed, _row_service

LEVEL = 16  # bytes per path level: 8 of start time (microseconds, as the parser compares datetimes) + 8 of span id
_NEVER = b"\xff" * 8  # a span without a start sorts after its siblings, as in ``formats/spans.py``


@dataclass
class Placed:
    """A built span as its children need it: where it sorts, who acts in it, which span's last step they hang from."""

    span_id: str
    path: bytes
    agent: str
    step_span: str
    service: str


def _defaults(root: Any) -> tuple[str, str]:
    """(the default agent, the root's service): steps outside any agent act for the root's service, else for the
    root span's name; a span entering another service than the root's acts for that service."""
    if root is None:
        return "application", ""
    service = _row_service(root)
    return service or _parsed(root).name or "application", service


def _level(span: Span) -> bytes:
    start = (
        _NEVER
        if span.start is None
        else (int(span.start.timestamp()) * 1_000_000 + span.start.microsecond).to_bytes(8, "big")
    )
    try:
        ident = bytes.fromhex(span.span_id)[:8].ljust(8, b"\0")
    except ValueError:
        ident = span.span_id.encode()[:8].ljust(8, b"\0")
    return start + ident


def _derive(
    rows: list[Any], context: dict[str, Placed], root_name: str, default_service: str, adopting: set[str]
) -> tuple[list[Placed], list[dict]]:
    """Placements and steps of ``rows`` (spans whose children are all among them), parents outside from ``context``.

    Mirrors ``formats/spans.steps_from_spans`` and ``formats/otlp_json._trace``: the acting agent is the span's own,
    else the service it entered (distributed agents), else the parent's, else ``root_name``; steps hang from the last
    step of the nearest span above that has steps; a leaf with nothing to show shows its attributes."""
    by_id = {row.span_id: row for row in rows}
    has_children = {row.parent_span_id for row in rows if row.parent_span_id} | adopting
    paths: dict[str, bytes] = {}
    for row in rows:
        _path(row.span_id, by_id, context, paths)
    placed: dict[str, Placed] = {}
    steps: list[dict] = []
    last_new: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: paths[r.span_id]):
        span = _parsed(row)
        service = _row_service(row)
        parent = placed.get(row.parent_span_id) or context.get(row.parent_span_id)
        if parent is not None and paths[row.span_id] == _level(span):  # a cycle, shown as a root
            parent = None
        own = span.agent
        if (
            not own
            and service
            and service != default_service
            and (parent is None or parent.service != service)
        ):
            own = service
        agent = own or (parent.agent if parent else None) or root_name
        shown_leaf = row.span_id not in has_children and _is_silent(span)
        if shown_leaf:
            span.input = _shown_attributes(span)
        holder = parent.step_span if parent else ""
        anchor: tuple[str, Any] | None = (
            ("new", last_new[holder]) if holder in last_new else ("span", holder) if holder else None
        )
        made = _steps_for(span, agent)
        for order, step in enumerate(made):
            steps.append(
                {
                    "step": step,
                    "path": paths[row.span_id],
                    "order": order,
                    "parent": anchor,
                    "agent": agent,
                    "prompt": span.system_prompt if order == 0 else "",
                    "index": -1,
                }
            )
            anchor = ("new", len(steps) - 1) if step.kind == "tool_call" else anchor
            last_new[row.span_id] = len(steps) - 1
        here = Placed(row.span_id, paths[row.span_id], agent, row.span_id if made else holder, service)
        here.step_count, here.shown_leaf = len(made), shown_leaf and bool(made)
        placed[row.span_id] = here
    return list(placed.values()), steps


def _path(span_id: str, by_id: dict[str, Any], context: dict[str, Placed], paths: dict[str, bytes]) -> bytes:
    """The span's path, resolving unplaced ancestors first (iteratively: traces can be deep). A span whose parent is
    unknown is a root (the parent may come later), and so is a span in a parent cycle (broken input)."""
    chain: list[str] = []
    current: str | None = span_id
    while current is not None and current not in paths:
        row = by_id.get(current)
        if row is None or current in chain:
            break
        chain.append(current)
        current = row.parent_span_id or None
    if current is not None and current in chain:  # a loop of parent links (broken input)
        start = chain.index(current)
        prefix = b""
        for ident in _broken(chain[start:], by_id):
            prefix += _level(_parsed(by_id[ident]))
            paths[ident] = prefix
        # The rest of the chain hangs from the member where it entered the loop.
        prefix, chain = paths[current], chain[:start]
    elif current is None:
        prefix = b""
    elif current in paths:
        prefix = paths[current]
    else:
        prefix = context[current].path if current in context else b""
    for ident in reversed(chain):
        prefix += _level(_parsed(by_id[ident]))
        paths[ident] = prefix
    return paths[span_id]


def _broken(loop: list[str], by_id: dict[str, Any]) -> list[str]:
    """The members of a loop of parent links (child to parent: each one's parent is the next, the last one's is the
    first), from root down, broken where ``formats/spans.py`` breaks such a loop: at its earliest-starting member
    (the first received on a tie)."""
    received = {ident: position for position, ident in enumerate(by_id)}

    def when(ident: str) -> tuple:
        start = _parsed(by_id[ident]).start
        return (0, start, received[ident]) if start is not None else (1, received[ident])

    root = min(range(len(loop)), key=lambda k: when(loop[k]))
    # Down from the root: its child in the loop is the member before it, round to the one after it.
    return [loop[(root - k) % len(loop)] for k in range(len(loop))]
