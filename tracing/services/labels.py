"""Writing labels: gold labels (the decisive error attribution is scored against) and, for datasets that list several
errors per run, every error beside it. Callers hold the transaction.

Label files may arrive before their trace; they wait as ``PendingLabel`` rows and are written when it comes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, fields

from ..formats import ParsedGold, ParsedLabels
from ..formats.base import finite, scrub_nul
from ..models import Agent, ErrorLabel, GoldLabel, IngestJob, LabelSource, PendingLabel, Project, Step, Trace
from .agent_names import agent_resolve

DECISIVE_IMPACT = "HIGH"


def gold_write(*, trace: Trace, labels: Iterable[ParsedGold], source: str, warnings: list[str]) -> int:
    """Store labels on ``trace``, resolving span ids to steps; returns the gold labels written. A label that is
    already there is not added twice (a re-delivered job, or the same label file uploaded again).

    Labels of a taxonomy family (TRAIL's errors) are all kept as ``ErrorLabel`` rows and the decisive one also
    becomes the gold label; other labels (Who&When, AgentRx, annotators) are gold labels only.
    """
    labels = list(labels)
    if any(label.family for label in labels):
        return _error_labels_write(trace, labels, source, warnings)
    written = 0
    for label in labels:
        step = _resolve_step(trace, label, warnings) if label.decisive else None
        if step is not None and _gold_create(trace, label, step, source, warnings):
            written += 1
    return written


def _gold_create(trace: Trace, label: ParsedGold, step: Step, source: str, warnings: list[str]) -> bool:
    agent_name, agent = _label_agent(trace, label, step, warnings)
    row = {
        "trace": trace,
        "agent_name": agent_name,
        "step_index": step.index,
        "source": source,
        "category": _clean(label.category)[:80],
    }
    if GoldLabel.objects.filter(**row).exists():
        return False
    GoldLabel.objects.create(**row, agent=agent, reason=_gold_reason(label), confidence=label.confidence)
    return True


def _gold_reason(label: ParsedGold) -> str:
    parts = [
        label.reason,
        f"Evidence: {label.evidence}" if label.evidence else "",
        f"Impact: {label.impact}" if label.impact else "",
    ]
    return _clean("\n\n".join(p for p in parts if p))


# --- several errors per trace --------------------------------------------------------------------------------------


def _error_labels_write(trace: Trace, labels: list[ParsedGold], source: str, warnings: list[str]) -> int:
    """Every error as an ErrorLabel (unresolved spans too, without a step), the decisive one also as gold."""
    if ErrorLabel.objects.filter(trace=trace, source=source, family=labels[0].family).exists():
        return 0  # this label file was written already (a re-delivered job)
    steps = [_resolve_step(trace, label, warnings) for label in labels]
    decisive = decisive_index(labels, steps)
    if decisive is not None and ErrorLabel.objects.filter(trace=trace, source=source, decisive=True).exists():
        warnings.append(
            f"trace {trace.name!r} already has a decisive {source} label; these errors are kept beside it"
        )
        decisive = None
    for position, (label, step) in enumerate(zip(labels, steps, strict=True)):
        agent_name, agent = (
            _label_agent(trace, label, step, warnings) if step else (_clean(label.agent), None)
        )
        ErrorLabel.objects.create(
            trace=trace,
            step_index=step.index if step else None,
            span_id=_clean(label.span_id)[:200],
            agent=agent,
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
    step = steps[decisive] if decisive is not None else None
    if step is None:
        return 0
    return int(_gold_create(trace, labels[decisive], step, source, warnings))


def decisive_index(labels: list[ParsedGold], steps: list[Step | None]) -> int | None:
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
    trace: Trace, label: ParsedGold, step: Step, warnings: list[str]
) -> tuple[str, Agent | None]:
    """The label's agent as the trace spells it. A name that only matches up to case, spacing or a known alias
    ("Websurfer", "web_surfer" -> "WebSurfer") takes the trace's spelling, since scoring compares names exactly; a
    name the trace does not know is kept as given (Who&When has such labels) and round-trips unchanged."""
    given = _clean(label.agent).strip()[:200]
    if not given:
        return (step.agent.name, step.agent) if step.agent else ("", None)
    agent = agent_resolve(given, list(Agent.objects.filter(trace=trace)))
    if agent is None:
        return given, None
    if agent.name != given:
        warnings.append(f"label agent {given!r} resolved to trace agent {agent.name!r}")
    return agent.name, agent


def _resolve_step(trace: Trace, label: ParsedGold, warnings: list[str]) -> Step | None:
    """The labelled step: by index when the label gives one (re-imported exports give both, and a Who&When file
    has no span ids), else by the source's span id."""
    steps = Step.objects.filter(trace=trace).select_related("agent")
    if label.span_id and label.step is None:
        step = steps.filter(span_id=label.span_id).order_by("index").first()
        if step is None:
            warnings.append(f"label location span {label.span_id} not found in trace {trace.name!r}")
        return step
    if label.step is None:
        if (
            not label.family
        ):  # a family's label without a location is a trace-level one (MAST's failure modes)
            warnings.append("a label names neither a step nor a span; it was skipped")
        return None
    step = steps.filter(index=label.step).first()
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
    if not trace.external_id:
        return
    pending = list(
        PendingLabel.objects.filter(project=trace.project_id, target_external_id=trace.external_id)
    )
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
    IngestJob.objects.filter(pk=job_id).update(report=report)
