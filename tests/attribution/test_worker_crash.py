"""A worker killed with SIGKILL in the middle of a run: the run completes on the restarted worker with exactly one
verdict per trace.

Its unacknowledged task is put back by the broker once the visibility timeout passes. One window no broker setting
closes: Redis hands a task over (BRPOP) a moment before the worker records it as unacknowledged, and a kill in that
moment loses the message outright (kombu's Redis transport, celery/kombu#305; measured here: 1 run in ~20, the
broker holding nothing afterwards). The reaper covers it -- Celery beat restarts a run whose heartbeat went quiet,
and the restart queues only the traces still without a verdict -- so the test plays beat once the broker has had
its chance."""

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
        timeout=120,
        worker=celery_worker,  # a stalled run says why: the end of the worker's log
        reap_after=30,  # the broker's redelivery comes after the test worker's 8 s visibility timeout
    )
    assert done.done == done.total == len(ids)
    assert Verdict.objects.filter(run=run).count() == len(ids)
    assert set(Verdict.objects.filter(run=run).values_list("trace_id", flat=True)) == set(ids)


def test_a_run_whose_tasks_the_broker_lost_is_restarted_by_the_reaper(project, celery_worker):
    """The window above, made certain: the worker is killed and every task of the run still in Redis -- queued or
    unacknowledged -- is dropped, as a kill between BRPOP and the unacknowledged record (or a Redis restart without
    persistence) drops them. Nothing comes back from the broker; the reaper restarts the run from its verdicts."""
    import json

    import redis
    from django.conf import settings

    paths = whowhen_files()
    jobs = import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
    ids = [j.trace_ids[0] for j in jobs]
    run = services.run_create(project=project, method="heuristic", trace_ids=ids)
    deadline = time.monotonic() + 60
    while not Verdict.objects.filter(run=run).exists():
        assert time.monotonic() < deadline, "no verdict after 60 s"
        time.sleep(0.01)
    celery_worker.kill()
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    client.delete(queue)
    for tag, raw in client.hgetall("unacked").items():
        if json.loads(raw)[2] == queue:  # [message, exchange, routing key]: only this session's queue
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    written = Verdict.objects.filter(run=run).count()
    assert written < len(ids), "the run finished before the kill: use more traces"
    celery_worker.start()
    time.sleep(3)
    assert Verdict.objects.filter(run=run).count() == written  # nothing left to redeliver

    done = wait_for(
        lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(),
        timeout=90,
        worker=celery_worker,
        reap_after=0,
    )
    assert done.done == done.total == len(ids) and done.attempts >= 2  # started again by the reaper
    assert Verdict.objects.filter(run=run).count() == len(ids)


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
