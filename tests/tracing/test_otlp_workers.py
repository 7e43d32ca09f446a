"""OTLP builds on real Celery workers: two workers build two traces of one project at once (builds are serialised
per trace, never per project), and a worker killed in the middle of a build leaves no half-built trace: the build
is redelivered and the trace ends complete."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import WorkerProcess, test_database_url, wait_for
from tests.tracing.test_otlp_incremental import SpanTree, parser_steps, request, steps_of
from tracing import services
from tracing.models import OtlpPendingBuild, OtlpSpan, Trace
from tracing.services.otlp import otlp_builds_mark, otlp_builds_reap, otlp_spans_store_protobuf
from tracing.tasks import rebuild_otlp_trace_task

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TRACE_A = bytes.fromhex("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
TRACE_B = bytes.fromhex("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")


@pytest.fixture
def second_worker(tmp_path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path / "second.log", name="second")
    worker.start()
    yield worker
    worker.stop()


class TraceLock:
    """What a build of a trace holds, held from another connection: the advisory lock on (project, trace)."""

    def __init__(self, project_id: int, trace_id: str) -> None:
        self.conn = psycopg.connect(test_database_url(), autocommit=True)
        self.key = f"{project_id}:{trace_id}"
        self.conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 17))", [self.key])

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 17))", [self.key])
        self.conn.close()


def post(client, token: str, tree: SpanTree) -> None:
    response = client.generic(
        "POST",
        "/v1/traces",
        request(tree.by_end()).SerializeToString(),
        content_type="application/x-protobuf",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 200


def built(project, trace_id: bytes, steps: int):
    return Trace.objects.filter(project=project, external_id=trace_id.hex(), step_count=steps).first()


def test_two_workers_build_two_traces_of_one_project_at_once(celery_worker, second_worker, client, project):
    token = services.api_token_create(project=project, name="otel", user=None)[1]
    tree_a, tree_b = SpanTree(trace_id=TRACE_A, seed=1), SpanTree(trace_id=TRACE_B, seed=2)
    expected_a, expected_b = parser_steps(tree_a), parser_steps(tree_b)
    lock = TraceLock(project.pk, TRACE_A.hex())  # a build of A in progress...
    try:
        post(client, token, tree_a)
        post(client, token, tree_b)
        # ...holds up A's build on one worker, while the other builds B of the same project.
        trace_b = wait_for(lambda: built(project, TRACE_B, len(expected_b)))
        assert steps_of(trace_b) == expected_b
        assert not Trace.objects.filter(project=project, external_id=TRACE_A.hex()).exists()
        assert OtlpSpan.objects.filter(project=project, trace_id=TRACE_A.hex(), built=False).count() == len(
            tree_a.spans
        )
    finally:
        lock.release()
    trace_a = wait_for(lambda: built(project, TRACE_A, len(expected_a)))
    assert steps_of(trace_a) == expected_a


def test_a_worker_killed_in_the_middle_of_a_build_leaves_the_trace_complete(celery_worker, project):
    tree = SpanTree(trace_id=TRACE_A, agents=6, calls=8, seed=4)
    first, rest = tree.by_end()[:20], tree.by_end()[20:]
    otlp_spans_store_protobuf(project=project, message=request(first))
    assert otlp_builds_mark(project_id=project.pk, trace_ids=[TRACE_A.hex()])
    rebuild_otlp_trace_task.delay(project.pk, TRACE_A.hex())
    # The first part is built, so the next build is incremental.
    wait_for(
        lambda: (
            Trace.objects.filter(project=project).exists()
            and not OtlpSpan.objects.filter(project=project, built=False).exists()
        )
    )
    otlp_spans_store_protobuf(project=project, message=request(rest))
    lock = TraceLock(project.pk, TRACE_A.hex())
    try:
        assert otlp_builds_mark(project_id=project.pk, trace_ids=[TRACE_A.hex()])
        rebuild_otlp_trace_task.delay(project.pk, TRACE_A.hex())
        # The build started (it cleared the pending mark) and waits inside its transaction: kill the worker there.
        wait_for(lambda: not OtlpPendingBuild.objects.filter(project=project).exists())
        celery_worker.kill()
    finally:
        lock.release()
    assert OtlpSpan.objects.filter(project=project, built=False).count() == len(rest)  # nothing half-written
    celery_worker.start()  # the unacknowledged task comes back once the broker's visibility timeout passes
    expected = parser_steps(tree)
    trace = wait_for(lambda: built(project, TRACE_A, len(expected)))
    assert steps_of(trace) == expected
    assert Trace.objects.filter(project=project).count() == 1


def test_the_reaper_queues_builds_that_went_missing(project):
    tree = SpanTree(trace_id=TRACE_B, agents=1, calls=2)
    otlp_spans_store_protobuf(
        project=project, message=request(tree.by_start())
    )  # stored, but no build queued
    sent: list[tuple[int, str]] = []
    assert otlp_builds_reap(stale_after=3600, enqueue=lambda p, t: sent.append((p, t))) == {
        "resent": 0,
        "orphans": 0,
    }
    OtlpSpan.objects.filter(project=project).update(received_at="2000-01-01T00:00:00Z")
    assert otlp_builds_reap(stale_after=3600, enqueue=lambda p, t: sent.append((p, t)))["orphans"] == 1
    assert sent == [(project.pk, TRACE_B.hex())]
    OtlpPendingBuild.objects.filter(project=project).update(queued_at="2000-01-01T00:00:00Z")
    assert otlp_builds_reap(stale_after=3600, enqueue=lambda p, t: sent.append((p, t)))["resent"] == 1


def test_a_worker_killed_in_the_middle_of_a_request_s_builds_finishes_them_once(
    client, celery_worker, project
):
    """One request, three new traces, one task: the two the batch could lock are written together; the third,
    whose lock another build holds, is built singly and waits -- kill the worker there. The redelivered task finds
    the two built (nothing written twice) and builds the third."""
    token = services.api_token_create(project=project, name="otel", user=None)[1]
    trees = [SpanTree(trace_id=bytes([k]) * 16, agents=2, calls=3, seed=k) for k in (1, 2, 3)]
    held = trees[2].trace_id.hex()
    lock = TraceLock(project.pk, held)
    try:
        response = client.generic(
            "POST",
            "/v1/traces",
            request([item for tree in trees for item in tree.by_end()]).SerializeToString(),
            content_type="application/x-protobuf",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 200
        for tree in trees[:2]:
            wait_for(lambda tree=tree: built(project, tree.trace_id, len(parser_steps(tree))))
        celery_worker.kill()
    finally:
        lock.release()
    assert not Trace.objects.filter(project=project, external_id=held).exists()
    celery_worker.start()  # the unacknowledged task comes back once the broker's visibility timeout passes
    wait_for(lambda: built(project, trees[2].trace_id, len(parser_steps(trees[2]))))
    for tree in trees:
        assert steps_of(Trace.objects.get(project=project, external_id=tree.trace_id.hex())) == parser_steps(
            tree
        )
    assert Trace.objects.filter(project=project).count() == 3
