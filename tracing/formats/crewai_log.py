"""CrewAI's run log (``Crew(output_log_file=...)``): an entry when each task starts and when it ends, JSON or text.

CrewAI's ``FileHandler.log`` writes ``{"timestamp": "YYYY-MM-DD HH:MM:SS", **fields}``. The crew logs ``task_name``,
``task`` (the task's description), ``agent`` (the role) and ``status="started"`` when a task begins, and the same with
``status="completed"`` and ``output`` (the task's raw output) when it ends; releases before ``task_name`` existed
logged ``agent, task, status`` only, with the output as ``task`` on completion. A path ending in ``.json`` gets a JSON
list (rewritten whole on every entry); any other path gets text, one entry per line group::

    2025-03-10 14:02:11: task_name="research_task", task="Conduct a thorough research …", agent="Researcher", status="started"

with the values as they are (not escaped: they span lines and hold quotes) and an empty line after each. Every kickoff
appends to the same file, so a file may hold several runs: a run ends where a task that already started in it starts
again. Tools that read these logs also write ``status="failed"``.

Steps: a task's start is the task handed to its agent (kind ``human``: the crew's author wrote it, no agent did; the
agent is its recipient), its completion the agent's answer (``message``, started when the task started). An entry with
another status, or with an ``error``, is a ``system`` step of its agent and fails the run, as does a task that started
and never ended (the crew stopped there). The log does not say whether the crew's answer was right: otherwise the
outcome is ``unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from .base import ParsedAgent, ParsedStep, ParsedTrace, Source, TraceFormatError, json_text, mostly
from .textlog import AgentNames, head_text, read_text, utc

# What CrewAI's ``LogEntry`` may hold, in the order the crew passes them; a key outside this list is text of a value.
_KEYS = (
    "task_name",
    "task",
    "agent",
    "status",
    "output",
    "input",
    "message",
    "level",
    "crew",
    "flow",
    "tool",
    "error",
    "duration",
    "metadata",
)
_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
_ENTRY = re.compile(rf"^(?P<ts>{_TIME}): (?=(?:task_name|task|agent)=\")", re.MULTILINE)
_FIELD = re.compile(rf"(?:\A|\", )(?P<key>{'|'.join(_KEYS)})=\"")
_STATUS = re.compile(r"\bstatus=\"(?:started|completed|failed)\"")
_STATUSES = ("started", "completed", "failed")
TASK_SPEAKER = "Crew task"  # who hands an agent its task: the crew's author, not an agent


def task_handoff(agent: str, description: str, **extra: Any) -> ParsedStep:
    """A task handed to a crew's agent: a ``human`` step (no agent wrote it) addressed to the agent. Both CrewAI
    readers (this run log and the console log, ``text_crewai``) make them so."""
    return ParsedStep(
        speaker=TASK_SPEAKER, agent=None, kind="human", content=description, recipient=agent, **extra
    )


class CrewAILog:
    name = "crewai-log"
    label = "CrewAI run log (output_log_file)"

    def detect(self, source: Source) -> float:
        if source.head_text().startswith("["):
            return 0.95 if _json_entries(source, quiet=True) else 0.0
        text = head_text(source)
        if text is None:
            return 0.0
        first = _ENTRY.search(text)
        return 0.95 if first and first.start() < 4096 and _STATUS.search(text) else 0.0

    def parse(self, source: Source) -> Iterator[ParsedTrace]:
        warnings: list[str] = []
        if source.head_text().startswith("["):
            entries = _json_entries(source, quiet=False) or []
        else:
            text, warnings = read_text(source)
            entries = _text_entries(text)
        if not entries:
            raise TraceFormatError(
                'no CrewAI log entries found: expected lines such as 2025-03-10 14:02:11: task_name="…", '
                'task="…", agent="…", status="started"'
            )
        runs = _runs(entries)
        stem = PurePosixPath(source.name.replace("\\", "/")).stem or source.name
        for number, run in enumerate(runs, start=1):
            name = stem if len(runs) == 1 else f"{stem}/run {number}"
            yield _trace(name, run, warnings if number == 1 else [])


def _json_entries(source: Source, *, quiet: bool) -> list[dict[str, Any]] | None:
    """The entries of a JSON log, or None (``quiet``: when it is not one; else a TraceFormatError saying why)."""
    try:
        document = source.json()
    except TraceFormatError:
        if quiet:
            return None
        raise
    if not isinstance(document, list) or not document:
        if quiet:
            return None
        raise TraceFormatError("a CrewAI JSON log must be a non-empty list of entries")
    if quiet:
        seen = any(_is_entry(e) and e["status"] in _STATUSES for e in document[:20])
        return document if mostly(document, _is_entry) and seen else None
    for position, entry in enumerate(document):
        if not _is_entry(entry):
            raise TraceFormatError(
                f"entry {position} is not a CrewAI log entry {{timestamp, task_name, task, agent, status}}"
            )
    return document


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("status"), str)
        and "agent" in entry
        and ("task" in entry or "task_name" in entry)
    )


def _text_entries(text: str) -> list[dict[str, Any]]:
    """Each entry of a text log as the fields CrewAI wrote: ``key="value"`` pairs in the crew's order."""
    headers = list(_ENTRY.finditer(text))
    entries = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        entries.append({"timestamp": header["ts"], **_fields(text[header.end() : end].rstrip("\n"))})
    return entries


def _fields(body: str) -> dict[str, str]:
    """``key="value", key="value"`` where values are not escaped. A key splits only once, in the crew's order, and
    ``output`` (the crew's last field and the one most likely to hold ``", key="``) ends the entry. Older releases
    wrote ``agent, task, status`` with the output as ``task``: there the status is the last field, found from the
    end, and the task is all that lies between."""
    old = _old_layout(body)
    if old is not None:
        return old
    fields: dict[str, str] = {}
    found: list[re.Match[str]] = []
    position, last = 0, -1
    while True:
        match = _FIELD.search(body, position)
        if match is None:
            break
        rank = _KEYS.index(match["key"])
        if match["key"] in fields or rank < last or (match.start() == 0 and found):
            position = match.end()
            continue
        if found:
            fields[found[-1]["key"]] = body[found[-1].end() : match.start()]
        found.append(match)
        fields[match["key"]] = ""
        last = rank
        position = match.end()
        if match["key"] == "output":
            break
    if found:
        value = body[found[-1].end() :]
        fields[found[-1]["key"]] = value[:-1] if value.endswith('"') else value
    return fields


def _old_layout(body: str) -> dict[str, str] | None:
    """``agent="…", task="…", status="…"``: the agent ends at the first ``", task="`` of its line, the status is the
    last field. String searches, not a pattern: a backtracking one was quadratic on a line of ``", task="``."""
    agent_end = body.find('", task="', 0, max(0, body.find("\n")) if "\n" in body else len(body))
    status_at = body.rfind('", status="')
    if not body.startswith('agent="') or agent_end < 0 or status_at < agent_end or not body.endswith('"'):
        return None
    status = body[status_at + len('", status="') : -1]
    if '"' in status or "\n" in status:
        return None
    return {
        "agent": body[len('agent="') : agent_end],
        "task": body[agent_end + len('", task="') : status_at],
        "status": status,
    }


def _key(entry: dict[str, Any]) -> str:
    return str(entry.get("task_name") or entry.get("task") or "")


def _runs(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The kickoffs in the file: a run ends where a task already started in it starts again."""
    runs: list[list[dict[str, Any]]] = [[]]
    started: set[str] = set()
    for entry in entries:
        if entry.get("status") == "started":
            if _key(entry) in started:
                runs.append([])
                started = set()
            started.add(_key(entry))
        runs[-1].append(entry)
    return [run for run in runs if run]


def _time(entry: dict[str, Any]) -> datetime | None:
    value = entry.get("timestamp")
    return utc(value, "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S") if isinstance(value, str) else None


def _trace(name: str, entries: list[dict[str, Any]], warnings: list[str]) -> ParsedTrace:
    names = AgentNames()
    steps: list[ParsedStep] = []
    open_tasks: list[tuple[str, str, ParsedStep]] = []  # (task key, agent, its start step), in start order
    failures: list[str] = []
    question = ""
    for entry in entries:
        agent = names(json_text(entry.get("agent")).strip() or "None")
        status = str(entry.get("status") or "")
        when = _time(entry)
        raw = {k: entry[k] for k in ("timestamp", "task_name", "status") if k in entry}
        if status == "started":
            description = json_text(entry.get("task"))
            question = question or description
            step = task_handoff(agent, description, started_at=when, raw=raw)
            steps.append(step)
            open_tasks.append((_key(entry), agent, step))
            continue
        start = _close(open_tasks, entry, agent)
        if status == "completed" and not entry.get("error"):
            output = entry.get("output") if "output" in entry else entry.get("task")
            steps.append(
                ParsedStep(
                    speaker=agent,
                    agent=agent,
                    kind="message",
                    content=json_text(output),
                    started_at=start.started_at if start else when,
                    ended_at=when,
                    raw=raw,
                )
            )
            continue
        detail = json_text(entry.get("error") or entry.get("output") or entry.get("message"))
        failures.append(f"{agent}: {status or 'error'}")
        steps.append(
            ParsedStep(
                speaker=agent,
                agent=agent,
                kind="system",
                content=detail or f"task {_key(entry)[:200]!r} {status or 'failed'}",
                started_at=when,
                raw=raw,
            )
        )
    metadata: dict[str, Any] = {"log_format": CrewAILog.label, "tasks": sum(s.kind == "human" for s in steps)}
    unfinished = [key for key, _, _ in open_tasks]
    outcome, cue = "unknown", ""
    if failures:
        outcome, cue = "failed", failures[0]
    elif unfinished:
        outcome, cue = "failed", f"task {unfinished[-1][:200]!r} started and never completed"
    if cue:
        metadata["outcome_cue"] = cue
    agents = [ParsedAgent(name=n) for n in dict.fromkeys(s.agent or s.recipient for s in steps) if n]
    return ParsedTrace(
        name=name,
        source_format=CrewAILog.name,
        steps=steps,
        agents=agents,
        question=question.strip(),
        outcome=outcome,
        metadata=metadata,
        warnings=list(warnings),
    )


def _close(
    open_tasks: list[tuple[str, str, ParsedStep]], entry: dict[str, Any], agent: str
) -> ParsedStep | None:
    """The start step of the open task this entry ends: the same task, else (old logs, where a completion's
    ``task`` is its output) the agent's earliest open task, else the earliest open task."""
    key = _key(entry)
    for matches in (
        lambda k, a: k == key,
        lambda k, a: a == agent,
        lambda k, a: True,
    ):
        for i, (k, a, step) in enumerate(open_tasks):
            if matches(k, a):
                del open_tasks[i]
                return step
    return None


FORMAT = CrewAILog()
