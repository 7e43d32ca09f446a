"""TRAIL traces (patronus-ai's TRAIL benchmark): one smolagents run per ``X.trace.json``.

The file is ``{"trace_id": ..., "spans": [span, ...]}`` where each span is an OpenTelemetry span exported by Patronus
(``span_id``, ``parent_span_id``, ``span_name``, ``timestamp``, ISO 8601 ``duration``, ``status_code``,
``status_message``, ``events``, ``logs``, ``span_attributes``) with its children nested in ``child_spans``. The
OpenInference smolagents instrumentation labels spans with ``openinference.span.kind`` (AGENT for ``CodeAgent.run`` /
``ToolCallingAgent.run``, CHAIN for ``Step N``, LLM for ``LiteLLMModel.__call__``, TOOL for tools) and carries the text
in ``input.value`` / ``output.value`` / ``llm.output_messages.*``. Spans without a kind are the benchmark harness
(``main``, ``answer_single_question``, ``process_item``): they hold the question and the right answer in their logs
and become no steps. Labels for a trace ship in ``X.labels.json`` (see ``trail_labels.py``) and point at span ids.

Agent names: a nested agent (a smolagents managed agent) is named from its task ("You're a helpful agent named
'search_agent'") or, failing that, from its parent's only ``smolagents.managed_agents.N.name``; a top-level agent
that manages others is the "manager", one that does not keeps its class name (``CodeAgent``). LLM calls outside any
agent span (GAIA's final answer reformulation, or a file whose agent span was not exported) belong to the top-level
agent.

Readable order: an agent or ``Step N`` span's output (the final answer, the code's execution log) is shown as its own
step at the span's end, after the LLM calls that produced it, and carries the span's id; the agent's task opens the
span as a step with id ``<span_id>:input``. ``Step N`` spans show nothing of their own, so what a model call in
a step set off (the tools it called, a managed agent it briefed, the step's execution log) hangs from that call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .chat_text import as_int, first_user_text, openinference_output, parse_jsonish, readable, system_prompt
from .spans import Span, parse_time, steps_from_spans

_KINDS = {
    "AGENT": "agent",
    "LLM": "llm",
    "TOOL": "tool",
    "CHAIN": "chain",
    "RETRIEVER": "retriever",
    "EMBEDDING": "embedding",
}
_NAMED = re.compile(r"agent named '([^']+)'")
_AGENT_CLASS = re.compile(r"<smolagents\.agents\.(\w+) object")
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>[\d.]+)S)?)?$")
_STEP = re.compile(r"Step \d+\Z")  # smolagents' span of one agent step (its output: what the step observed)
_MEMORY_STEP = "memory_step"  # a Step span's input is a dump of smolagents' empty ActionStep: no information


class Trail:
    name = "trail"
    label = "TRAIL span tree (smolagents)"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if not head.startswith("{") or '"span_name"' not in head or '"trace_id"' not in head:
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        if isinstance(document, dict) and isinstance(document.get("spans"), list) and document["spans"]:
            first = document["spans"][0]
            if isinstance(first, dict) and "span_id" in first and "span_name" in first:
                return 0.95 if "child_spans" in first else 0.7
        return 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        yield parse_document(source.json(), name=_stem(source.name))


def _stem(path: str) -> str:
    """``gaia/<id>.trace.json`` -> ``gaia/<id>``: TRAIL's subset folder (gaia, swe_bench) is worth keeping."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    name = parts[-1] if parts else path
    for suffix in (".trace.json", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{parts[-2]}/{name}" if len(parts) >= 2 else name


def parse_document(document: Any, *, name: str) -> ParsedTrace:
    if not isinstance(document, dict) or not isinstance(document.get("spans"), list):
        raise TraceFormatError("a TRAIL trace must be an object with a 'spans' list")
    trace_id = str(document.get("trace_id") or "")
    warnings: list[str] = []
    raw_spans = _flatten(document["spans"], warnings)
    if not raw_spans:
        raise TraceFormatError("the 'spans' list is empty: there are no steps to import")
    agent_names = _agent_names(raw_spans)
    spans: list[Span] = []
    for raw in raw_spans:
        spans.extend(_spans_for(raw, agent_names.get(raw["span_id"])))
    _hang_children_from_openers(spans)
    _hang_actions_from_model_calls(spans)
    default = _default_agent(raw_spans, agent_names)
    steps, agents = steps_from_spans(spans, default_agent=default, warnings=warnings)
    if not steps:
        raise TraceFormatError("no span in this TRAIL trace carries any text: there are no steps to import")
    facts = _harness_facts(raw_spans)
    known = {raw["span_id"] for raw in raw_spans} | {None, ""}
    orphans = sorted(
        {str(r.get("parent_span_id")) for r in raw_spans if r.get("parent_span_id") not in known}
    )
    if orphans:
        warnings.append(
            f"{len(orphans)} parent span(s) are missing from the file ({', '.join(orphans[:5])}); "
            f"their children are shown at the top level and given to agent {default!r}"
        )
    failed = any(_error(raw) for raw in raw_spans if _kind(raw) == "agent")
    return ParsedTrace(
        name=name or trace_id,
        source_format=Trail.name,
        steps=steps,
        agents=agents,
        external_id=trace_id,
        question=facts.pop("question", "") or _first_task(raw_spans),
        ground_truth=facts.pop("ground_truth", ""),
        outcome="failed" if failed else "unknown",
        metadata={"span_count": len(raw_spans), **facts},
        warnings=warnings,
    )


def _flatten(roots: list[Any], warnings: list[str]) -> list[dict[str, Any]]:
    """Every span, parents before children; a span id seen twice keeps its first copy (labels name span ids)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    stack: list[tuple[Any, str | None]] = [(span, None) for span in reversed(roots)]
    while stack:
        raw, parent = stack.pop()
        if not isinstance(raw, dict):
            raise TraceFormatError("every span must be an object with a 'span_id'")
        span_id = raw.get("span_id")
        if not isinstance(span_id, str) or not span_id:
            raise TraceFormatError(f"a span named {str(raw.get('span_name'))[:80]!r} has no 'span_id'")
        children = raw.get("child_spans") or []
        if not isinstance(children, list):
            raise TraceFormatError(f"span {span_id}: 'child_spans' must be a list")
        if span_id in seen:
            warnings.append(f"span {span_id} appears more than once; the first copy is kept")
            continue
        seen.add(span_id)
        flat = {k: v for k, v in raw.items() if k != "child_spans"}
        # Only what later code reads is coerced; the rest of the span stays as it was, in the step's raw.
        given = flat.get("parent_span_id")
        flat["parent_span_id"] = (given if isinstance(given, str) and given else None) or parent
        flat["logs"] = [item for item in _list(flat.get("logs")) if isinstance(item, dict)]
        flat["events"] = [item for item in _list(flat.get("events")) if isinstance(item, dict)]
        out.append(flat)
        stack.extend((child, span_id) for child in reversed(children))
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _attributes(raw: dict[str, Any]) -> dict[str, Any]:
    attributes = raw.get("span_attributes")
    return attributes if isinstance(attributes, dict) else {}


def _kind(raw: dict[str, Any]) -> str:
    return _KINDS.get(str(_attributes(raw).get("openinference.span.kind", "")).upper(), "other")


def _error(raw: dict[str, Any]) -> str:
    """The status message of a failed span, else the message of its first exception event."""
    if str(raw.get("status_code", "")).lower() not in ("error", "status_code_error", "2"):
        return ""
    if raw.get("status_message"):
        return str(raw["status_message"])
    for event in raw.get("events") or []:
        attributes = event.get("Attributes") or event.get("attributes") if isinstance(event, dict) else None
        if isinstance(attributes, dict) and attributes.get("exception.message"):
            return f"{attributes.get('exception.type', 'exception')}: {attributes['exception.message']}"
    return "error"


def _end(raw: dict[str, Any]) -> Any:
    start = parse_time(raw.get("timestamp"))
    match = _DURATION.match(str(raw.get("duration") or ""))
    if start is None or not match or not any(match.groups()):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return start + timedelta(
        days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0)
    )


def _task(raw: dict[str, Any]) -> str:
    value = parse_jsonish(_attributes(raw).get("input.value"))
    if isinstance(value, dict):
        if _MEMORY_STEP in value:
            return ""
        if isinstance(value.get("task"), str):
            return value["task"]
    return readable(value)


def _managed(raw: dict[str, Any]) -> list[str]:
    attributes = _attributes(raw)
    keys = sorted(k for k in attributes if re.fullmatch(r"smolagents\.managed_agents\.\d+\.name", k))
    return [str(attributes[k]) for k in keys]


def _agent_names(raw_spans: list[dict[str, Any]]) -> dict[str, str]:
    by_id = {raw["span_id"]: raw for raw in raw_spans}
    names: dict[str, str] = {}
    for raw in raw_spans:  # parents come first, so an enclosing agent is already named
        if _kind(raw) != "agent":
            continue
        named = _NAMED.search(_task(raw)[:500])
        boss = _enclosing_agent(raw, by_id)
        if named:
            names[raw["span_id"]] = named[1]
        elif boss is not None and len(_managed(boss)) == 1:
            names[raw["span_id"]] = _managed(boss)[0]
        elif boss is None and _managed(raw):
            names[raw["span_id"]] = "manager"
        else:
            names[raw["span_id"]] = str(raw.get("span_name") or "agent").removesuffix(".run")
    return names


def _enclosing_agent(raw: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    seen: set[str] = set()
    current = by_id.get(raw.get("parent_span_id") or "")
    while current is not None and current["span_id"] not in seen:
        if _kind(current) == "agent":
            return current
        seen.add(current["span_id"])
        current = by_id.get(current.get("parent_span_id") or "")
    return None


def _default_agent(raw_spans: list[dict[str, Any]], names: dict[str, str]) -> str:
    """Who owns spans outside every agent span: the first agent, else the class the harness says it built."""
    if names:
        return next(iter(names.values()))
    for raw in raw_spans:
        for log in raw.get("logs") or []:
            body = log.get("body") if isinstance(log, dict) else None
            match = (
                _AGENT_CLASS.search(str(body.get("function.output", ""))) if isinstance(body, dict) else None
            )
            if match:
                return match[1]
    return "agent"


def _spans_for(raw: dict[str, Any], agent: str | None) -> list[Span]:
    kind = _kind(raw)
    attributes = _attributes(raw)
    common = {
        "name": str(raw.get("span_name") or kind),
        "start": parse_time(raw.get("timestamp")),
        "end": _end(raw),
        "raw": raw,
        "agent": agent,
    }
    span_id, parent = raw["span_id"], raw.get("parent_span_id")
    if kind == "other":  # the benchmark harness: a container, its facts go to the trace
        return [Span(span_id=span_id, parent_id=parent, kind="chain", **common)]
    if kind == "llm":
        return [
            Span(
                span_id=span_id,
                parent_id=parent,
                kind="llm",
                input=attributes.get("input.value"),
                output=openinference_output(attributes) or readable(attributes.get("output.value")),
                error=_error(raw),
                input_tokens=as_int(attributes.get("llm.token_count.prompt")),
                output_tokens=as_int(attributes.get("llm.token_count.completion")),
                system_prompt=_system_prompt(attributes),
                **common,
            )
        ]
    if kind == "tool":
        return [
            Span(
                span_id=span_id,
                parent_id=parent,
                kind="tool",
                input=attributes.get("input.value"),
                output=readable(attributes.get("output.value")),
                error=_error(raw),
                tool_name=str(attributes.get("tool.name") or raw.get("span_name") or ""),
                tool_arguments=_tool_arguments(attributes.get("input.value")),
                **common,
            )
        ]
    # An agent or chain span: its input opens it, its output closes it (see the module docstring).
    output, error = readable(attributes.get("output.value")), _error(raw)
    opener_id = f"{span_id}:input"
    opener = Span(span_id=opener_id, parent_id=parent, kind=kind, input=_task(raw) or None, **common)
    if not (output or error):
        return [Span(span_id=span_id, parent_id=parent, kind=kind, input=_task(raw) or None, **common)]
    closer = Span(
        span_id=span_id,
        parent_id=opener_id,
        # A ``Step N`` span's output is what the step observed (the code's execution log, the tools' outputs): a
        # tool result of the model call that acted in the step. An agent's output is its answer: a message.
        kind="observation" if kind == "chain" and _STEP.match(common["name"]) else "chain",
        output=output,
        error=error,
        **{**common, "start": common["end"], "name": f"{common['name']} (output)"},
    )
    return [opener, closer]


def _hang_children_from_openers(spans: list[Span]) -> None:
    """A split span's children belong under its opener, not under the closing step that took the span's id."""
    split = {span.span_id.removesuffix(":input") for span in spans if span.span_id.endswith(":input")}
    closers = {span.span_id for span in spans if span.parent_id and span.parent_id.endswith(":input")}
    for span in spans:
        if span.parent_id in split and span.span_id not in closers:
            span.parent_id = f"{span.parent_id}:input"


def _hang_actions_from_model_calls(spans: list[Span]) -> None:
    """Inside a ``Step N`` span, what the model's answer set off (tool calls, a managed agent, the execution log)
    hangs from that model call: the Step span itself shows nothing, so this is the link worth keeping."""
    steps = {span.span_id for span in spans if span.kind == "chain" and span.name.startswith("Step ")}
    never = datetime.max.replace(tzinfo=UTC)
    children: dict[str, list[Span]] = {}
    for span in spans:
        if span.parent_id in steps:
            children.setdefault(span.parent_id, []).append(span)
    for group in children.values():
        last_call = None
        for span in sorted(group, key=lambda s: s.start or never):
            if span.kind == "llm":
                last_call = span
            elif last_call is not None:
                span.parent_id = last_call.span_id


def _system_prompt(attributes: dict[str, Any]) -> str:
    if str(attributes.get("llm.input_messages.0.message.role", "")).lower() == "system":
        return str(attributes.get("llm.input_messages.0.message.content") or "")
    return system_prompt(attributes.get("input.value"))


def _tool_arguments(value: Any) -> Any:
    """smolagents logs ``{"args": [...], "kwargs": {...}, "sanitize_inputs_outputs": ...}``: keep what was passed."""
    parsed = parse_jsonish(value)
    if isinstance(parsed, dict) and ("args" in parsed or "kwargs" in parsed):
        return parsed.get("kwargs") or parsed.get("args")
    return parsed


def _harness_facts(raw_spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The question, the right answer and the task id, from the harness spans' logged function arguments."""
    facts: dict[str, Any] = {}
    for raw in raw_spans:
        for log in raw.get("logs") or []:
            body = log.get("body") if isinstance(log, dict) else None
            arguments = body.get("function.arguments") if isinstance(body, dict) else None
            if not isinstance(arguments, dict):
                continue
            example = arguments.get("example") or arguments.get("item")
            if isinstance(example, dict):
                _take(facts, "question", example.get("question") or example.get("problem_statement"))
                _take(facts, "ground_truth", example.get("true_answer") or example.get("patch"))
                _take(facts, "task_id", example.get("task_id") or example.get("instance_id"))
            _take(facts, "model", arguments.get("model_id"))
        attributes = _attributes(raw)
        _take(facts, "model", attributes.get("llm.model_name"))
        _take(facts, "project", attributes.get("pat.project.name"))
    return facts


def _take(facts: dict[str, Any], key: str, value: Any) -> None:
    if key not in facts and isinstance(value, str) and value:
        facts[key] = value


def _first_task(raw_spans: list[dict[str, Any]]) -> str:
    """The top agent's task, else (its span not exported) the first thing the first model call was told."""
    for raw in raw_spans:
        if _kind(raw) == "agent" and _task(raw):
            return _task(raw)
    for raw in raw_spans:
        if _kind(raw) == "llm":
            return first_user_text(_attributes(raw).get("input.value"))
    return ""


FORMAT = Trail()
