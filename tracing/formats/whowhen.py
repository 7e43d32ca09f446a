"""Who&When (ag2ai/Agents_Failure_Attribution): one failed run per JSON file.

Two subsets share the shape ``{question, ground_truth, history, mistake_agent, mistake_step, mistake_reason}``:
Algorithm-Generated (CaptainAgent/AG2) names the speaker in ``history[i].name`` and ships ``system_prompt`` per
agent; Hand-Crafted (Magentic-One) puts the speaker in ``history[i].role``, e.g. ``Orchestrator (-> WebSurfer)``.
``mistake_step`` is a 0-based index into ``history``, stored as a string.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .base import (
    ParsedAgent,
    ParsedGold,
    ParsedStep,
    ParsedTrace,
    Source,
    TraceFormatError,
    normalise_speaker,
)

# Files above this size are parsed as a stream (ijson), step by step, so memory stays flat however long the run;
# below it, loading the document whole is faster and lets every check run before anything is written.
STREAM_ABOVE = 8 * 1024 * 1024

# Chat-API roles that say nothing about who spoke; the speaker is then in ``name``.
_GENERIC_ROLES = {"user", "assistant", "system", "tool", "function"}
_HUMAN_SPEAKERS = {"human", "user"}


class WhoAndWhen:
    name = "whowhen"
    label = "Who&When JSON"

    def detect(self, source: Source) -> float:
        head = source.head_text()
        if not head.startswith("{") or '"history"' not in head:
            return 0.0
        if source.size > STREAM_ABOVE:  # too big to load for a guess: the head has to do
            return 0.9 if '"question"' in head or '"mistake_agent"' in head else 0.55
        try:
            document = source.json()
        except TraceFormatError:
            return 0.0  # not one JSON document (JSON Lines, or broken): detection reports it if nothing fits
        if isinstance(document, dict) and _looks_like_history(document.get("history")):
            return 0.95 if "mistake_agent" in document or "question" in document else 0.6
        if isinstance(document, dict) and isinstance(document.get("history"), list) and document["history"]:
            # Who&When's own label keys around a history with odd items: ours, and parse() names the bad item (a
            # streamed file is claimed from its head alike) rather than "JSON of an unknown shape".
            return 0.9 if "mistake_agent" in document or "mistake_step" in document else 0.0
        return 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        if source.size > STREAM_ABOVE:
            from .whowhen_stream import parse_streaming

            yield parse_streaming(
                source,
                name=_trace_name(source.name, "Who&When"),
                parse_message=_parse_history_item,
                finish=_finish_streamed,
            )
            return
        document = source.json()
        if not isinstance(document, dict) or not isinstance(document.get("history"), list):
            raise TraceFormatError("a Who&When file must be an object with a 'history' list")
        for index, message in enumerate(document["history"]):
            if not isinstance(message, dict):
                raise TraceFormatError(_not_a_message(index, message))  # as the streamed path says it
        document = _without_lone_surrogates(document)
        yield parse_document(document, name=_trace_name(source.name, _subset(document)))


def parse_document(document: dict[str, Any], *, name: str) -> ParsedTrace:
    """One trace from one Who&When document, named ``name``."""
    history = document["history"]
    if not history:
        raise TraceFormatError("the 'history' list is empty: there are no steps to import")
    prompts = document.get("system_prompt") if isinstance(document.get("system_prompt"), dict) else {}
    steps = [_parse_message(i, message) for i, message in enumerate(history)]
    agents = _agents_in_order(steps, prompts)
    metadata = {"subset": _subset(document)}
    for key in ("question_ID", "level", "is_correct", "is_corrected", "mistake_type"):
        if key in document:
            metadata[key] = document[key]
    return ParsedTrace(
        name=name,
        source_format=WhoAndWhen.name,
        steps=steps,
        agents=agents,
        gold=_gold(document, len(steps)),
        external_id=str(document.get("question_ID") or ""),
        question=_text(document.get("question")),
        ground_truth=_text(document.get("ground_truth")),
        # Every Who&When run is a failure; ``is_correct`` (when present) says so explicitly.
        outcome="succeeded" if document.get("is_correct") is True else "failed",
        metadata=metadata,
    )


def _finish_streamed(trace: ParsedTrace, document: dict[str, Any], step_count: int) -> None:
    """Fill in what a streamed file tells only around its history: the header, system prompts and the label."""
    prompts = document.get("system_prompt") if isinstance(document.get("system_prompt"), dict) else {}
    trace.agents = [ParsedAgent(name=str(n), system_prompt=_text(p)) for n, p in prompts.items()]
    trace.question = _text(document.get("question"))
    trace.ground_truth = _text(document.get("ground_truth"))
    trace.outcome = "succeeded" if document.get("is_correct") is True else "failed"
    trace.external_id = str(document.get("question_ID") or "")
    trace.metadata = {"subset": "Algorithm-Generated" if prompts else "Hand-Crafted", "streamed": True}
    trace.gold = _gold(document, step_count)


def _subset(document: dict[str, Any]) -> str:
    """Algorithm-Generated (CaptainAgent) runs name their speakers and ship system prompts; Hand-Crafted do not."""
    history = document.get("history") or []
    named = any(isinstance(m, dict) and "name" in m for m in history)
    return "Algorithm-Generated" if document.get("system_prompt") or named else "Hand-Crafted"


def _looks_like_history(history: Any) -> bool:
    return isinstance(history, list) and all(isinstance(m, dict) and "content" in m for m in history[:5])


def _trace_name(path: str, subset: str) -> str:
    """``Hand-Crafted/16.json`` -> ``Hand-Crafted/16``; a bare ``16.json`` is named after its subset, so files
    called ``1.json`` from both subsets stay apart in the trace list."""
    parts = [
        p for p in PurePosixPath(path.replace("\\", "/")).with_suffix("").parts[-2:] if p not in ("/", "")
    ]
    if len(parts) == 1:
        parts.insert(0, subset)
    return "/".join(parts) or path


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _parse_history_item(index: int, message: Any) -> ParsedStep:
    """A step from ``history[index]`` of a Who&When file; every item is one, so anything but an object fails the
    file (skipping it would move ``mistake_step`` onto another step)."""
    if not isinstance(message, dict):
        raise TraceFormatError(_not_a_message(index, message))
    return _parse_message(index, message)


def _not_a_message(index: int, value: Any) -> str:
    if value is None:
        what = "null"
    elif isinstance(value, bool):
        what = "a boolean"
    elif isinstance(value, (int, float)):
        what = "a number"
    elif isinstance(value, str):
        what = "a string"
    else:
        what = "a list" if isinstance(value, list) else f"a {type(value).__name__}"
    return f"history[{index}] is {what}, not a {{role, content}} object: every history item must be one step"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    """``value`` with lone UTF-16 surrogates (JSON's "\\ud800" with no other half, which json.loads keeps and
    PostgreSQL refuses) as U+FFFD, as the streamed path reads them; unchanged containers are returned as they are."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value
    if isinstance(value, list):
        items = [_without_lone_surrogates(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    if isinstance(value, dict):
        pairs = [(_without_lone_surrogates(k), _without_lone_surrogates(v)) for k, v in value.items()]
        return (
            value if all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items())) else dict(pairs)
        )
    return value


def _parse_message(index: int, message: Any) -> ParsedStep:
    if not isinstance(message, dict):
        raise TraceFormatError(f"history[{index}] is not an object")
    role = _text(message.get("role")).strip()
    named = _text(message.get("name")).strip()
    speaker_raw = named if named and (role.lower() in _GENERIC_ROLES or not role) else (role or named)
    speaker = normalise_speaker(speaker_raw)
    content = message.get("content")
    content_text = _text(content) if not isinstance(content, (list, dict)) else _flatten(content)
    return ParsedStep(
        speaker=speaker_raw,
        agent=speaker.agent or None,
        kind=_kind(speaker.agent, speaker.tag, role, content_text),
        content=content_text,
        recipient=speaker.recipient,
        # The message minus its content (kept once, in the step's content): the source's other keys, verbatim.
        raw={k: v for k, v in message.items() if k != "content"},
    )


def _kind(agent: str, tag: str, role: str, content: str) -> str:
    if tag in ("thought", "termination condition"):
        return "thought"
    lowered = agent.lower()
    if lowered in _HUMAN_SPEAKERS and (not role or role.lower() == lowered):
        return "human"
    if "terminal" in lowered or content.lstrip().startswith("exitcode:"):
        return "tool_result"
    if role.lower() in ("system",):
        return "system"
    return "message"


def _flatten(content: Any) -> str:
    import json

    return json.dumps(content, ensure_ascii=False, indent=2)


def _agents_in_order(steps: list[ParsedStep], prompts: dict[str, Any]) -> list[ParsedAgent]:
    seen: dict[str, ParsedAgent] = {}
    for step in steps:
        if step.agent and step.agent not in seen:
            seen[step.agent] = ParsedAgent(name=step.agent)
    for agent_name, prompt in prompts.items():
        agent = seen.setdefault(str(agent_name), ParsedAgent(name=str(agent_name)))
        agent.system_prompt = _text(prompt)
    return list(seen.values())


def _gold(document: dict[str, Any], step_count: int) -> list[ParsedGold]:
    if isinstance(document.get("errors"), list) and document["errors"]:
        return _errors(document["errors"], step_count)
    agent = _text(document.get("mistake_agent")).strip()
    raw_step = document.get("mistake_step")
    if not agent and raw_step in (None, ""):
        return []
    try:
        step = int(str(raw_step).strip())
    except ValueError:
        raise TraceFormatError(f"mistake_step must be a step number, got {raw_step!r}") from None
    if not 0 <= step < step_count:
        raise TraceFormatError(f"mistake_step {step} is outside the history (0..{step_count - 1})")
    category = _text(document.get("mistake_type"))
    return [
        ParsedGold(
            agent=normalise_speaker(agent).agent,
            step=step,
            reason=_text(document.get("mistake_reason")),
            category=category,
        )
    ]


def _errors(errors: list[Any], step_count: int) -> list[ParsedGold]:
    """Culprit's exports add every labelled error of the run (``errors``, one marked decisive) beside ``mistake_*``,
    which repeats the decisive one; read back, they are the same error labels and the same gold label."""
    labels = []
    for i, error in enumerate(errors):
        if not isinstance(error, dict):
            raise TraceFormatError(f"errors[{i}] is not an object")
        step = error.get("step")
        if step is not None and (not isinstance(step, int) or not 0 <= step < step_count):
            raise TraceFormatError(f"errors[{i}]: step {step!r} is outside the history (0..{step_count - 1})")
        labels.append(
            ParsedGold(
                agent=_text(error.get("agent")),
                step=step,
                span_id=_text(error.get("span_id")),
                category=_text(error.get("category")),
                reason=_text(error.get("description")),
                evidence=_text(error.get("evidence")),
                impact=_text(error.get("impact")),
                family=_text(error.get("family")) or "Who&When",
                decisive=error.get("decisive") is True,
            )
        )
    return labels


FORMAT = WhoAndWhen()
