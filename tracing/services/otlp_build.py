"""Building a trace from the spans the OTLP receiver stored, incrementally.

Step order is the one every span format uses (``formats/spans.py``): depth-first, siblings in start order. Each built
span keeps a ``path``, the (start, span id) of each ancestor and of itself in 16-byte levels, so byte order of paths
*is* step order and a subtree is a path prefix. A build takes the spans not built yet and:

- derives steps for the *affected* spans only: the new ones, plus the subtrees they change (spans that waited for a
  parent that just arrived, the subtree of a re-sent span, a silent leaf that just got a child). Parent links and
  the acting agent come from the parent's stored row, never from the rest of the trace;
- moves, without deriving them again, the subtrees of spans that waited as roots for a parent that just arrived and
  act for an agent of their own (the common case when an SDK exports spans as they end, children first);
- if every affected step sorts after the existing ones, appends them;
- otherwise renumbers the steps after the first affected position in one set-based UPDATE (index and parent index
  together), then writes the new steps; labels and verdicts that pointed at a moved step follow it, and so do
  per-step data of other apps (a verdict's scores, through ``extensions.steps_moved``).

A trace's first build, SQLite (the embedded mode) and the rare change that alters every step (an earlier root with
another service name, which is the default agent of every step) derive all spans: the same code with every span
affected. Builds of one trace are serialised by an advisory lock on the trace (no project-wide lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection, models, transaction
from django.db.models import F
from django.db.models.functions import Length

from .. import extensions, waterfall
from ..formats.base import finite, scrub_nul
from ..models import Agent, OtlpSpan, Step, StepKind, StepSearch, Trace, TraceSearch
from .labels import attach_pending
from .otlp_derive import LEVEL, Placed, _defaults, _derive, _level
from .otlp_records import _header, _parsed
from .step_follow import _labels_follow
from .totals import NOTHING_REMOVED, StepTotals
from .writer import STEP_BATCH_SIZE, _bulk_create_steps, _clean, _copy_steps, _tokens, unique_trace_name

OTLP_FORMAT = "otlp-json"
_SUBTREE_END = b"\xff" * (LEVEL * 128)  # a prefix's range end: subtrees up to 128 levels below it
_ROW_FIELDS = (
    "id",
    "span_id",
    "parent_span_id",
    "resource",
    "scope",
    "span",
    "payload",
    "encoding",
    "error",
    "received_at",
    "path",
    "built",
)
_KINDS = set(StepKind.values)
# Spans built per transaction. Requests that arrive while a build runs pile up behind it (debounce), and parsing them
# all at once took the worker past 800 MB on the 100,000-span trace (bench/otlp_ingest.py); 5,000 keep it bounded.
BUILD_BATCH = 5000


# Rows of one trace by a list of span ids: one index probe per id (a LATERAL join that OFFSET 0 keeps the planner
# from flattening), then the rows by primary key. With a plain IN list (or a flattened join) the planner, whose
# statistics expect a trace of average size, read every span of a long trace instead: 85-104 ms per build at 60,000
# spans (bench/otlp_ingest.py ``huge``), growing with the trace; 3.6 ms this way. The project is compared as
# ``project_id + 0`` so that no index led by (project, trace) can serve the probe: the one led by the id is the only
# choice (migration 0025). With statistics that did not know the trace, the planner took the path index and read the
# whole trace once per probe (5 minutes for one build of the 100,000-span trace).
_SPANS_BY = {
    column: "SELECT o.id FROM unnest(%s::text[]) AS k(v) CROSS JOIN LATERAL (SELECT id FROM tracing_otlpspan "
    f"WHERE {column} = k.v AND {column} <> '' AND project_id + 0 = %s AND trace_id = %s OFFSET 0) AS o"
    for column in ("span_id", "parent_span_id")
}
# Both are run on their own and the rows then read by a list of primary keys (as a sub-select, ``id IN (SELECT ...)``,
# how to join it would be the planner's choice again).


def _ids(sql: str, params: list[Any]) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row_id for (row_id,) in cursor.fetchall()]


# ``span_id <> ''``: the condition of the partial index ``step_span_trace`` (migrations 0024, 0025), which a join on
# a column cannot prove; the trace as ``trace_id + 0``, as the project above.
_STEPS_BY_SPAN = (
    "SELECT s.id FROM unnest(%s::text[]) AS k(v) CROSS JOIN LATERAL "
    "(SELECT id FROM tracing_step WHERE span_id = k.v AND span_id <> '' AND trace_id + 0 = %s OFFSET 0) AS s"
)


def otlp_trace_build(*, project_id: int, trace_id: str) -> Trace | None:
    """Turn the trace's unbuilt spans into steps (creating the trace on its first build), at most ``BUILD_BATCH`` of
    them per transaction. Idempotent: a re-delivered task finds nothing unbuilt, and a build killed half-way rolled
    back only its last batch."""
    while True:
        with transaction.atomic():
            _lock(project_id, trace_id)
            build = _Build(project_id, trace_id)
            if not build.load_pending():
                return build.trace
            build.run()
        if not build.more:
            return build.trace


def _lock(project_id: int, trace_id: str) -> None:
    """One build per trace at a time, any number of traces at once: a transaction-scoped advisory lock on a hash of
    (project, trace). SQLite has one writer at a time anyway; the dummy write takes its write lock now, so two
    builds of one trace cannot both read before either writes."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 17))", [f"{project_id}:{trace_id}"]
            )
    else:
        OtlpSpan.objects.filter(project_id=project_id, trace_id=trace_id, pk__lt=0).update(built=False)


class _Build:
    def __init__(self, project_id: int, trace_id: str) -> None:
        self.project_id, self.trace_id = project_id, trace_id
        self.spans = OtlpSpan.objects.filter(project_id=project_id, trace_id=trace_id)
        self.trace = (
            Trace.objects.filter(
                project_id=project_id, external_id=trace_id, source_format=OTLP_FORMAT, upload__isnull=True
            )
            .order_by("pk")
            .first()
        )
        self.affected: dict[str, Any] = {}  # span id -> OtlpSpan row (with payload) to derive
        self.context: dict[str, Placed] = {}  # parents of affected spans that stay as they are
        self.full = False
        self.created = False
        # Totals of the steps this build deleted, taken out of the trace's in ``_update_header``.
        self.removed: dict[str, Any] | None = None
        self.relocated: dict[
            str, tuple[bytes, str]
        ] = {}  # span id -> (old path, parent): subtrees moved as they are

    def _spans_where(self, column: str, values: Any) -> models.QuerySet:
        """The trace's spans whose ``span_id`` or ``parent_span_id`` is one of ``values``."""
        if connection.vendor != "postgresql":
            return self.spans.filter(**{f"{column}__in": list(values)})
        return OtlpSpan.objects.filter(
            pk__in=_ids(_SPANS_BY[column], [list(values), self.project_id, self.trace_id])
        )

    def _steps_where(self, span_ids: Any) -> models.QuerySet:
        """The trace's steps built from the spans ``span_ids``."""
        if connection.vendor != "postgresql":
            return Step.objects.filter(trace=self.trace, span_id__in=list(span_ids))
        return Step.objects.filter(pk__in=_ids(_STEPS_BY_SPAN, [list(span_ids), self.trace.pk]))

    def load_pending(self) -> bool:
        """Up to ``BUILD_BATCH`` unbuilt spans: root spans first, then in arrival order. An SDK exports a span when
        it ends, so a run's root comes last, after a backlog of its descendants when the builds lag behind the
        requests; placed first, it moves only the steps built so far (one place each), and the backlog is then
        appended under it. In arrival order it came after the backlog and moved every step of the trace (142,856
        of them for bench/otlp_ingest.py's 100,000 spans: the largest part of the wait after the last request)."""
        unbuilt = self.spans.filter(built=False).order_by("pk").only(*_ROW_FIELDS)
        roots = list(unbuilt.filter(parent_span_id="")[: BUILD_BATCH + 1])
        pending = roots + list(unbuilt.exclude(parent_span_id="")[: BUILD_BATCH + 1 - len(roots)])
        self.more = len(pending) > BUILD_BATCH
        self.affected = {row.span_id: row for row in pending[:BUILD_BATCH]}
        return bool(pending)

    def run(self) -> None:
        incremental = connection.vendor == "postgresql" and self.trace is not None
        if not incremental or not self._plan_incremental():
            self.full, self.relocated = True, {}
            if self.trace is not None:  # a new trace's spans are all pending, and loaded
                self.affected = {row.span_id: row for row in self.spans.only(*_ROW_FIELDS)}
            self.context = {}
        root = self._root_row()
        adopting = {parent for _, parent in self.relocated.values()}
        derived = _derive(list(self.affected.values()), self.context, *_defaults(root), adopting)
        self._write(root, derived)

    # --- planning -------------------------------------------------------------------------------------------------

    def _plan_incremental(self) -> bool:
        """Grow the affected set to every span whose steps change; False when deriving all is as cheap or needed."""
        first = self.spans.filter(path__isnull=False).order_by("path").only(*_ROW_FIELDS).first()
        if first is None:
            return False
        default_agent = _defaults(first)[0]
        self._add_subtrees([bytes(row.path) for row in self.affected.values() if row.path is not None])
        children = (
            self._spans_where("parent_span_id", self.affected)
            .filter(path__isnull=False)
            .values_list("span_id", "path", "agent", "service", "parent_span_id")
        )
        adopt = []
        for span_id, path, agent, service, parent in children:
            if span_id in self.affected:
                continue
            path = bytes(path)
            # A root that waited for this parent and acts for an agent of its own keeps every step as it is: its
            # subtree only moves under the parent (paths and the top steps' parent link), nothing is derived again.
            if len(path) == LEVEL and agent and agent != default_agent and agent != service:
                self.relocated[span_id] = (path, parent)
            else:
                adopt.append(path)
        self._add_subtrees(adopt)
        while True:
            self._load_context()
            inside = [
                top
                for top, (path, _) in self.relocated.items()
                if any(placed.path.startswith(path) for placed in self.context.values())
            ]
            if not inside:
                break
            # A new span hangs inside a subtree that moves: derive that subtree again instead of moving it.
            self._add_subtrees([self.relocated.pop(top)[0] for top in inside])
            self.context = {k: v for k, v in self.context.items() if k not in self.affected}
        # When over half the built spans must be derived again, writing everything again is cheaper than moving the
        # rest (a re-sent trace, a root whose subtrees need their agents derived again).
        again = sum(1 for row in self.affected.values() if row.path is not None)
        if again * 2 > (self.trace.metadata or {}).get("span_count", 0):
            return False
        return _defaults(self._root_row()) == _defaults(first)

    def _load_context(self) -> None:
        """The placement of each affected span's parent that stays; a silent leaf parent becomes affected."""
        while True:
            wanted = (
                {row.parent_span_id for row in self.affected.values() if row.parent_span_id}
                - set(self.affected)
                - set(self.context)
            )
            if not wanted:
                return
            leaves = []
            for row in self._spans_where("span_id", wanted).filter(path__isnull=False):
                if row.shown_leaf:  # a silent leaf shown by its attributes has a child now: its step goes
                    leaves.append(row.span_id)
                else:
                    self.context[row.span_id] = Placed(
                        row.span_id, bytes(row.path), row.agent, row.step_span, row.service
                    )
            if not leaves:
                return
            self.affected.update(
                (row.span_id, row) for row in self._spans_where("span_id", leaves).only(*_ROW_FIELDS)
            )

    def _add_subtrees(self, prefixes: list[bytes]) -> None:
        """Add the spans under each path prefix: one index range scan per prefix (a LATERAL join the planner may
        not flatten into a scan of the whole trace, see ``_SPANS_BY``), all in one query."""
        prefixes = sorted(set(prefixes))
        if not prefixes:
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT o.id FROM unnest(%s::bytea[], %s::bytea[]) AS r(lo, hi) CROSS JOIN LATERAL "
                f"(SELECT id FROM {OtlpSpan._meta.db_table} WHERE project_id = %s AND trace_id = %s "
                "AND path >= r.lo AND path <= r.hi OFFSET 0) AS o",
                [prefixes, [p + _SUBTREE_END for p in prefixes], self.project_id, self.trace_id],
            )
            ids = [row_id for (row_id,) in cursor.fetchall()]
        for start in range(0, len(ids), 5000):
            # By primary key alone: with the trace's columns too, the planner could read the whole trace instead.
            rows = OtlpSpan.objects.filter(pk__in=ids[start : start + 5000]).only(*_ROW_FIELDS)
            # Every path in [prefix, prefix + ff…] starts with the prefix: the ranges are the subtrees.
            self.affected.update((row.span_id, row) for row in rows if row.span_id not in self.affected)

    def _root_row(self) -> Any:
        """The earliest root after this build: among the affected spans with no parent, and the unaffected spans."""
        roots = [
            row
            for row in self.affected.values()
            if not row.parent_span_id
            or (row.parent_span_id not in self.affected and row.parent_span_id not in self.context)
        ]
        best = min(roots, key=lambda r: _level(_parsed(r)), default=None)
        if self.full or self.trace is None:
            return best
        if not hasattr(self, "_unaffected_root"):
            # Roots only (one path level), in order; the first one this build leaves alone.
            roots_in_order = (
                self.spans.annotate(depth=Length("path"))
                .filter(depth=LEVEL)
                .order_by("path")
                .values_list("span_id", flat=True)
            )
            skip = len(self.affected) + len(self.relocated)  # at most these can be skipped
            first = next(
                (
                    span_id
                    for span_id in roots_in_order[: skip + 1]
                    if span_id not in self.affected and span_id not in self.relocated
                ),
                None,
            )
            self._unaffected_root = (
                None if first is None else self.spans.only(*_ROW_FIELDS).get(span_id=first)
            )
        other = self._unaffected_root
        if best is None or (other is not None and bytes(other.path) < _level(_parsed(best))):
            return other
        return best

    # --- writing ----------------------------------------------------------------------------------------------------

    def _write(self, root: Any, derived: tuple[list[Placed], list[dict]]) -> None:
        placed, new_steps = derived
        if self.trace is None:
            self.trace = self._create_trace(root)
        old = self._delete_old_steps()
        tops = self._relocate({p.span_id: p for p in placed}, new_steps)
        moved = self._renumber(placed, new_steps, old, tops)
        agents = self._agents(new_steps)
        rows = [self._step_row(step, agents) for step in new_steps]
        insert = _copy_steps if connection.vendor == "postgresql" else _bulk_create_steps
        for start in range(0, len(rows), STEP_BATCH_SIZE):
            insert(rows[start : start + STEP_BATCH_SIZE])
        if not self.created:
            self._count_agents(rows, old)
        self.active_agents = len({row["agent_id"] for row in rows if row["agent_id"]})
        self._save_placements(placed)
        self._update_header(root, len(rows) - len(old), rows, replaced=bool(old))
        mapping, dropped = {**moved, **self._recreated(old, new_steps)}, self._dropped(old, new_steps)
        _labels_follow(self.trace, mapping)
        # Per-step data of the apps above (a verdict's scores) follows too, in this transaction.
        if mapping or dropped:
            extensions.steps_moved(self.trace.pk, mapping, self.trace.step_count, dropped)

    def _create_trace(self, root: Any) -> Trace:
        header = _header(root, self.trace_id)
        name = unique_trace_name(
            project=self.project_id, name=header["name"], parsed=_Named(self.trace_id), upload=None, ordinal=0
        )
        trace = Trace.objects.create(
            project_id=self.project_id,
            upload=None,
            ordinal=0,
            source_format=OTLP_FORMAT,
            external_id=self.trace_id[:200],
            **{**header, "name": name},
        )
        attach_pending(trace, [])
        extensions.traces_arrived(self.project_id, [trace.pk])
        self.created = True
        return trace

    def _delete_old_steps(self) -> list[tuple[int, str, int | None]]:
        """Delete the affected spans' old steps; their (index, span id, agent id) in order."""
        if self.created:
            return []
        steps = Step.objects.filter(trace=self.trace)
        if not self.full:
            steps = self._steps_where([s for s, row in self.affected.items() if row.path is not None])
        old = list(steps.order_by("index").values_list("index", "span_id", "agent_id"))
        if old and not self.full:
            self.removed = waterfall.steps_aggregate(steps)  # taken out of the totals in ``_update_header``
        if old:
            # The trace's row first, which the indexer holds while it writes documents (or skips while we hold it):
            # deleted before it commits, a step's document would be written after ours were deleted, and the trace
            # document marked inexact below would be one this transaction cannot see yet.
            list(Trace.objects.select_for_update().filter(pk=self.trace.pk).values_list("pk"))
            StepSearch.objects.filter(step_id__in=steps.values("pk")).delete()  # their search documents
            # The trace's document may now hold lexemes of no step: searches check its steps until the indexer
            # rebuilds it (tracing.models.TraceSearch).
            TraceSearch.objects.filter(trace=self.trace).update(exact=False)
            steps.delete()
        return old

    def _relocate(self, placed: dict[str, Placed], new_steps: list[dict]) -> dict[bytes, tuple[str, Any]]:
        """Move each relocated subtree under its new parent in one UPDATE: its paths get the parent's path in front,
        and spans with no step above them inside the subtree now hang from the parent's step. Returns {new path of
        the subtree's top: (old path, where its top steps hang from)} for the renumbering."""
        if not self.relocated:
            return {}
        last_new = {step["step"].span_id: i for i, step in enumerate(new_steps)}
        tops, olds, prefixes, holders = {}, [], [], []
        for old_path, parent_id in self.relocated.values():
            parent = placed[parent_id]
            holder = parent.step_span
            anchor = ("new", last_new[holder]) if holder in last_new else ("span", holder) if holder else None
            tops[parent.path + old_path] = (old_path, anchor)
            olds.append(old_path)
            prefixes.append(parent.path)
            holders.append(holder)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {OtlpSpan._meta.db_table} AS o SET path = v.prefix || o.path, "
                "step_span = CASE WHEN o.step_span = '' THEN v.holder ELSE o.step_span END "
                "FROM unnest(%s::bytea[], %s::bytea[], %s::text[]) AS v(top, prefix, holder) "
                "WHERE o.project_id = %s AND o.trace_id = %s AND o.path IS NOT NULL "
                f"AND substring(o.path from 1 for {LEVEL}) = v.top",
                [olds, prefixes, holders, self.project_id, self.trace_id],
            )
        return tops

    def _renumber(
        self,
        placed: list[Placed],
        new_steps: list[dict],
        old: list[tuple],
        tops: dict[bytes, tuple[bytes, Any]],
    ) -> dict[int, int]:
        """Give the new steps their indexes, moving the unaffected steps that sort after the first of them in one
        UPDATE (relocated subtrees among them, their top steps hanging from their new parent). Returns {old index:
        new index} of the moved steps."""
        keys = [step["path"] for step in new_steps] + [
            bytes(self.affected[s].path)
            for _, s, _ in old
            if self.affected.get(s) is not None and self.affected[s].path is not None
        ]
        keys += [path for pair in ((new, old_path) for new, (old_path, _) in tops.items()) for path in pair]
        tail = self._tail(min(keys)) if keys and not self.full else []
        base = (self.trace.step_count - len(old) - len(tail)) if not self.full else 0
        merged = sorted(
            [(path, index, 0, i) for i, (_, index, _, path) in enumerate(tail)]
            + [(step["path"], step["order"], 1, i) for i, step in enumerate(new_steps)]
        )
        moved: dict[int, int] = {}
        for position, (_, _, is_new, i) in enumerate(merged):
            if is_new:
                new_steps[i]["index"] = base + position
            else:
                moved[tail[i][1]] = base + position
        anchors = [step["parent"] for step in new_steps] + [anchor for _, anchor in tops.values()]
        self._load_outside(anchors)
        for step in new_steps:
            step["parent_index"] = self._resolve(step["parent"], new_steps, moved)
        lengths = sorted({len(path) for path in tops})
        updates = []
        for row_id, index, parent, path in tail:
            if parent is not None:
                parent = moved.get(parent, parent)
            elif tops:  # a top step of a relocated subtree hangs from its new parent now
                top = next((path[:n] for n in lengths if path[:n] in tops), None)
                parent = self._resolve(tops[top][1], new_steps, moved) if top is not None else None
            updates.append((row_id, moved[index], parent, index))
        original = {row_id: parent for row_id, _, parent, _ in tail}
        updates = [u for u in updates if u[1] != u[3] or u[2] != original[u[0]]]
        if updates:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {Step._meta.db_table} AS s SET index = v.new_index, parent_index = v.new_parent "
                    "FROM unnest(%s::bigint[], %s::int[], %s::int[]) AS v(id, new_index, new_parent) WHERE s.id = v.id",
                    [[u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates]],
                )
        return {k: v for k, v in moved.items() if k != v}

    def _tail(self, first_key: bytes) -> list[tuple[int, int, int | None, bytes]]:
        """Unaffected steps whose span sorts at or after ``first_key``: (id, index, parent index, path)."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT st.id, st.index, st.parent_index, o.path FROM {OtlpSpan._meta.db_table} o "
                f"JOIN {Step._meta.db_table} st ON st.trace_id = %s AND st.span_id = o.span_id AND st.span_id <> '' "
                "WHERE o.project_id = %s AND o.trace_id = %s AND o.path >= %s",
                [self.trace.pk, self.project_id, self.trace_id, first_key],
            )
            return [(row_id, index, parent, bytes(path)) for row_id, index, parent, path in cursor.fetchall()]

    def _load_outside(self, anchors: list[tuple[str, Any] | None]) -> None:
        """The last step (before any move) of each unaffected span that steps hang from."""
        wanted = {anchor[1] for anchor in anchors if anchor is not None and anchor[0] == "span"}
        self._outside = (
            dict(
                self._steps_where(wanted)
                .values("span_id")
                .annotate(last=models.Max("index"))
                .values_list("span_id", "last")
            )
            if wanted
            else {}
        )

    def _resolve(
        self, parent: tuple[str, Any] | None, new_steps: list[dict], moved: dict[int, int]
    ) -> int | None:
        if parent is None:
            return None
        kind, value = parent
        if kind == "new":
            return new_steps[value]["index"]
        index = self._outside.get(value)
        return None if index is None else moved.get(index, index)

    def _agents(self, new_steps: list[dict]) -> dict[str, Agent]:
        agents = (
            {} if self.created else {agent.name: agent for agent in Agent.objects.filter(trace=self.trace)}
        )
        prompts: dict[str, str] = {}
        for step in new_steps:
            prompts.setdefault(step["agent"], step["prompt"])
            if step["prompt"] and not prompts[step["agent"]]:
                prompts[step["agent"]] = step["prompt"]
        new = [name for name in prompts if name and name not in agents]
        # A new trace's agents are created with their step counts (``_count_agents`` has nothing to move then).
        counts: dict[str, int] = {}
        if self.created:
            for step in new_steps:
                counts[step["agent"]] = counts.get(step["agent"], 0) + 1
        created = Agent.objects.bulk_create(
            Agent(
                trace=self.trace,
                name=name,
                system_prompt=prompts[name],
                position=len(agents) + i,
                step_count=counts.get(name, 0),
            )
            for i, name in enumerate(new)
        )
        agents.update((agent.name, agent) for agent in created)
        for name, prompt in prompts.items():
            agent = agents.get(name)
            if agent is not None and prompt and not agent.system_prompt:
                Agent.objects.filter(pk=agent.pk).update(system_prompt=prompt)
        return agents

    def _step_row(self, step: dict, agents: dict[str, Agent]) -> dict:
        parsed = step["step"]
        agent = agents.get(step["agent"])
        return {
            "trace_id": self.trace.pk,
            "index": step["index"],
            "agent_id": agent.pk if agent else None,
            "speaker": _clean(parsed.speaker)[:300],
            "recipient": _clean(parsed.recipient)[:200],
            "kind": parsed.kind if parsed.kind in _KINDS else "message",
            "content": _clean(parsed.content),
            "tool_name": _clean(parsed.tool_name)[:200],
            "tool_arguments": parsed.tool_arguments,
            "parent_index": step["parent_index"],
            "span_id": _clean(parsed.span_id)[:200],
            "started_at": parsed.started_at,
            "ended_at": parsed.ended_at,
            "input_tokens": _tokens(parsed.input_tokens),
            "output_tokens": _tokens(parsed.output_tokens),
            "raw": parsed.raw,
        }

    def _count_agents(self, rows: list[dict], old: list[tuple]) -> None:
        delta: dict[int, int] = {}
        for row in rows:
            if row["agent_id"]:
                delta[row["agent_id"]] = delta.get(row["agent_id"], 0) + 1
        for _, _, agent_id in old:
            if agent_id:
                delta[agent_id] = delta.get(agent_id, 0) - 1
        delta = {k: v for k, v in delta.items() if v}
        if not delta:
            return
        Agent.objects.filter(pk__in=list(delta)).update(
            step_count=F("step_count")
            + models.Case(
                *[models.When(pk=pk, then=models.Value(change)) for pk, change in delta.items()],
                output_field=models.IntegerField(),
            )
        )

    def _save_placements(self, placed: list[Placed]) -> None:
        save_placements([(self.affected[p.span_id], p) for p in placed])

    def _update_header(self, root: Any, added: int, step_rows: list[dict], *, replaced: bool = False) -> None:
        """Totals move by what this build added and removed (spans, errors, steps), without counting the trace
        again; only when the removed steps held a bound or a cost are the step totals aggregated over the trace."""
        trace = self.trace
        fields = ["step_count", "agent_count", "metadata"]
        if self.created:
            trace.step_count = added
        else:
            trace.step_count = (
                Step.objects.filter(trace=trace).count() if self.full else trace.step_count + added
            )
        trace.agent_count = (
            self.active_agents
            if self.created
            else Agent.objects.filter(trace=trace, step_count__gt=0).count()
        )
        metadata = dict(trace.metadata or {})
        if root is not None and (self.full or root.span_id in self.affected):  # the root is new or changed
            header = _header(root, self.trace_id)
            metadata.update(header.pop("metadata"))
            name = header.pop("name")
            if not self.created and name != trace.name and not trace.name.startswith(f"{name} ["):
                # An earlier root arrived: the trace takes its name, made unique in the project.
                trace.name = unique_trace_name(
                    project=self.project_id, name=name, parsed=_Named(self.trace_id), upload=None, ordinal=0
                )
                fields.append("name")
            for field, value in header.items():
                setattr(trace, field, value)
            fields += list(header)
        if self.full:
            rows = list(self.affected.values())
            metadata.update(
                span_count=len(rows), error_span_count=sum(1 for row in rows if row.error), scopes=[]
            )
        else:
            fresh = [row for row in self.affected.values() if not row.built and row.path is None]
            metadata["span_count"] = metadata.get("span_count", 0) + len(fresh)
            metadata["error_span_count"] = metadata.get("error_span_count", 0) + sum(
                1 for r in fresh if r.error
            )
        scopes = set(metadata.get("scopes") or [])
        scopes.update(
            str(row.scope["name"])
            for row in self.affected.values()
            if isinstance(row.scope, dict) and row.scope.get("name")
        )
        metadata["scopes"] = sorted(scopes)
        trace.metadata = scrub_nul(finite(metadata))
        if self.created:  # every step is in ``step_rows``: summed here, as the file writer does
            totals = StepTotals()
            totals.add(step_rows)
            trace.totals = totals.stored(steps=trace.step_count)
        elif (running := StepTotals.from_stored(trace.totals)) is not None and running.replace(
            self.removed if replaced else NOTHING_REMOVED, step_rows
        ):
            # The stored totals, less the steps this build deleted, plus the new rows': a build costs what it
            # touches, not what the trace holds (an aggregate over 100,000 steps took 1.7 s per request).
            trace.totals = running.stored(steps=trace.step_count)
        else:  # steps replaced: one aggregate over the steps after the build wrote them
            trace.totals = waterfall.totals_aggregate(trace=trace)
        trace.save(update_fields=[*fields, "totals"])

    def _recreated(self, old: list[tuple], new_steps: list[dict]) -> dict[int, int]:
        """Steps deleted and derived again (a re-sent span, an adopted subtree): {old index: new index}, matched by
        span and position within the span (a tool span's call and result)."""
        if not old:
            return {}
        new_at = {(step["step"].span_id, step["order"]): step["index"] for step in new_steps}
        mapping, seen = {}, {}
        for index, span_id, _ in old:
            position = seen[span_id] = seen.get(span_id, -1) + 1
            target = new_at.get((span_id, position))
            if target is not None and target != index:
                mapping[index] = target
        return mapping

    def _dropped(self, old: list[tuple], new_steps: list[dict]) -> frozenset[int]:
        """Old indexes of deleted steps not derived again (a silent leaf's shown attributes, once it has a child),
        matched as in ``_recreated``."""
        made = {(step["step"].span_id, step["order"]) for step in new_steps}
        seen: dict[str, int] = {}
        dropped = set()
        for index, span_id, _ in old:
            position = seen[span_id] = seen.get(span_id, -1) + 1
            if (span_id, position) not in made:
                dropped.add(index)
        return frozenset(dropped)


def save_placements(rows: list[tuple[Any, Placed]]) -> None:
    """Store each derived span's placement (its row, its ``Placed``), of one trace or many; mark it built unless it
    was re-sent while the build ran."""
    if connection.vendor != "postgresql":
        objects = []
        for row, p in rows:
            row.path, row.agent, row.step_span, row.service = (
                p.path,
                p.agent[:200],
                p.step_span,
                p.service[:200],
            )
            row.step_count, row.shown_leaf = p.step_count, p.shown_leaf
            row.built = True
            objects.append(row)
        OtlpSpan.objects.bulk_update(
            objects,
            ["path", "agent", "step_span", "service", "step_count", "shown_leaf", "built"],
            batch_size=500,
        )
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {OtlpSpan._meta.db_table} AS o SET path = v.path, agent = v.agent, step_span = v.step_span, "
            "service = v.service, step_count = v.step_count, shown_leaf = v.shown_leaf, "
            "built = (o.received_at = v.received_at) "
            "FROM unnest(%s::bigint[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::int[], %s::bool[], "
            "%s::timestamptz[]) AS v(id, path, agent, step_span, service, step_count, shown_leaf, received_at) "
            "WHERE o.id = v.id",
            [
                [row.pk for row, _ in rows],
                [p.path for _, p in rows],
                [p.agent[:200] for _, p in rows],
                [p.step_span for _, p in rows],
                [p.service[:200] for _, p in rows],
                [p.step_count for _, p in rows],
                [p.shown_leaf for _, p in rows],
                [row.received_at for row, _ in rows],
            ],
        )


@dataclass
class _Named:
    external_id: str
