"""Writing parsed traces and labels into the database. Callers hold the transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from json.encoder import encode_basestring as _quoted
from operator import itemgetter
from typing import Any

from django.db import connection, models
from django.db.models import Model

from ..content_hash import ContentHasher, clean_text, stored_agent, stored_kind
from ..formats import ParsedAgent, ParsedStep, ParsedTrace
from ..formats.base import finite, scrub_nul
from ..models import (
    Agent,
    ErrorLabel,
    GoldLabel,
    LabelSource,
    Project,
    RawUpload,
    Step,
    StepSearch,
    Trace,
    TraceSearch,
)
from .labels import AgentRef, LabelRows, attach_pending, attach_pending_many, gold_write
from .search_index import search_index_schedule
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
    """Write one parsed trace with its agents, steps and gold labels.

    Returns the trace with ``import_warnings`` set (a list of strings for the import report). A trace whose steps are
    a list goes through ``traces_create_prepared``; one whose steps are still being read from its file is streamed
    to the database in batches of ``STEP_BATCH_SIZE``.
    """
    if isinstance(parsed.steps, list):
        (trace,) = traces_create_prepared(
            project=project,
            upload=upload,
            items=[(ordinal, trace_prepare(parsed))],
            provenance=provenance,
            label_source=label_source,
        )
        return trace
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


# --- many traces at once -------------------------------------------------------------------------------------------
# A bundle of small traces (issue 19: Who&When runs of ~22 steps) paid ~10 queries and a COPY per trace, ~13 ms of
# the ~15 ms each cost. Here every row of a trace is built in memory first (``trace_prepare``: its content hash, totals
# and counts are known before anything is written), then a batch of traces is written with one INSERT of traces, one
# of agents, one COPY of all their steps and one INSERT per label table, whatever the number of traces.


@dataclass
class PreparedTrace:
    """A parsed trace as the rows the writer will store. Step rows carry the agent's stored name in ``agent_id``
    until the agents have ids."""

    parsed: ParsedTrace
    header: dict[str, object]
    rows: list[dict]
    agents: dict[str, str]  # stored name -> system prompt, in position order
    agent_steps: dict[str, int]
    content_hash: str
    totals: dict
    warnings: list[str]
    # Each row after its ``trace_id`` and ``agent_id`` as COPY text (PostgreSQL only; None when a value has a type
    # ``_copy_text`` does not write). Made where the trace is prepared: in the parse-ahead child, off the importer.
    copy_tails: list[str] | None = None

    def travel_light(self) -> PreparedTrace:
        """Drop what the writer no longer reads once the steps are COPY text, before this crosses from the
        parse-ahead child to the importer: each step's content was pickled three times (the parsed step, the row,
        the COPY text), ~69 kB a Who&When run, and pickling and unpickling it cost the two processes ~0.8 ms a trace.
        The rows keep the agent's name and the span id (labels resolve steps by them); the parsed steps become
        placeholders, so only their number travels. Without COPY text (SQLite) nothing is dropped."""
        if self.copy_tails is not None:
            self.rows = [{"agent_id": r["agent_id"], "span_id": r["span_id"]} for r in self.rows]
            self.parsed.steps = [None] * len(self.parsed.steps)
        return self


def trace_prepare(parsed: ParsedTrace) -> PreparedTrace:
    """The rows of a parsed trace whose steps are a list, with everything derived from them; no query."""
    warnings = list(parsed.warnings)
    prompts = {stored_agent(a.name): _clean(a.system_prompt) for a in parsed.agents}
    agents: dict[str, str] = {}
    for name in (stored_agent(a.name) for a in parsed.agents):
        if name and name not in agents:
            agents[name] = prompts.get(name, "")
    counts: dict[str, int] = {}
    hasher, totals = ContentHasher(), StepTotals()
    rows = []
    for index, step in enumerate(parsed.steps):
        agent = stored_agent(step.agent)
        if agent:
            agents.setdefault(agent, prompts.get(agent, ""))
            counts[agent] = counts.get(agent, 0) + 1
        row = _step_row(index, step, agent, warnings)
        hasher.add_step(agent=agent, kind=row["kind"], content=row["content"])
        rows.append(row)
    totals.add(rows)
    for item in parsed.agents:  # the last non-empty prompt declared for a name wins, as in ``_AgentBook``
        if item.system_prompt and item.name:
            agents[stored_agent(item.name)] = _clean(item.system_prompt)
    header = _header(parsed)
    return PreparedTrace(
        parsed=parsed,
        header=header,
        rows=rows,
        agents=agents,
        agent_steps=counts,
        content_hash=hasher.hexdigest(question=parsed.question, ground_truth=parsed.ground_truth),
        totals=totals.stored(steps=len(rows)),
        warnings=warnings,
        copy_tails=_copy_tails(rows) if connection.vendor == "postgresql" else None,
    )


def traces_create_prepared(
    *,
    project: Project,
    upload: RawUpload | None,
    items: list[tuple[int, PreparedTrace]],
    provenance: str = "uploaded",
    label_source: str = LabelSource.IMPORTED,
) -> list[Trace]:
    """Write prepared traces (``(ordinal, prepared)``, in file order) in the caller's transaction: a fixed number
    of statements per batch. Each trace gets a unique name as if they were written one after the other."""
    if not items:
        return []
    names = _unique_names(project, upload, items)
    traces = rows_insert(
        Trace(
            project=project,
            upload=upload,
            ordinal=ordinal,
            provenance=provenance,
            **(prepared.header | {"name": name}),
            step_count=len(prepared.rows),
            agent_count=sum(1 for n in prepared.agent_steps.values() if n),
            content_hash=prepared.content_hash,
            totals=prepared.totals,
        )
        for (ordinal, prepared), name in zip(items, names, strict=True)
    )
    agents = _agents_create(traces, [prepared for _, prepared in items])
    labels = LabelRows()
    for trace, (_, prepared) in zip(traces, items, strict=True):
        by_name = agents[trace.pk]
        if prepared.parsed.gold:
            labels.add(
                trace=trace,
                steps=[(row["span_id"], by_name.get(row["agent_id"])) for row in prepared.rows],
                agents=list(by_name.values()),
                labels=prepared.parsed.gold,
                source=label_source,
                warnings=prepared.warnings,
            )
    _steps_insert(traces, [prepared for _, prepared in items], agents)
    rows_insert(labels.gold)
    rows_insert(labels.errors)
    attach_pending_many(traces, {t.pk: p.warnings for t, (_, p) in zip(traces, items, strict=True)})
    for trace, (_, prepared) in zip(traces, items, strict=True):
        prepared.parsed.name = trace.name
        trace.import_warnings = prepared.warnings
    return traces


def _agents_create(traces: list[Trace], prepared: list[PreparedTrace]) -> dict[int, dict[str, AgentRef]]:
    """The agents of every trace in one statement; per trace id, its agents by name in position order.

    PostgreSQL: ids from the sequence in one query, the rows in one COPY written as text, and a reference (id and
    name: all the steps and labels need) per agent instead of a model instance. ~4 agents a Who&When run, 18,581
    per 5,000: instances and ``rows_insert``'s per-field preparation were a fifth of the importer's time (issue 19).
    """
    rows = [
        (trace.pk, name, prompt, position, p.agent_steps.get(name, 0))
        for trace, p in zip(traces, prepared, strict=True)
        for position, (name, prompt) in enumerate(p.agents.items())
    ]
    by_trace: dict[int, dict[str, AgentRef]] = {trace.pk: {} for trace in traces}
    if connection.vendor != "postgresql":
        by_pk = {trace.pk: trace for trace in traces}
        for agent in rows_insert(_agent(by_pk[row[0]], *row[1:]) for row in rows):
            by_trace[agent.trace_id][agent.name] = AgentRef(agent.pk, agent.name)
        return by_trace
    if not rows:
        return by_trace
    ids = _sequence_ids(Agent, len(rows))
    with connection.wrap_database_errors, _copy_into(Agent, AGENT_COLUMNS) as copy:
        copy.write(
            "".join(
                f"{pk}\t{trace_pk}\t{_copy_str(name)}\t{_copy_str(prompt)}\t{position}\t{steps}\n"
                for pk, (trace_pk, name, prompt, position, steps) in zip(ids, rows, strict=True)
            )
        )
    for pk, (trace_pk, name, *_) in zip(ids, rows, strict=True):
        by_trace[trace_pk][name] = AgentRef(pk, name)
    return by_trace


# The columns of an agent row as ``_agents_create`` writes them (tests check they are all of the table's).
AGENT_COLUMNS = ("id", "trace_id", "name", "system_prompt", "position", "step_count")


def _sequence_ids(model: type[Model], n: int) -> list[int]:
    """``n`` new ids of ``model``'s table, from its sequence in one query (PostgreSQL)."""
    meta = model._meta
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, n],
        )
        return [pk for (pk,) in cursor.fetchall()]


_AGENT_ATTNAMES = tuple(f.attname for f in Agent._meta.concrete_fields)
_AGENT_TRACE = Agent._meta.get_field("trace")


def _agent(trace: Trace, name: str, prompt: str, position: int, steps: int) -> Agent:
    """``Agent(trace=trace, name=..., ...)`` built from positional values, Django's fast path (keywords cost twice
    as much, through the foreign key's descriptor: ~4 agents a Who&When trace, issue 19), with the trace cached
    on it as the keyword would have."""
    values = {"id": None, "trace_id": trace.pk, "name": name, "system_prompt": prompt}
    values |= {"position": position, "step_count": steps}
    agent = Agent(*[values[attname] for attname in _AGENT_ATTNAMES])
    _AGENT_TRACE.set_cached_value(agent, trace)
    return agent


def _steps_insert(
    traces: list[Trace], prepared: list[PreparedTrace], agents: dict[int, dict[str, AgentRef]]
) -> None:
    """The steps of every trace in one COPY (PostgreSQL; a second for traces without COPY text) or in INSERTs of
    ``STEP_BATCH_SIZE`` rows."""
    pairs = list(zip(traces, prepared, strict=True))

    def rows(pairs: list[tuple[Trace, PreparedTrace]]) -> Iterator[dict]:
        for trace, p in pairs:
            by_name = agents[trace.pk]
            for row in p.rows:
                agent = by_name.get(row["agent_id"]) if row["agent_id"] else None
                row["trace_id"], row["agent_id"] = trace.pk, agent.pk if agent else None
                yield row

    if connection.vendor == "postgresql":
        # These traces were inserted marked for search a moment ago in this transaction, which no indexer can
        # see before it commits: marking them again rewrote every trace row and its eight index entries (issue 19).
        # In autocommit the traces are already visible, so the mark is taken again as ``_copy_steps`` explains.
        fresh = connection.in_atomic_block
        lines, rest = [], []
        for pair in pairs:
            (lines if pair[1].copy_tails is not None else rest).append(pair)
        if lines:
            _copy_step_lines(lines, agents, mark=not fresh)
        if rest:
            _copy_steps(rows(rest), mark=not fresh)
        if fresh:
            search_index_schedule()
        return
    for batch in _batches(rows(pairs), STEP_BATCH_SIZE):
        _bulk_create_steps(batch)


def rows_insert(objs: Iterable[Model]) -> list[Model]:
    """Insert new model instances of one model and give them their ids: on PostgreSQL the ids are taken from the
    table's sequence in one query and the rows go in one COPY (``bulk_create`` quoted every value of its UNNEST
    arrays client-side: 2,000 traces with their ~9,000 agents and 2,000 labels spent ~3 s there, bench/scale.py);
    elsewhere ``bulk_create``, which returns the ids."""
    objs = list(objs)
    if not objs:
        return objs
    model = type(objs[0])
    if connection.vendor != "postgresql":
        return model.objects.bulk_create(objs)
    meta = model._meta
    # Raw psycopg COPY: its errors are turned into Django's (an IntegrityError when another job on the same bytes
    # wrote these traces first, which the ingest job knows how to handle).
    for obj, pk in zip(objs, _sequence_ids(model, len(objs)), strict=True):
        obj.pk = pk
    with connection.cursor() as cursor, connection.wrap_database_errors:
        fields = meta.concrete_fields
        plain = [_plain_types(f) for f in fields]
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        with cursor.cursor.copy(
            f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
        ) as copy:
            alias = connection.alias
            for obj in objs:
                values = []
                for f, types in zip(fields, plain, strict=True):
                    value = getattr(obj, f.attname) if types else None
                    if not types or type(value) not in types:
                        value = f.get_db_prep_save(f.pre_save(obj, True), connection)
                    values.append(value)
                copy.write_row(values)
                obj._state.adding, obj._state.db = False, alias
    return objs


# Values COPY writes exactly as Django's preparation would: text fields return a str as is, integer fields wrap an
# int in psycopg's Int2/4/8 (written as the same digits), a foreign key gives its target's integer id. Such values
# skip ``get_db_prep_save``, ~40% of the Python time of a batch's traces, agents and labels (issue 19).
_TEXT, _INTEGER, _BOOLEAN = (
    frozenset({str, type(None)}),
    frozenset({int, type(None)}),
    frozenset({bool, type(None)}),
)


def _plain_types(field: models.Field) -> frozenset[type]:
    """The value types of ``field`` that may skip preparation (none when its class prepares values its own way)."""
    kind = type(field)
    if kind.pre_save is not models.Field.pre_save:
        return frozenset()
    if isinstance(field, models.ForeignKey):
        target = field.target_field
        return _INTEGER if isinstance(target, (models.AutoField, models.BigAutoField)) else frozenset()
    for base, types in (
        (models.CharField, _TEXT),
        (models.TextField, _TEXT),
        (models.IntegerField, _INTEGER),
        (models.BooleanField, _BOOLEAN),
    ):
        if isinstance(field, base):
            same = (
                kind.get_prep_value is base.get_prep_value
                and kind.get_db_prep_value is base.get_db_prep_value
            )
            return types if same else frozenset()
    return frozenset()


def _unique_names(
    project: Project, upload: RawUpload | None, items: list[tuple[int, PreparedTrace]]
) -> list[str]:
    """``unique_trace_name`` for a batch with one query: names already in the project, and those given to earlier
    traces of the batch, are taken."""
    wanted = [str(prepared.header["name"])[:300] for _, prepared in items]
    taken = set(Trace.objects.filter(project=project, name__in=set(wanted)).values_list("name", flat=True))
    # Traces of one system often share a name (an OTLP root span's "agent run"): the first suffixed candidate of
    # every name that is taken, or repeated in the batch, is looked up in one more query, not one each.
    seen: set[str] = set()
    clashing = []
    for (ordinal, prepared), name in zip(items, wanted, strict=True):
        if name in taken or name in seen:
            clashing.append(_suffix_candidate(name, prepared.parsed, upload, ordinal))
        seen.add(name)
    if clashing:
        taken |= set(Trace.objects.filter(project=project, name__in=clashing).values_list("name", flat=True))
    names = []
    for (ordinal, prepared), name in zip(items, wanted, strict=True):
        if name in taken:
            candidate = _suffix_candidate(name, prepared.parsed, upload, ordinal)
            name = (
                candidate
                if candidate not in taken
                else _suffixed(project, name, prepared.parsed, upload, ordinal, taken)
            )
        taken.add(name)
        names.append(name)
    return names


def trace_replace_from_parsed(*, trace: Trace, parsed: ParsedTrace) -> Trace:
    """Rewrite an existing trace's header, agents, steps and imported labels in place (same id, so links hold):
    the OTLP receiver rebuilds a trace this way each time more of its spans arrive."""
    StepSearch.objects.filter(trace=trace).delete()
    TraceSearch.objects.filter(trace=trace).delete()
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
    if not Trace.objects.filter(project=project, name=name[:300]).exists():
        return name[:300]
    return _suffixed(project, name, parsed, upload, ordinal, set())


def _suffixed(
    project: Project, name: str, parsed: ParsedTrace, upload: RawUpload | None, ordinal: int, taken: set[str]
) -> str:
    base = candidate = _suffix_candidate(name, parsed, upload, ordinal)
    n = 2
    while candidate in taken or Trace.objects.filter(project=project, name=candidate).exists():
        candidate, n = f"{base} ({n})", n + 1
    return candidate


def _suffix_candidate(name: str, parsed: ParsedTrace, upload: RawUpload | None, ordinal: int) -> str:
    """``name [id]``: the trace's own id when it has one, else the file's (hash prefix and position)."""
    if parsed.external_id:
        suffix = parsed.external_id[:40]
    elif upload is not None:
        suffix = f"{upload.sha256[:8]}#{ordinal}"
    else:
        suffix = f"#{ordinal}"
    return f"{name[:250]} [{suffix}]"


def _header(parsed: ParsedTrace) -> dict[str, object]:
    return {
        "name": _clean(parsed.name)[:300],
        "source_format": parsed.source_format,
        "external_id": _clean(parsed.external_id)[:200],
        "question": _clean(parsed.question),
        "ground_truth": _clean(parsed.ground_truth),
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
        self.prompts = {stored_agent(a.name): _clean(a.system_prompt) for a in parsed.agents}
        self.ensure(a.name for a in parsed.agents)

    def ensure(self, names: Iterable[str | None]) -> None:
        new = [n for n in dict.fromkeys(stored_agent(n) for n in names if n) if n and n not in self.by_name]
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
            agent = self.by_name[stored_agent(item.name)]
            prompt = _clean(item.system_prompt)
            if prompt and agent.system_prompt != prompt:
                agent.system_prompt = prompt
                agent.save(update_fields=["system_prompt"])

    def get(self, name: str | None) -> Agent | None:
        if not name:
            return None
        agent = self.by_name.get(stored_agent(name))
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
_STEP_VALUES = itemgetter(*STEP_COLUMNS)  # a row's values in column order, read in C
_JSON_AT = [i for i, column in enumerate(STEP_COLUMNS) if column in _JSON_COLUMNS]


def _step_values(trace: Trace, index: int, step: ParsedStep, agents: _AgentBook, warnings: list[str]) -> dict:
    agent = agents.get(step.agent)
    row = _step_row(index, step, stored_agent(step.agent), warnings)
    row["trace_id"], row["agent_id"] = trace.pk, agent.pk if agent else None
    return row


def _step_row(index: int, step: ParsedStep, agent: str | None, warnings: list[str]) -> dict:
    """A step's row (``STEP_COLUMNS``) as stored; ``trace_id`` is left empty and ``agent_id`` holds the agent's
    stored name, for the caller to turn into ids."""
    parent = step.parent
    if parent is not None and not 0 <= parent < index:
        warnings.append(f"step {index}: parent {parent} does not precede it; the link was dropped")
        parent = None
    return {
        "trace_id": None,
        "index": index,
        "agent_id": agent,
        "speaker": _clean(step.speaker)[:300],
        "recipient": _clean(step.recipient)[:200],
        "kind": stored_kind(step.kind),
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


# ``json.dumps`` with options builds an encoder per call: a third of its cost for a step's small ``raw`` (issue 19).
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str, allow_nan=False).encode
_ENCODE_FINITE = json.JSONEncoder(ensure_ascii=False, default=str).encode
# The JSON text of small all-string objects seen lately, by their items (bounded: at most this many, this short).
_SMALL_JSON: dict[tuple, str] = {}
_SMALL_JSON_KEPT, _SMALL_JSON_LENGTH = 4096, 256


def _json(value: object) -> str | None:
    if value is None:
        return None
    if type(value) is dict:
        # A step's ``raw`` is most often a few short strings (Who&When: name and role), the same ones step after
        # step: their text is kept (a tuple of items equal to one of all-string items holds the same strings), and
        # otherwise it is the very text json.dumps writes, built directly, ~3x faster (issue 19).
        try:
            key: tuple | None = tuple(value.items())
            text = _SMALL_JSON.get(key)
        except TypeError:  # a list or dict inside: not hashable
            key = text = None
        if text is not None:
            return text
        if key is not None and all(type(k) is str and type(v) is str for k, v in key):
            text = "{" + ", ".join(f"{_quoted(k)}: {_quoted(v)}" for k, v in key) + "}"
            text = text.replace("\\u0000", "\\ufffd")
            if len(text) <= _SMALL_JSON_LENGTH:
                if len(_SMALL_JSON) >= _SMALL_JSON_KEPT:
                    _SMALL_JSON.clear()
                _SMALL_JSON[key] = text
            return text
    try:
        text = _ENCODE(value)
    except ValueError:  # NaN / Infinity: valid for Python's json, refused by PostgreSQL's jsonb
        text = _ENCODE_FINITE(finite(value))
    # jsonb refuses \u0000 as well: neutralise it in the serialised text.
    return text.replace("\\u0000", "\\ufffd")


def _bulk_create_steps(rows: Iterable[dict]) -> None:
    """SQLite's way (the embedded mode, whose search reads the text and needs no documents)."""
    Step.objects.bulk_create(
        Step(**{k: finite(v) if k in _JSON_COLUMNS else v for k, v in row.items()}) for row in rows
    )


def _copy_steps(rows: Iterable[dict], *, mark: bool = True) -> None:
    """COPY is ~4x faster than a multi-row INSERT for steps (bench/ingest.py: 3.5k -> 14k steps/s on 2 cores).
    ``mark=False``: the caller created the traces in this transaction, already marked for search."""
    traces: set[int] = set()
    with _copy_into(Step, STEP_COLUMNS) as copy:
        for row in rows:
            traces.add(row["trace_id"])
            values = list(_STEP_VALUES(row))
            for at in _JSON_AT:
                values[at] = _json(values[at])
            copy.write_row(values)
    if mark:
        _mark_for_search(traces)


def _copy_step_lines(
    pairs: list[tuple[Trace, PreparedTrace]], agents: dict[int, dict[str, AgentRef]], *, mark: bool
) -> None:
    """``_copy_steps`` for prepared traces whose rows are COPY text already (``copy_tails``): each line is the
    trace's id, the agent's and the tail, one write per trace. Formatting every value through psycopg's
    ``write_row`` was half the importer's own time for many small traces (issue 19); the tails are made where the
    trace was prepared, in the parse-ahead child."""
    with _copy_into(Step, ("trace_id", "agent_id", *_TAIL_COLUMNS)) as copy:
        for trace, p in pairs:
            ids = {name: f"{trace.pk}\t{agent.pk}\t" for name, agent in agents[trace.pk].items()}
            none = f"{trace.pk}\t\\N\t"
            copy.write(
                "".join(
                    f"{ids.get(row['agent_id'], none) if row['agent_id'] else none}{tail}\n"
                    for row, tail in zip(p.rows, p.copy_tails, strict=True)
                )
            )
    if mark:
        _mark_for_search({trace.pk for trace, p in pairs if p.rows})


_TAIL_COLUMNS = tuple(c for c in STEP_COLUMNS if c not in ("trace_id", "agent_id"))


@contextmanager
def _copy_into(model: type[Model], columns: Iterable[str]) -> Iterator[Any]:
    """A psycopg COPY into ``columns`` of ``model``'s table, on Django's connection."""
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            yield copy


def _copy_tails(rows: list[dict]) -> list[str] | None:
    """Every row's ``_TAIL_COLUMNS`` in COPY's text format, as psycopg's ``write_row`` writes them; None when a
    value is of a type this does not write (the rows are then copied value by value). Spelled out column by column
    (the index is an int, the kind one of ``STEP_KINDS``, texts and JSON are strings, and the parent, times and
    token counts are most often all empty): a loop asking every value's type cost the parse-ahead child about
    twice as much (issue 19)."""
    tails = []
    text = _copy_str
    for row in rows:
        parent, started, ended = row["parent_index"], row["started_at"], row["ended_at"]
        tokens_in, tokens_out = row["input_tokens"], row["output_tokens"]
        if parent is None and started is None and ended is None and tokens_in is None and tokens_out is None:
            parent = started = ended = tokens_in = tokens_out = _NULL
        else:
            parent, started, ended = _copy_text(parent), _copy_text(started), _copy_text(ended)
            tokens_in, tokens_out = _copy_text(tokens_in), _copy_text(tokens_out)
            if None in (parent, started, ended, tokens_in, tokens_out):
                return None
        arguments, raw = row["tool_arguments"], row["raw"]
        arguments = _NULL if arguments is None else text(_json(arguments))
        raw = _NULL if raw is None else text(_json(raw))
        tails.append(
            f"{row['index']}\t{text(row['speaker'])}\t{text(row['recipient'])}\t{row['kind']}\t"
            f"{text(row['content'])}\t{text(row['tool_name'])}\t{arguments}\t{parent}\t{text(row['span_id'])}\t"
            f"{started}\t{ended}\t{tokens_in}\t{tokens_out}\t{raw}"
        )
    return tails


_NULL = "\\N"


def _copy_text(value: object) -> str | None:
    """A value in COPY's text format: ``\\N`` for NULL; in text a backslash and the control characters COPY
    reads as separators or escapes are escaped (psycopg's ``_dump_repl``); a datetime as ``str()``, as psycopg's
    text dumper writes it."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str:
        return _copy_str(value)
    if kind is int:
        return str(value)
    if kind is datetime:
        return str(value)
    return None


def _copy_str(value: str) -> str:
    """Text in COPY's text format: a chain of C replacements where needed (~3 us a Who&When step, against ~25 for
    one regex substitution)."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    if "\b" in value or "\v" in value or "\f" in value:
        value = value.replace("\b", "\\b").replace("\v", "\\v").replace("\f", "\\f")
    return value


def _mark_for_search(trace_ids: set[int]) -> None:
    """The traces that just got steps are marked for the search indexer (services.search_index), which writes their
    documents after the commit. Always an UPDATE, even of a trace created in this transaction (already marked): it
    takes the trace's row lock, so an indexer that read the trace before these steps were committed cannot clear the
    mark after them -- it either finishes first (the mark is set again) or waits for this commit. (A trace created in
    autocommit, its steps written after, was otherwise indexed empty and left unmarked.)"""
    if trace_ids:
        Trace.objects.filter(pk__in=trace_ids).update(search_pending=True)
        search_index_schedule()


def _tokens(value: object) -> int | None:
    return value if isinstance(value, int) and 0 <= value < 2**31 else None
