"""A worker killed with SIGKILL in the middle of a run: its unacknowledged task is redelivered to the restarted
worker, and every trace ends with exactly one verdict."""

from __future__ import annotations

import time

import pytest

from attribution import services
from attribution.models import AttributionRun, RunStatus, Verdict
from tests.conftest import import_now, incoming_path, wait_for, whowhen_files

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_run_survives_a_worker_killed_mid_run_with_one_verdict_per_trace(project, celery_worker):
    # Every Who&When run we have: the heuristic writes a batch in a fraction of a second, so a short run could end
    # between the first verdict and the kill.
    paths = whowhen_files()
    jobs = import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
    ids = [j.trace_ids[0] for j in jobs]
    run = services.run_create(project=project, method="heuristic", trace_ids=ids)
    deadline = time.monotonic() + 60
    while not Verdict.objects.filter(run=run).exists():  # the first committed batch, polled closely
        assert time.monotonic() < deadline, "no verdict after 60 s"
        time.sleep(0.01)
    celery_worker.kill()
    assert Verdict.objects.filter(run=run).count() < len(ids), (
        "the run finished before the kill: use more traces"
    )
    celery_worker.start()
    done = wait_for(
        lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(),
        timeout=90,
        worker=celery_worker,  # a stalled run says why: the end of the worker's log
    )
    assert done.done == done.total == len(ids)
    assert Verdict.objects.filter(run=run).count() == len(ids)
    assert set(Verdict.objects.filter(run=run).values_list("trace_id", flat=True)) == set(ids)


def test_the_restore_lock_a_killed_worker_leaves_behind_expires_within_a_minute():
    """Workers put a dead worker's tasks back under one lock in Redis. A worker killed during that sweep never
    releases it, and until it expires no task is restored (kombu's default is five minutes): the app's broker
    options keep it to a minute."""
    from config.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos = channel.qos
        assert qos.unacked_mutex_expire <= 60
        client = channel.client
        lock = client.lock(qos.unacked_mutex_key + ":test", timeout=qos.unacked_mutex_expire)
        assert lock.acquire(blocking=False)  # acquired as a sweep does, and never released: the worker died
        try:
            assert 0 < client.ttl(qos.unacked_mutex_key + ":test") <= 60
        finally:
            client.delete(qos.unacked_mutex_key + ":test")
