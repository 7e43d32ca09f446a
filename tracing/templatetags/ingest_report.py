"""The upload pages' import totals: what a batch of jobs imported and what it skipped as already in the project."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django import template

from ..models import JobStatus

register = template.Library()


@register.simple_tag
def import_totals(jobs: Iterable[Any]) -> dict[str, int]:
    """``{"imported": n, "duplicates": m, "failed": f}`` over finished jobs (``failed``: files). A job marked "already
    imported" counts every trace it names as a duplicate (its bytes were seen before: it has no report of its own, or
    one of linked traces)."""
    imported = duplicates = failed = 0
    for job in jobs:
        report = job.report or {}
        if job.status == JobStatus.FAILED:
            failed += 1
        elif job.status == JobStatus.SUCCEEDED:
            imported += report.get("traces", 0)
            duplicates += report.get("duplicates", 0)
        elif job.status == JobStatus.DUPLICATE:
            duplicates += report.get("traces", len(job.trace_ids)) + report.get("duplicates", 0)
    return {"imported": imported, "duplicates": duplicates, "failed": failed}


# What varies between warnings of one kind: quoted names and ids, and numbers (a step, a line, a count).
_VARYING = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


@register.filter
def warning_groups(warnings: Iterable[str]) -> list[dict[str, Any]]:
    """An import report's warnings grouped by kind, in order of first appearance: ``[{"first": message, "more":
    [the others like it]}]``. Two warnings are of one kind when they differ only in quoted values and numbers, so a
    label file for fifty runs the project does not hold says "no trace … yet" once, with the other 49 folded under
    it, instead of a wall of lines."""
    groups: dict[str, dict[str, Any]] = {}
    for message in warnings:
        text = str(message)
        key = _VARYING.sub("…", text)
        group = groups.get(key)
        if group is None:
            groups[key] = {"first": text, "more": []}
        else:
            group["more"].append(text)
    return list(groups.values())
