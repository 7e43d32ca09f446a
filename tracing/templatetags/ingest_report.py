"""The upload pages' import totals: what a batch of jobs imported and what it skipped as already in the project."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template

from ..models import JobStatus

register = template.Library()


@register.simple_tag
def import_totals(jobs: Iterable[Any]) -> dict[str, int]:
    """``{"imported": n, "duplicates": m}`` over finished jobs. A job marked "already imported" counts every trace it
    names as a duplicate (its bytes were seen before: it has no report of its own, or one of linked traces)."""
    imported = duplicates = 0
    for job in jobs:
        report = job.report or {}
        if job.status == JobStatus.SUCCEEDED:
            imported += report.get("traces", 0)
            duplicates += report.get("duplicates", 0)
        elif job.status == JobStatus.DUPLICATE:
            duplicates += report.get("traces", len(job.trace_ids)) + report.get("duplicates", 0)
    return {"imported": imported, "duplicates": duplicates}
