"""Scaling out is "start more workers": two worker processes share one broker queue and split a run between them,
each trace attributed exactly once."""

from __future__ import annotations

import re

import pytest

from attribution import services
from attribution.models import AttributionRun, RunStatus, Verdict
from tests.conftest import WorkerProcess, import_now, incoming_path, wait_for, whowhen_files

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_two_workers_share_one_broker_and_split_a_run(project, celery_worker, tmp_path):
    second = WorkerProcess(tmp_path / "second.log", name="second")
    second.start()
    try:
        paths = whowhen_files()[:30]
        ids = [
            j.trace_ids[0]
            for j in import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
        ]
        offset = celery_worker.log.stat().st_size  # the first worker's log holds earlier tests too
        run = services.run_create(project=project, method="heuristic", trace_ids=ids)
        done = wait_for(
            lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(), timeout=120
        )
    finally:
        second.stop()
    assert done.done == len(ids) == Verdict.objects.filter(run=run).count()
    # A heuristic run goes out in batches (attribute_traces), at least eight of them whatever its size.
    pattern = re.compile(rb"Task attribution\.attribute_traces?\[[^\]]+\] succeeded")
    first_log = celery_worker.log.read_bytes()[offset:]
    assert len(pattern.findall(second.log.read_bytes())) >= 1, "the second worker took no task"
    assert len(pattern.findall(first_log)) >= 1, "the first worker took no task"
