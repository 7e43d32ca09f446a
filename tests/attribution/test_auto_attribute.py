"""Automatic attribution: traces that arrive from outside are marked in the transaction that writes them (only when the
project asks for it), and a sweep turns the marks of complete traces into one run with the project's default method --
failed traces only, or all; a method that cannot start says why and keeps the marks; an OTLP trace waits until it is
settled and no build of it is pending."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from attribution import services
from attribution.models import (
    AttributionRun,
    AutoAttributePending,
    ProjectAttribution,
    RunStatus,
    Verdict,
)
from attribution.tasks import auto_attribute_task
from tests.conftest import import_now, incoming_bytes, incoming_path, wait_for, whowhen_files
from tracing.models import AuditEvent, OtlpPendingBuild, Trace
from tracing.services.otlp_build import OTLP_FORMAT

LATER = timedelta(minutes=5)  # a sweep this long after the traces arrived finds them settled


def _import(project, n: int = 3) -> list[int]:
    for path in whowhen_files()[:n]:
        import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
    return list(Trace.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))


def _succeeded_run(project, name: str = "fine") -> int:
    document = {
        "question": "2 + 2?",
        "ground_truth": "4",
        "is_correct": True,
        "history": [
            {"role": "user", "name": "Asker", "content": "2 + 2?"},
            {"name": "Solver", "content": "4"},
        ],
    }
    (job,) = import_now(project, incoming_bytes(f"{name}.json", json.dumps(document).encode()))
    return job.trace_ids[0]


@pytest.mark.django_db
def test_traces_are_marked_only_while_the_project_asks_for_it(project):
    _import(project, 1)
    assert not AutoAttributePending.objects.exists()
    services.auto_attribute_set(project=project, mode="failed", method="heuristic")
    ids = _import(project, 3)
    assert set(AutoAttributePending.objects.values_list("trace_id", flat=True)) == set(ids[1:])
    services.auto_attribute_set(project=project, mode="off")
    assert not AutoAttributePending.objects.exists()  # turning it off forgets the waiting ones
    assert AuditEvent.objects.filter(action="attribution.auto").count() == 2


@pytest.mark.django_db
def test_a_sweep_turns_settled_failed_traces_into_one_run_with_the_default_method(project):
    services.auto_attribute_set(project=project, mode="failed", method="heuristic")
    failed = _import(project, 3)
    fine = _succeeded_run(project)
    (run,) = services.auto_attribute_sweep(enqueue=False)  # a file's traces are complete when they commit
    assert (
        run.method == "heuristic" and run.trace_ids == failed and run.description == "automatic: 3 new traces"
    )
    assert fine not in run.trace_ids
    assert not AutoAttributePending.objects.exists()  # the succeeded one is done with too
    assert services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER) == []


@pytest.mark.django_db
def test_every_trace_mode_takes_the_succeeded_ones_too(project):
    services.auto_attribute_set(project=project, mode="all", method="heuristic")
    ids = _import(project, 2) + [_succeeded_run(project)]
    (run,) = services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER)
    assert run.trace_ids == sorted(ids)


@pytest.mark.django_db
def test_a_method_that_cannot_start_keeps_the_marks_and_says_why(project):
    services.auto_attribute_set(project=project, mode="failed", method="all_at_once")  # no model configured
    ids = _import(project, 2)
    assert services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER) == []
    settings = ProjectAttribution.objects.get(project=project)
    assert "needs a model" in settings.auto_error
    assert AutoAttributePending.objects.count() == len(ids)
    services.auto_attribute_set(project=project, mode="failed", method="heuristic")
    (run,) = services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER)
    assert run.trace_ids == ids and ProjectAttribution.objects.get(project=project).auto_error == ""


@pytest.mark.django_db
def test_an_otlp_trace_still_building_waits_for_the_next_sweep(project):
    services.auto_attribute_set(project=project, mode="all", method="heuristic")
    ids = _import(project, 2)
    growing = Trace.objects.get(pk=ids[0])
    Trace.objects.filter(pk=growing.pk).update(source_format=OTLP_FORMAT, external_id="abc123")
    (run,) = services.auto_attribute_sweep(
        enqueue=False
    )  # the file's trace at once; the streamed one is too new
    assert run.trace_ids == [ids[1]]
    OtlpPendingBuild.objects.create(project=project, trace_id="abc123", queued_at=timezone.now())
    assert services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER) == []  # still building
    assert list(AutoAttributePending.objects.values_list("trace_id", flat=True)) == [ids[0]]
    OtlpPendingBuild.objects.all().delete()
    (run,) = services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER)
    assert run.trace_ids == [ids[0]]


@pytest.mark.django_db
def test_owners_set_it_on_the_runs_page(project, owner_client):
    page = owner_client.get(reverse("attribution:run_list", args=[project.slug])).content.decode()
    assert "Automatic attribution" in page and "<strong>Off</strong>" in page
    response = owner_client.post(
        reverse("attribution:run_auto", args=[project.slug]),
        {"mode": "failed", "method": "heuristic"},
        follow=True,
    )
    page = response.content.decode()
    assert "New failed traces are attributed automatically with heuristic." in page
    assert "<strong>Failed traces</strong> with <strong>heuristic</strong>" in page
    bad = owner_client.post(
        reverse("attribution:run_auto", args=[project.slug]), {"mode": "sometimes"}, follow=True
    )
    assert "sometimes" in bad.content.decode()
    assert ProjectAttribution.objects.get(project=project).auto_attribute == "failed"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_uploaded_failures_are_attributed_on_a_real_worker_without_anyone_asking(project, celery_worker):
    services.auto_attribute_set(project=project, mode="failed", method="heuristic")
    ids = _import(project, 3)
    AutoAttributePending.objects.update(arrived_at=timezone.now() - LATER)  # settled, as minutes later
    auto_attribute_task.delay()  # what Celery beat sends every half minute
    run = wait_for(
        lambda: AttributionRun.objects.filter(project=project, status=RunStatus.SUCCEEDED).first(),
        timeout=90,
        worker=celery_worker,
    )
    assert run.trace_ids == ids and run.description.startswith("automatic")
    assert Verdict.objects.filter(run=run, status="ok").count() == len(ids)


@pytest.mark.django_db
def test_traces_built_from_otlp_spans_are_marked_by_both_build_paths(project):
    from tests.tracing.test_otlp_build_many import TRACES, store, trees
    from tracing.services.otlp import otlp_trace_rebuild, otlp_traces_rebuild

    services.auto_attribute_set(project=project, mode="all", method="heuristic")
    spans = [item for tree in trees() for item in tree.by_end()]
    store(project, spans)
    otlp_traces_rebuild(
        project_id=project.pk, trace_ids=[t.hex() for t in TRACES[:3]]
    )  # batched first builds
    for trace_id in TRACES[3:]:
        otlp_trace_rebuild(project_id=project.pk, trace_id=trace_id.hex())  # one by one
    built = set(Trace.objects.filter(project=project).values_list("pk", flat=True))
    assert len(built) == len(TRACES)
    assert set(AutoAttributePending.objects.values_list("trace_id", flat=True)) == built
    assert services.auto_attribute_sweep(enqueue=False) == []  # streamed traces settle first
    (run,) = services.auto_attribute_sweep(enqueue=False, now=timezone.now() + LATER)
    assert sorted(run.trace_ids) == sorted(built)
