"""Duplicate detection on import: a trace whose content hash (``tracing.content_hash``) is already in the project is
not written again; the import reports it as a duplicate of the trace that holds it, and gives that trace the file's
labels when it has none of its own. Callers hold the transaction."""

from __future__ import annotations

from collections.abc import Iterable

from ..formats import ParsedTrace
from ..models import ErrorLabel, GoldLabel, LabelSource, Project, Trace
from .advisory import advisory_xact_locks
from .labels import gold_write


def twins_find(*, project: Project, digests: Iterable[str], exclude: int | None = None) -> dict[str, Trace]:
    """The oldest trace of the project per content hash, for the hashes that have one.

    Takes a transaction-scoped advisory lock per hash first (in sorted order, so two imports never wait on each
    other in a cycle): two jobs importing overlapping bundles at once would otherwise both find nothing and both
    write. The second waits until the first commits, then finds its trace. There is no unique constraint to lean
    on, since "import anyway" may store the same run twice.
    """
    digests = sorted({d for d in digests if d})
    if not digests:
        return {}
    _lock(project, digests)
    twins: dict[str, Trace] = {}
    found = Trace.objects.filter(project=project, content_hash__in=digests).order_by("pk")
    if exclude is not None:
        found = found.exclude(pk=exclude)
    for trace in found:
        twins.setdefault(trace.content_hash, trace)
    return twins


def _lock(project: Project, digests: list[str]) -> None:
    advisory_xact_locks(f"{project.pk}:{d}" for d in digests)


def twin_labels_attach(*, twin: Trace, parsed: ParsedTrace, warnings: list[str]) -> int:
    """Give ``twin`` the labels the re-imported file carries, if it has no imported labels yet (a run first
    imported bare, then again from a labelled dataset). Returns the gold labels written."""
    if not parsed.gold:
        return 0
    source = LabelSource.IMPORTED
    if (
        GoldLabel.objects.filter(trace=twin, source=source).exists()
        or ErrorLabel.objects.filter(trace=twin, source=source).exists()
    ):
        return 0
    return gold_write(trace=twin, labels=parsed.gold, source=source, warnings=warnings)
