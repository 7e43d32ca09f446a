"""Span trees to steps, shared by every span-based format (TRAIL, OTLP, Phoenix, Langfuse, LangSmith).

A format turns its records into ``Span`` objects; ``steps_from_spans`` orders them in time, keeps the parent links,
works out which agent acted in each span, and emits steps:

- an LLM span becomes one ``llm_call`` step (content: what the model answered; its input stays in ``raw``);
- a tool span becomes a ``tool_call`` step (the arguments) and a ``tool_result`` step (the output or error);
- an ``observation`` span (what an agent's step observed: the execution log of the code it wrote, the outputs of
  the tools it called, as smolagents' ``Step N`` spans report them) becomes a ``tool_result`` step: the output of
  the action above it, answerable to that action, never an action of its own;
- an agent or chain span with text of its own becomes a ``message`` step (its output, else its input);
- spans with no text of their own (pure containers) become no step; their children hang from the nearest
  ancestor that did.

The acting agent of a span is its own ``agent`` if set, else that of the nearest ancestor that has one; spans outside
any agent belong to the root span's name (the application), so every step has an agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .base import ParsedAgent, ParsedStep

SPAN_KINDS = ("agent", "llm", "tool", "chain", "retriever", "embedding", "observation", "other")


@dataclass
class Span:
    span_id: str
    parent_id: str | None
    name: str
    kind: str = "other"  # one of SPAN_KINDS
    start: datetime | None = None
    end: datetime | None = None
    agent: str | None = None  # set when the span itself names its agent (agent.name, gen_ai.agent.name, ...)
    input: Any = None
    output: Any = None
    tool_name: str = ""
    tool_arguments: Any = None
    error: str = ""  # status message / exception text when the span failed
    input_tokens: int | None = None
    output_tokens: int | None = None
    system_prompt: str = ""
    raw: Any = None
    children: list[Span] = field(default_factory=list, repr=False)


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 strings (with or without Z), or Unix epoch numbers in s, ms, us or ns, as aware datetimes."""
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        number = float(value)
        for divisor in (1, 1e3, 1e6, 1e9):  # pick the unit that lands between 2001 and 2100
            seconds = number / divisor
            if 1e9 <= seconds < 4.2e9:
                return datetime.fromtimestamp(seconds, tz=UTC)
        return None
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        if "." in text:  # Python < 3.11-safe: trim fractions beyond microseconds ("…12.123456789+00:00")
            head, _, tail = text.partition(".")
            digits = "".join(c for c in tail if c.isascii() and c.isdigit())
            zone = tail[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _text(value: Any) -> str:
    from .base import json_text

    return json_text(value).strip()


def _parent(span: Span, by_id: dict[str, Span], loop_roots: set[str]) -> Span | None:
    """The span's parent in the tree: none for a root (no parent, a parent missing from the input, itself, or the
    span chosen to break a loop of parent links)."""
    if span.span_id in loop_roots and by_id.get(span.span_id) is span:
        return None
    parent = by_id.get(span.parent_id or "")
    return None if parent is span else parent


def _loop_roots(spans: list[Span], by_id: dict[str, Span]) -> tuple[set[str], int]:
    """Where to break loops of parent links, and how many spans were in one.

    Spans whose parent links form a loop (A's parent is B, B's parent is A) would reach no root and be lost. Each
    loop is broken at its earliest-starting member (the first in the input on a tie), which becomes a root as a
    span that is its own parent does; the other members keep their links. Linear: each span is walked once."""
    never = datetime.max.replace(tzinfo=UTC)
    position: dict[str, int] = {}
    for index, span in enumerate(spans):
        position.setdefault(span.span_id, index)
    roots: set[str] = set()
    looping = 0
    state: dict[str, bool] = {}  # span id -> still on the current walk
    for span in spans:
        path: list[str] = []
        current: Span | None = by_id[span.span_id]
        while current is not None and current.span_id not in state:
            state[current.span_id] = True
            path.append(current.span_id)
            current = _parent(current, by_id, roots)
        if current is not None and state[current.span_id]:  # the walk came back to itself: a loop
            members = path[path.index(current.span_id) :]
            looping += len(members)
            roots.add(min(members, key=lambda i: (by_id[i].start or never, position[i])))
        for ident in path:
            state[ident] = False
    return roots, looping


def _ordered(spans: list[Span], by_id: dict[str, Span], loop_roots: set[str]) -> list[Span]:
    """Depth-first in start-time order: a parent always precedes its children, siblings run in time order."""
    roots: list[Span] = []
    for span in spans:
        span.children = []
    for span in spans:
        parent = _parent(span, by_id, loop_roots)
        if parent is not None:
            parent.children.append(span)
        else:
            roots.append(span)
    never = datetime.max.replace(tzinfo=UTC)
    order: list[Span] = []
    seen: set[str] = set()
    stack = sorted(roots, key=lambda s: s.start or never, reverse=True)
    while stack:
        span = stack.pop()
        if span.span_id in seen:  # a repeated span id in broken input: visit each id once
            continue
        seen.add(span.span_id)
        order.append(span)
        stack.extend(sorted(span.children, key=lambda s: s.start or never, reverse=True))
    return order


def steps_from_spans(
    spans: Iterable[Span], *, default_agent: str = "", warnings: list[str] | None = None
) -> tuple[list[ParsedStep], list[ParsedAgent]]:
    """Steps and agents of a span tree. Problems with the tree (parent links forming a loop) are appended to
    ``warnings`` when given, for the trace's import report."""
    spans = list(spans)
    by_id = {span.span_id: span for span in spans}
    loop_roots, looping = _loop_roots(spans, by_id)
    if looping and warnings is not None:
        warnings.append(
            f"{looping} span(s) have parent links that form a loop: each loop is broken at its earliest span, "
            "which is shown as a root"
        )
    order = _ordered(spans, by_id, loop_roots)
    agent_of: dict[str, str] = {}
    # span id -> the step its children hang from: the last step emitted for it, else its own parent's (so finding
    # the nearest ancestor with a step is one look-up, not a walk up the chain of content-less spans)
    anchor_of: dict[str, int | None] = {}
    steps: list[ParsedStep] = []
    agents: dict[str, ParsedAgent] = {}
    root_name = default_agent or (order[0].name if order else "application")

    for span in order:
        parent = _parent(span, by_id, loop_roots)
        inherited = agent_of.get(parent.span_id) if parent else None
        agent = span.agent or inherited or root_name
        agent_of[span.span_id] = agent
        if agent not in agents:
            agents[agent] = ParsedAgent(name=agent)
        if span.system_prompt and not agents[agent].system_prompt:
            agents[agent].system_prompt = span.system_prompt
        parent_step = anchor_of.get(parent.span_id) if parent else None
        anchor_of[span.span_id] = parent_step
        for step in _steps_for(span, agent):
            step.parent = parent_step
            steps.append(step)
            anchor_of[span.span_id] = len(steps) - 1
            parent_step = len(steps) - 1 if step.kind == "tool_call" else parent_step
    return steps, list(agents.values())


def _steps_for(span: Span, agent: str) -> list[ParsedStep]:
    common = {
        "speaker": span.name,
        "agent": agent,
        "span_id": span.span_id,
        "started_at": span.start,
        "raw": span.raw,
    }
    output = _text(span.output)
    if span.error:
        output = f"{output}\n\nERROR: {span.error}".strip()
    if span.kind == "tool":
        call = ParsedStep(
            kind="tool_call",
            content=_text(span.tool_arguments if span.tool_arguments is not None else span.input),
            tool_name=span.tool_name or span.name,
            tool_arguments=span.tool_arguments,
            **common,
        )
        result = ParsedStep(
            kind="tool_result",
            content=output,
            tool_name=span.tool_name or span.name,
            ended_at=span.end,
            **{**common, "started_at": span.end or span.start},
        )
        return [call, result]
    if span.kind == "llm":
        return [
            ParsedStep(
                kind="llm_call",
                content=output or _text(span.input),
                ended_at=span.end,
                input_tokens=span.input_tokens,
                output_tokens=span.output_tokens,
                **common,
            )
        ]
    text = output or _text(span.input)
    if not text:
        return []  # a pure container: its children carry the content
    kind = "tool_result" if span.kind == "observation" else "message"
    return [ParsedStep(kind=kind, content=text, ended_at=span.end, **common)]
