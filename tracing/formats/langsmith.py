"""LangSmith runs: the SDKs' batch-ingest payload ``{"post": [runs], "patch": [runs]}`` or a plain list of runs.

A run has ``id``, ``name``, ``run_type`` (llm, chain, tool, retriever, embedding, prompt, parser), ``start_time`` /
``end_time`` (epoch milliseconds or ISO 8601), ``inputs``, ``outputs``, ``error``, ``parent_run_id``, ``trace_id``,
``dotted_order`` (``<time><run id>.<time><run id>...``, root first) and ``extra.metadata``. The SDK posts a run when
it starts and patches it when it ends, so patches are merged into the posted run (matched by ``id``, else by the run
id at the end of ``dotted_order``). Also accepted: ``{"runs": [...]}`` (the runs query API) and runs nesting their
children in ``child_runs`` (older exports). One trace per ``trace_id``: a payload covering several traces gives
several.

The tree comes from ``parent_run_id``, else from ``dotted_order``. LangSmith has no agent run type, so a run's agent
comes from its metadata (``lc_agent_name``, ``agent_name``, ``gen_ai.agent.name``, LangGraph's ``langgraph_node``);
runs outside any of those belong to the root run (the application).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import ParsedTrace, Source, TraceFormatError
from .chat_text import as_int, first_user_text, parse_jsonish, readable, system_prompt
from .spans import Span, parse_time, steps_from_spans

_KINDS = {"llm": "llm", "tool": "tool", "retriever": "retriever", "embedding": "embedding"}
_AGENT_KEYS = ("lc_agent_name", "agent_name", "gen_ai.agent.name", "langgraph_node")
_ORDER_TIME = 22  # "20241013T070537170001Z": each dotted_order segment is this timestamp, then the run id


class LangSmith:
    name = "langsmith"
    label = "LangSmith runs"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if head[:1] not in ("{", "[") or '"run_type"' not in head:
            return 0.0
        if not any(
            key in head for key in ('"dotted_order"', '"trace_id"', '"parent_run_id"', '"child_runs"')
        ):
            return 0.0
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0
        try:
            runs, _ = _collect(document)
        except TraceFormatError:
            return 0.0
        return 0.95 if runs and all("run_type" in r for r in runs) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        runs, warnings = _collect(source.json())
        if not runs:
            raise TraceFormatError(
                'no runs found: a LangSmith file is {"post": [...], "patch": [...]} or a list of runs'
            )
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            by_trace.setdefault(_trace_id(run, runs), []).append(run)
        stem = _stem(source.name)
        traces = [
            _parse_trace(trace_id, members, warnings, name=stem if len(by_trace) == 1 else "")
            for trace_id, members in by_trace.items()
        ]
        yield from traces


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-5] if name.endswith(".json") else name


def _collect(document: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run once, patches merged in, child_runs flattened; raises TraceFormatError on a wrong shape."""
    if isinstance(document, dict) and ("post" in document or "patch" in document):
        posts, patches = document.get("post") or [], document.get("patch") or []
    elif isinstance(document, dict) and isinstance(document.get("runs"), list):
        posts, patches = document["runs"], []
    elif isinstance(document, dict) and "run_type" in document:
        posts, patches = [document], []
    elif isinstance(document, list):
        posts, patches = document, []
    else:
        raise TraceFormatError(
            'not LangSmith runs: expected {"post": [...], "patch": [...]} or a list of runs'
        )
    if not isinstance(posts, list) or not isinstance(patches, list):
        raise TraceFormatError("'post' and 'patch' must be lists of runs")
    runs: dict[str, dict[str, Any]] = {}
    for index, run in enumerate(_flatten(posts)):
        key = _run_id(run, f"post[{index}]")
        runs[key] = {**runs.get(key, {}), **run, "id": key}
    warnings: list[str] = []
    for index, patch in enumerate(_flatten(patches)):
        key = _run_id(patch, f"patch[{index}]")
        if key not in runs:
            warnings.append(f"patch for run {key} has no posted run; it is imported as a run of its own")
            runs[key] = {}
        runs[key].update({k: v for k, v in patch.items() if v is not None}, id=key)
    return list(runs.values()), warnings


def _flatten(runs: list[Any]) -> Iterator[dict[str, Any]]:
    stack = [(run, None) for run in reversed(runs)]
    while stack:
        run, parent = stack.pop()
        if not isinstance(run, dict):
            raise TraceFormatError("every run must be an object")
        children = run.get("child_runs") or []
        if not isinstance(children, list):
            raise TraceFormatError(f"run {run.get('id')!r}: 'child_runs' must be a list")
        flat = {k: v for k, v in run.items() if k != "child_runs"}
        if parent and not flat.get("parent_run_id"):
            flat["parent_run_id"] = parent
        yield flat
        if children:
            key = _run_id(flat, "a run with child_runs")
            stack.extend((child, key) for child in reversed(children))


def _segments(run: dict[str, Any]) -> list[str]:
    order = run.get("dotted_order")
    if not isinstance(order, str) or not order:
        return []
    return [part[_ORDER_TIME:] for part in order.split(".") if len(part) > _ORDER_TIME]


def _run_id(run: dict[str, Any], where: str) -> str:
    if run.get("id"):
        return str(run["id"])
    segments = _segments(run)
    if segments:
        return segments[-1]
    raise TraceFormatError(f"{where} has neither an 'id' nor a 'dotted_order'")


def _parent_id(run: dict[str, Any]) -> str | None:
    if run.get("parent_run_id"):
        return str(run["parent_run_id"])
    segments = _segments(run)
    return segments[-2] if len(segments) >= 2 else None


def _trace_id(run: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    if run.get("trace_id"):
        return str(run["trace_id"])
    segments = _segments(run)
    if segments:
        return segments[0]
    by_id = {r["id"]: r for r in runs}
    current, seen = run, set()
    while _parent_id(current) in by_id and current["id"] not in seen:  # climb to the root
        seen.add(current["id"])
        current = by_id[_parent_id(current)]
    return str(current["id"])


def _parse_trace(trace_id: str, runs: list[dict[str, Any]], warnings: list[str], *, name: str) -> ParsedTrace:
    spans = [_span(run) for run in runs]
    ids = {span.span_id for span in spans}
    roots = sorted(
        (s for s in spans if s.parent_id not in ids), key=lambda s: (s.start is None, s.start or 0)
    )
    root_run = roots[0].raw if roots else runs[0]
    loops: list[str] = []
    steps, agents = steps_from_spans(
        spans, default_agent=str(root_run.get("name") or "application"), warnings=loops
    )
    if not steps:
        raise TraceFormatError(
            f"trace {trace_id}: no run has inputs or outputs: there are no steps to import"
        )
    own = [w for w in warnings if any(run["id"] in w for run in runs)] + loops
    missing = sorted({s.parent_id for s in spans if s.parent_id and s.parent_id not in ids})
    if missing:
        own.append(
            f"{len(missing)} parent run(s) are not in the file ({', '.join(missing[:5])}); their children "
            "are shown at the top level"
        )
    return ParsedTrace(
        name=name or f"{root_run.get('name') or 'trace'} {trace_id[:8]}",
        source_format=LangSmith.name,
        steps=steps,
        agents=agents,
        external_id=trace_id,
        question=_question(root_run.get("inputs")),
        outcome="failed" if root_run.get("error") else "unknown",
        metadata=_metadata(runs, root_run),
        warnings=own,
    )


def _span(run: dict[str, Any]) -> Span:
    kind = _KINDS.get(str(run.get("run_type") or "").lower(), "chain")
    metadata = _run_metadata(run)
    inputs, outputs = parse_jsonish(run.get("inputs")), parse_jsonish(run.get("outputs"))
    span = Span(
        span_id=run["id"],
        parent_id=_parent_id(run),
        name=str(run.get("name") or kind),
        kind=kind,
        start=parse_time(run.get("start_time")),
        end=parse_time(run.get("end_time")),
        agent=next((str(metadata[k]) for k in _AGENT_KEYS if metadata.get(k)), None),
        input=readable(inputs) or None,
        output=readable(outputs),
        error=_text(run.get("error")),
        raw=run,
    )
    if kind == "llm":
        span.input_tokens, span.output_tokens = _tokens(run, outputs)
        span.system_prompt = system_prompt(inputs.get("messages") if isinstance(inputs, dict) else inputs)
    if kind == "tool":
        span.tool_name = span.name
        span.tool_arguments = _tool_arguments(inputs)
    return span


def _run_metadata(run: dict[str, Any]) -> dict[str, Any]:
    extra = run.get("extra") if isinstance(run.get("extra"), dict) else {}
    metadata = extra.get("metadata") if isinstance(extra.get("metadata"), dict) else {}
    return metadata


def _tool_arguments(inputs: Any) -> Any:
    """Tools are called with ``{"input": "<JSON or text>"}``; show what was passed."""
    if isinstance(inputs, dict) and set(inputs) == {"input"}:
        return parse_jsonish(inputs["input"])
    return inputs


def _tokens(run: dict[str, Any], outputs: Any) -> tuple[int | None, int | None]:
    outputs = outputs if isinstance(outputs, dict) else {}
    llm_output = outputs.get("llm_output") if isinstance(outputs.get("llm_output"), dict) else {}
    for usage, prompt, completion in (
        (outputs.get("usage_metadata"), "input_tokens", "output_tokens"),
        (outputs.get("usage"), "prompt_tokens", "completion_tokens"),
        (llm_output.get("token_usage"), "prompt_tokens", "completion_tokens"),
        (run, "prompt_tokens", "completion_tokens"),
    ):
        if isinstance(usage, dict) and (
            as_int(usage.get(prompt)) is not None or as_int(usage.get(completion))
        ):
            return as_int(usage.get(prompt)), as_int(usage.get(completion))
    return None, None


def _question(inputs: Any) -> str:
    inputs = parse_jsonish(inputs)
    text = first_user_text(inputs)
    if text:
        return text
    if isinstance(inputs, dict):
        for key in ("input", "question", "query", "task"):
            if isinstance(inputs.get(key), str):
                return inputs[key]
    return ""


def _metadata(runs: list[dict[str, Any]], root: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"run_count": len(runs)}
    if root.get("session_name"):
        metadata["project"] = root["session_name"]
    extra = root.get("extra") if isinstance(root.get("extra"), dict) else {}
    runtime = extra.get("runtime") if isinstance(extra.get("runtime"), dict) else {}
    if runtime.get("sdk"):
        metadata["sdk"] = f"{runtime['sdk']} {runtime.get('sdk_version', '')}".strip()
    models = sorted(
        {str(_run_metadata(r)["ls_model_name"]) for r in runs if _run_metadata(r).get("ls_model_name")}
    )
    if models:
        metadata["models"] = models
    if root.get("tags"):
        metadata["tags"] = root["tags"]
    return metadata


def _text(value: Any) -> str:
    return "" if value in (None, "") else value if isinstance(value, str) else readable(value)


FORMAT = LangSmith()
