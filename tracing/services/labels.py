"""Writing labels: gold labels (the decisive error attribution is scored against) and, for datasets that list several
errors per run, every error beside it. Callers hold the transaction.

Label files may arrive before their trace; they wait as ``PendingLabel`` rows and are written when it comes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import NamedTuple

from ..formats import ParsedGold, ParsedLabels
from ..formats.base import finite, scrub_nul
from ..models import Agent, ErrorLabel, GoldLabel, IngestJob, LabelSource, PendingLabel, Project, Step, Trace
from .advisory import external_ids_lock
from .agent_names import agent_resolve

DECISIVE_IMPACT = "HIGH"


class AgentRef(NamedTuple):
    """An agent the writer just created, as its steps and labels refer to it (no model instance: issue 19)."""

    pk: int
    name: str


class _StepRef(NamedTuple):
    """A step of a trace being written, as a label resolves it: where it is, and its agent."""

    index: int
    span_id: str
    agent: AgentRef | None


def gold_write(*, trace: Trace, labels: Iterable[ParsedGold], source: str, warnings: list[str]) -> int:
    """Store labels on ``trace``, resolving span ids to steps; returns the gold labels written. A label that is
    already there is not added twice (a re-delivered job, or the same label file uploaded again).

    Labels of a taxonomy family (TRAIL's errors) are all kept as ``ErrorLabel`` rows and the decisive one also
    becomes the gold label; other labels (Who&When, AgentRx, annotators) are gold labels only.
    """
    return _labels_write(_StoredTrace(trace), list(labels), source, warnings)


class LabelRows:
    """The label rows of traces the writer is creating, built from the rows it holds in memory (no query per
    trace) and inserted by the writer with one statement per table for the whole batch. A new trace has no
    labels yet, so "already there" is only ever a label earlier in the same file."""

    def __init__(self) -> None:
        self.gold: list[GoldLabel] = []
        self.errors: list[ErrorLabel] = []

    def add(
        self,
        *,
        trace: Trace,
        steps: list[tuple[str, AgentRef | None]],
        agents: list[AgentRef],
        labels: list[ParsedGold],
        source: str,
        warnings: list[str],
    ) -> int:
        """Build ``trace``'s labels; ``steps`` are its (span id, agent) in step order, ``agents`` in position order."""
        if not labels:
            return 0
        return _labels_write(_NewTrace(trace, steps, agents, self), labels, source, warnings)


def _labels_write(target: _Target, labels: list[ParsedGold], source: str, warnings: list[str]) -> int:
    if any(label.family for label in labels):
        return _error_labels_write(target, labels, source, warnings)
    written = 0
    for label in labels:
        step = _resolve_step(target, label, warnings) if label.decisive else None
        if step is not None and _gold_create(target, label, step, source, warnings):
            written += 1
    return written


class _StoredTrace:
    """A trace in the database: steps and agents are queried, label rows are written as they are made."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def step_at(self, index: int) -> Step | None:
        return Step.objects.filter(trace=self.trace, index=index).select_related("agent").first()

    def step_with_span(self, span_id: str) -> Step | None:
        steps = Step.objects.filter(trace=self.trace, span_id=span_id).select_related("agent")
        return steps.order_by("index").first()

    def agents(self) -> list[Agent]:
        return list(Agent.objects.filter(trace=self.trace))

    def gold_exists(self, row: dict) -> bool:
        return GoldLabel.objects.filter(**row).exists()

    def gold_add(self, label: GoldLabel) -> None:
        label.save()

    def errors_exist(self, **filters: object) -> bool:
        return ErrorLabel.objects.filter(trace=self.trace, **filters).exists()

    def error_add(self, label: ErrorLabel) -> None:
        label.save()


class _NewTrace:
    """A trace being written in a batch: steps and agents come from the writer's rows, label rows are collected."""

    def __init__(
        self, trace: Trace, steps: list[tuple[str, AgentRef | None]], agents: list[AgentRef], rows: LabelRows
    ) -> None:
        self.trace, self.steps, self._agents, self.rows = trace, steps, agents, rows
        self.gold: list[GoldLabel] = []
        self.errors: list[ErrorLabel] = []

    def step_at(self, index: int) -> _StepRef | None:
        if not isinstance(index, int) or not 0 <= index < len(self.steps):
            return None
        span_id, agent = self.steps[index]
        return _StepRef(index, span_id, agent)

    def step_with_span(self, span_id: str) -> _StepRef | None:
        index = next((i for i, (span, _) in enumerate(self.steps) if span == span_id), None)
        return None if index is None else self.step_at(index)

    def agents(self) -> list[AgentRef]:
        return self._agents

    def gold_exists(self, row: dict) -> bool:
        return any(all(getattr(label, k) == v for k, v in row.items()) for label in self.gold)

    def gold_add(self, label: GoldLabel) -> None:
        self.gold.append(label)
        self.rows.gold.append(label)

    def errors_exist(self, **filters: object) -> bool:
        return any(all(getattr(label, k) == v for k, v in filters.items()) for label in self.errors)

    def error_add(self, label: ErrorLabel) -> None:
        self.errors.append(label)
        self.rows.errors.append(label)


_Target = _StoredTrace | _NewTrace
_AnyStep = Step | _StepRef


def _gold_create(
    target: _Target, label: ParsedGold, step: _AnyStep, source: str, warnings: list[str]
) -> bool:
    agent_name, agent = _label_agent(target, label, step, warnings)
    row = {
        "trace": target.trace,
        "agent_name": agent_name,
        "step_index": step.index,
        "source": source,
        "category": _clean(label.category)[:80],
    }
    if target.gold_exists(row):
        return False
    agent_id = agent.pk if agent else None
    target.gold_add(
        GoldLabel(**row, agent_id=agent_id, reason=_gold_reason(label), confidence=label.confidence)
    )
    return True


def _gold_reason(label: ParsedGold) -> str:
    parts = [
        label.reason,
        f"Evidence: {label.evidence}" if label.evidence else "",
        f"Impact: {label.impact}" if label.impact else "",
    ]
    return _clean("\n\n".join(p for p in parts if p))


# --- several errors per trace --------------------------------------------------------------------------------------


def _error_labels_write(target: _Target, labels: list[ParsedGold], source: str, warnings: list[str]) -> int:
    """Every error as an ErrorLabel (unresolved spans too, without a step), the decisive one also as gold."""
    trace = target.trace
    if target.errors_exist(source=source, family=labels[0].family):
        return 0  # this label file was written already (a re-delivered job)
    steps = [_resolve_step(target, label, warnings) for label in labels]
    decisive = decisive_index(labels, steps)
    if decisive is not None and target.errors_exist(source=source, decisive=True):
        warnings.append(
            f"trace {trace.name!r} already has a decisive {source} label; these errors are kept beside it"
        )
        decisive = None
    for position, (label, step) in enumerate(zip(labels, steps, strict=True)):
        agent_name, agent = (
            _label_agent(target, label, step, warnings) if step else (_clean(label.agent), None)
        )
        target.error_add(
            ErrorLabel(
                trace=trace,
                step_index=step.index if step else None,
                span_id=_clean(label.span_id)[:200],
                agent_id=agent.pk if agent else None,
                agent_name=agent_name[:200],
                family=label.family[:40],
                category=_clean(label.category)[:120],
                description=_clean(label.reason),
                evidence=_clean(label.evidence),
                impact=label.impact[:16],
                source=source,
                decisive=position == decisive,
                position=position,
            )
        )
    step = steps[decisive] if decisive is not None else None
    if step is None:
        return 0
    return int(_gold_create(target, labels[decisive], step, source, warnings))


def decisive_index(labels: list[ParsedGold], steps: list[_AnyStep | None]) -> int | None:
    """Which label is decisive: the one its source marks; else the earliest HIGH-impact error in run order (lowest
    step index, file order breaking ties), else the earliest error at all. Labels without a step never are."""
    placed = [(step.index, i) for i, step in enumerate(steps) if step is not None]
    marked = [i for _, i in placed if labels[i].decisive]
    if marked:
        return marked[0]
    high = sorted(p for p in placed if labels[p[1]].impact.upper() == DECISIVE_IMPACT)
    ranked = high or sorted(placed)
    return ranked[0][1] if ranked else None


# --- resolving steps and agents ------------------------------------------------------------------------------------


def _label_agent(
    target: _Target, label: ParsedGold, step: _AnyStep, warnings: list[str]
) -> tuple[str, Agent | AgentRef | None]:
    """The label's agent as the trace spells it. A name that only matches up to case, spacing or a known alias
    ("Websurfer", "web_surfer" -> "WebSurfer") takes the trace's spelling, since scoring compares names exactly; a
    name the trace does not know is kept as given (Who&When has such labels) and round-trips unchanged."""
    given = _clean(label.agent).strip()[:200]
    if not given:
        return (step.agent.name, step.agent) if step.agent else ("", None)
    agent = agent_resolve(given, target.agents())
    if agent is None:
        return given, None
    if agent.name != given:
        warnings.append(f"label agent {given!r} resolved to trace agent {agent.name!r}")
    return agent.name, agent


def _resolve_step(target: _Target, label: ParsedGold, warnings: list[str]) -> _AnyStep | None:
    """The labelled step: by index when the label gives one (re-imported exports give both, and a Who&When file
    has no span ids), else by the source's span id."""
    trace = target.trace
    if label.span_id and label.step is None:
        step = target.step_with_span(label.span_id)
        if step is None:
            warnings.append(f"label location span {label.span_id} not found in trace {trace.name!r}")
        return step
    if label.step is None:
        if (
            not label.family
        ):  # a family's label without a location is a trace-level one (MAST's failure modes)
            warnings.append("a label names neither a step nor a span; it was skipped")
        return None
    step = target.step_at(label.step)
    if step is None:
        warnings.append(f"label step {label.step} is outside trace {trace.name!r} ({trace.step_count} steps)")
    return step


def _clean(text: str | None) -> str:
    return scrub_nul(text or "")


# --- label files -------------------------------------------------------------------------------------------------


def labels_attach(
    *, project: Project, labels: ParsedLabels, job_id: int | None
) -> tuple[list[int], int, list[str]]:
    """Attach a label file's labels to every trace of the project with the target id, or keep them pending until
    such a trace is imported. Returns (trace ids labelled, labels written, warnings)."""
    warnings = list(labels.warnings)
    external_ids_lock(project.pk, [labels.target_external_id])
    targets = list(Trace.objects.filter(project=project, external_id=labels.target_external_id))
    if not targets:
        PendingLabel.objects.get_or_create(
            project=project,
            target_external_id=labels.target_external_id[:200],
            job_id=job_id,
            defaults={
                "source_format": labels.source_format,
                "labels": scrub_nul(finite([asdict(g) for g in labels.labels])),
                "metadata": scrub_nul(finite(labels.metadata)),
            },
        )
        warnings.append(waiting_message(labels.target_external_id))
        return [], 0, warnings
    written = 0
    for target in targets:
        _merge_metadata(target, labels.metadata)
        written += gold_write(
            trace=target, labels=labels.labels, source=LabelSource.IMPORTED, warnings=warnings
        )
    return [t.pk for t in targets], written, warnings


def _merge_metadata(trace: Trace, metadata: dict) -> None:
    if metadata:
        trace.metadata = {**(trace.metadata or {}), **scrub_nul(finite(metadata))}
        trace.save(update_fields=["metadata"])


_GOLD_FIELDS = {f.name for f in fields(ParsedGold)}


def attach_pending(trace: Trace, warnings: list[str]) -> None:
    """Labels that came before ``trace`` (matched on its external id) are written now, then their rows deleted."""
    attach_pending_many([trace], {trace.pk: warnings})


def attach_pending_many(traces: list[Trace], warnings: dict[int, list[str]]) -> None:
    """``attach_pending`` for a batch of traces of one project with one query: each waiting label file goes to the
    first trace (in ``traces`` order) with its external id, as if they had been written one by one."""
    wanted = {t.external_id for t in traces if t.external_id}
    if not wanted:
        return
    external_ids_lock(traces[0].project_id, wanted)
    pending = list(
        PendingLabel.objects.filter(project=traces[0].project_id, target_external_id__in=wanted).order_by(
            "pk"
        )
    )
    if not pending:
        return
    for trace in traces:
        mine = [row for row in pending if row.target_external_id == trace.external_id]
        if mine:
            _attach(trace, mine, warnings[trace.pk])
            pending = [row for row in pending if row.target_external_id != trace.external_id]


def _attach(trace: Trace, pending: list[PendingLabel], warnings: list[str]) -> None:
    for row in pending:
        # Rows written by an older release lack newer fields (their defaults apply) or may carry retired ones.
        labels = [ParsedGold(**{k: v for k, v in label.items() if k in _GOLD_FIELDS}) for label in row.labels]
        _merge_metadata(trace, row.metadata)
        written = gold_write(trace=trace, labels=labels, source=LabelSource.IMPORTED, warnings=warnings)
        if row.job_id:
            _report_attached(row.job_id, trace, written, waiting_message(row.target_external_id))
    # Kept until attached: a label file describes one run, which the project holds once.
    PendingLabel.objects.filter(pk__in=[row.pk for row in pending]).delete()


def waiting_message(external_id: str) -> str:
    return f"no trace {external_id!r} in this project yet: its labels wait for it"


def _report_attached(job_id: int, trace: Trace, written: int, waiting: str) -> None:
    """Rewrite the label file's import report once its labels attach, so it says what finally happened."""
    job = IngestJob.objects.filter(pk=job_id).only("report").first()
    if job is None:
        return
    report = dict(job.report or {})
    notes = [w for w in report.get("warnings", []) if w != waiting]
    report["warnings"] = [*notes, f"attached to trace {trace.name!r} (#{trace.pk}) when it was imported"]
    report["labels"] = report.get("labels", 0) + written
    report["waiting"] = max(0, report.get("waiting", 0) - 1)
    IngestJob.objects.filter(pk=job_id).update(report=report)
