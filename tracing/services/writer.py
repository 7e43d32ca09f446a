"""Writing parsed traces and labels into the database. Callers hold the transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice

from django.db import connection

from ..content_hash import ContentHasher, clean_text, stored_agent, stored_kind
from ..formats import ParsedAgent, ParsedStep, ParsedTrace
from ..formats.base import finite, scrub_nul
from ..models import Agent, ErrorLabel, GoldLabel, LabelSource, Project, RawUpload, Step, Trace
from .labels import attach_pending, gold_write
from .totals import StepTotals

# Rows per INSERT. 2,000 steps of Who&When-sized text (~1 KB each) keep one statement near 2 MB, which PostgreSQL and
# SQLite take without strain; bench/ingest.py measures throughput at this size.
STEP_BATCH_SIZE = 2000

_clean = clean_text  # one cleaning for the rows and the content hash


def trace_create_from_parsed(
    *,
    project: Project,
    upload: RawUpload | None,
    ordinal: int,
    parsed: ParsedTrace,
    provenance: str = "uploaded",
    label_source: str = LabelSource.IMPORTED,
) -> Trace:
    """Write one parsed trace with its agents, steps and gold labels, streaming the steps in batches.

    Returns the trace with ``import_warnings`` set (a list of strings for the import report).
    """
    header = _header(parsed)
    header["name"] = unique_trace_name(
        project=project, name=str(header["name"]), parsed=parsed, upload=upload, ordinal=ordinal
    )
    parsed.name = str(header["name"])  # _write_contents rewrites the header from ``parsed``
    trace = Trace.objects.create(
        project=project, upload=upload, ordinal=ordinal, provenance=provenance, **header
    )
    _write_contents(trace, parsed, label_source)
    return trace


def trace_replace_from_parsed(*, trace: Trace, parsed: ParsedTrace) -> Trace:
    """Rewrite an existing trace's header, agents, steps and imported labels in place (same id, so links hold):
    the OTLP receiver rebuilds a trace this way each time more of its spans arrive."""
    Step.objects.filter(trace=trace).delete()
    Agent.objects.filter(trace=trace).delete()
    GoldLabel.objects.filter(trace=trace, source=LabelSource.IMPORTED).delete()
    ErrorLabel.objects.filter(trace=trace, source=LabelSource.IMPORTED).delete()
    for field, value in _header(parsed).items():
        setattr(trace, field, value)
    trace.save()
    _write_contents(trace, parsed)
    return trace


def unique_trace_name(
    *, project: Project, name: str, parsed: ParsedTrace, upload: RawUpload | None, ordinal: int
) -> str:
    """``name``, or ``name [id]`` when the project already holds a trace so named: two Langfuse exports both called
    "autogen-2025-06-06" must stay apart in the list. The id is the trace's own (external id) when it has one, else
    the file's (first 8 hex digits of its bytes' hash, and the position inside it)."""
    taken = Trace.objects.filter(project=project, name=name[:300]).exists
    if not taken():
        return name[:300]
    if parsed.external_id:
        suffix = parsed.external_id[:40]
    elif upload is not None:
        suffix = f"{upload.sha256[:8]}#{ordinal}"
    else:
        suffix = f"#{ordinal}"
    candidate, n = f"{name[:250]} [{suffix}]", 2
    while Trace.objects.filter(project=project, name=candidate).exists():
        candidate, n = f"{name[:250]} [{suffix}] ({n})", n + 1
    return candidate


def _header(parsed: ParsedTrace) -> dict[str, object]:
    return {
        "name": parsed.name[:300],
        "source_format": parsed.source_format,
        "external_id": parsed.external_id[:200],
        "question": parsed.question,
        "ground_truth": parsed.ground_truth,
        "outcome": parsed.outcome,
        "metadata": scrub_nul(finite(parsed.metadata)),
    }


def trace_content_hash(parsed: ParsedTrace) -> str:
    """The content hash (``tracing.content_hash``) of a parsed trace whose steps are a list, before it is written.
    A streamed trace (steps read from the file as they are written) gets it from ``_write_contents``."""
    hasher = ContentHasher()
    for step in parsed.steps:
        hasher.add_step(
            agent=stored_agent(step.agent), kind=stored_kind(step.kind), content=_clean(step.content)
        )
    return hasher.hexdigest(question=parsed.question, ground_truth=parsed.ground_truth)


def _write_contents(trace: Trace, parsed: ParsedTrace, label_source: str = LabelSource.IMPORTED) -> None:
    warnings = list(parsed.warnings)
    agents = _AgentBook(trace, parsed)
    hasher = ContentHasher()  # fed from the rows as written, so it is the hash of what is stored
    totals = StepTotals()  # likewise: the page header's totals, without aggregating the steps again
    count = 0
    insert = _copy_steps if connection.vendor == "postgresql" else _bulk_create_steps
    for batch in _batches(parsed.steps, STEP_BATCH_SIZE):
        agents.ensure(step.agent for step in batch)
        rows = [_step_values(trace, count + i, step, agents, warnings) for i, step in enumerate(batch)]
        for step, row in zip(batch, rows, strict=True):
            hasher.add_step(agent=stored_agent(step.agent), kind=row["kind"], content=row["content"])
        insert(rows)
        totals.add(rows)
        count += len(batch)
    agents.declare_late(parsed.agents)  # streaming parsers learn system prompts after the steps
    agents.save_counts()
    # A streaming parser may only know the header (question, outcome, ids) once its steps are read.
    for field, value in _header(parsed).items():
        setattr(trace, field, value)
    trace.step_count = count
    trace.agent_count = agents.active_count()
    trace.content_hash = hasher.hexdigest(question=trace.question, ground_truth=trace.ground_truth)
    trace.totals = totals.stored(steps=count)
    trace.save(update_fields=[*_header(parsed), "step_count", "agent_count", "content_hash", "totals"])
    gold_write(trace=trace, labels=parsed.gold, source=label_source, warnings=warnings)
    attach_pending(trace, warnings)
    trace.import_warnings = warnings


class _AgentBook:
    """Agents of one trace, created as their names first appear (declared agents first, in declared order)."""

    def __init__(self, trace: Trace, parsed: ParsedTrace) -> None:
        self.trace = trace
        self.by_name: dict[str, Agent] = {}
        self.counts: dict[str, int] = {}
        self.prompts = {a.name: a.system_prompt for a in parsed.agents}
        self.ensure(a.name for a in parsed.agents)

    def ensure(self, names: Iterable[str | None]) -> None:
        new = [n[:200] for n in dict.fromkeys(n for n in names if n) if n[:200] not in self.by_name]
        start = len(self.by_name)
        rows = Agent.objects.bulk_create(
            Agent(trace=self.trace, name=name, system_prompt=self.prompts.get(name, ""), position=start + i)
            for i, name in enumerate(new)
        )
        self.by_name.update((agent.name, agent) for agent in rows)

    def declare_late(self, declared: Iterable[ParsedAgent]) -> None:
        """Agents (and system prompts) a streaming parser only learned after the steps went by."""
        declared = list(declared)
        self.ensure(a.name for a in declared)
        for item in declared:
            agent = self.by_name[item.name[:200]]
            if item.system_prompt and agent.system_prompt != item.system_prompt:
                agent.system_prompt = item.system_prompt
                agent.save(update_fields=["system_prompt"])

    def get(self, name: str | None) -> Agent | None:
        if not name:
            return None
        agent = self.by_name.get(name[:200])
        if agent is not None:
            self.counts[agent.name] = self.counts.get(agent.name, 0) + 1
        return agent

    def save_counts(self) -> None:
        changed = []
        for name, agent in self.by_name.items():
            agent.step_count = self.counts.get(name, 0)
            changed.append(agent)
        Agent.objects.bulk_update(changed, ["step_count"])

    def active_count(self) -> int:
        return sum(1 for n in self.counts.values() if n)


def _batches(steps: Iterable[ParsedStep], size: int) -> Iterator[list[ParsedStep]]:
    iterator = iter(steps)
    while batch := list(islice(iterator, size)):
        yield batch


STEP_COLUMNS = (
    "trace_id",
    "index",
    "agent_id",
    "speaker",
    "recipient",
    "kind",
    "content",
    "tool_name",
    "tool_arguments",
    "parent_index",
    "span_id",
    "started_at",
    "ended_at",
    "input_tokens",
    "output_tokens",
    "raw",
)
_JSON_COLUMNS = {"tool_arguments", "raw"}


def _step_values(trace: Trace, index: int, step: ParsedStep, agents: _AgentBook, warnings: list[str]) -> dict:
    parent = step.parent
    if parent is not None and not 0 <= parent < index:
        warnings.append(f"step {index}: parent {parent} does not precede it; the link was dropped")
        parent = None
    kind = stored_kind(step.kind)
    agent = agents.get(step.agent)
    return {
        "trace_id": trace.pk,
        "index": index,
        "agent_id": agent.pk if agent else None,
        "speaker": _clean(step.speaker)[:300],
        "recipient": _clean(step.recipient)[:200],
        "kind": kind,
        "content": _clean(step.content),
        "tool_name": _clean(step.tool_name)[:200],
        "tool_arguments": step.tool_arguments,
        "parent_index": parent,
        "span_id": _clean(step.span_id)[:200],
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "input_tokens": _tokens(step.input_tokens),
        "output_tokens": _tokens(step.output_tokens),
        "raw": step.raw,
    }


def _json(value: object) -> str | None:
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:  # NaN / Infinity: valid for Python's json, refused by PostgreSQL's jsonb
        text = json.dumps(finite(value), ensure_ascii=False, default=str)
    # jsonb refuses \u0000 as well: neutralise it in the serialised text.
    return text.replace("\\u0000", "\\ufffd")


def _bulk_create_steps(rows: list[dict]) -> None:
    Step.objects.bulk_create(
        Step(**{k: finite(v) if k in _JSON_COLUMNS else v for k, v in row.items()}) for row in rows
    )


def _copy_steps(rows: list[dict]) -> None:
    """COPY is ~4x faster than a multi-row INSERT for steps (bench/ingest.py: 3.5k -> 14k steps/s on 2 cores)."""
    columns = ", ".join(f'"{c}"' for c in STEP_COLUMNS)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {Step._meta.db_table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([_json(row[c]) if c in _JSON_COLUMNS else row[c] for c in STEP_COLUMNS])


def _tokens(value: object) -> int | None:
    return value if isinstance(value, int) and 0 <= value < 2**31 else None
