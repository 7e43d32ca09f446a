"""Learned attribution through a real Celery worker: a heuristic run started from the web refits the project's
calibrated priors before its first trace, and the learned method runs on the worker with the project's default."""

from __future__ import annotations

import pytest

from attribution import services
from attribution.learning.calibration import MIN_LABELS
from attribution.learning.services import attributor_create, attributor_make_default, attributor_train
from attribution.models import AttributionRun, ProjectAttribution, RunStatus, Verdict
from tests.conftest import import_now, incoming_path, wait_for, whowhen_files
from tracing.models import Trace

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _labelled(project, n):
    for path in whowhen_files()[:n]:
        import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
    return list(Trace.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))


def _finished(run):
    return wait_for(
        lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(), timeout=90
    )


def test_a_worker_heuristic_run_uses_priors_calibrated_on_the_projects_labels(project, celery_worker):
    ids = _labelled(project, MIN_LABELS + 1)
    assert not ProjectAttribution.objects.filter(project=project).exists()
    run = services.run_create(project=project, method="heuristic", trace_ids=ids[:2])
    _finished(run)
    settings = ProjectAttribution.objects.get(project=project)
    assert settings.calibrated_at is not None and len(settings.calibration["labels"]) == MIN_LABELS + 1
    assert all(v.details["priors"]["active"] for v in Verdict.objects.filter(run=run))


def test_the_learned_method_runs_on_the_worker_with_the_projects_default(project, celery_worker):
    ids = _labelled(project, 8)
    model = attributor_train(model_id=attributor_create(project=project, name="w", folds=2, enqueue=False).pk)
    attributor_make_default(model=model)
    run = services.run_create(project=project, method="learned", trace_ids=ids)
    run = _finished(run)
    assert run.failed == 0 and Verdict.objects.filter(run=run, status="ok").count() == len(ids)
