"""A project's default learned model is retrained as verified labels arrive: once its training projects gained the
project's ``retrain_after`` labelled traces, Celery beat queues the next version, which replaces the default when it
is trained -- unless someone chose another default meanwhile. One retrain at a time, a failed one is not retried
until more labels arrive, 0 turns it off; only owners and annotators change the setting."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from attribution.learning.selectors import labelled_traces_count
from attribution.learning.services import (
    attributor_create,
    attributor_make_default,
    attributor_train,
    attributors_retrain_due,
)
from attribution.models import AttributorModel, AttributorStatus, ProjectAttribution
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import AuditEvent, JobStatus, Role

pytestmark = pytest.mark.django_db


def import_labelled(project, files) -> None:
    jobs = import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files))
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]


@pytest.fixture
def files():
    found = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"] or whowhen_files()
    if len(found) < 12:
        pytest.skip("needs 12 labelled Who&When runs (../shared/data beside the checkout)")
    return found


@pytest.fixture
def default_model(project, owner, files) -> AttributorModel:
    import_labelled(project, files[:6])
    row = attributor_create(project=project, name="triage", user=owner, folds=3, enqueue=False)
    row = attributor_train(model_id=row.pk)
    assert row.status == AttributorStatus.SUCCEEDED, row.error
    assert row.labelled_at_queue == 6 == labelled_traces_count(project_ids=[project.pk])
    attributor_make_default(model=row, actor=owner)
    ProjectAttribution.objects.filter(project=project).update(retrain_after=3)
    return row


def test_new_labels_queue_a_retrain_that_becomes_the_default_once_trained(
    client, owner, project, files, default_model
):
    import_labelled(project, files[6:8])
    assert attributors_retrain_due(enqueue=False) == []  # 2 new labelled traces, 3 wanted
    import_labelled(project, files[8:9])
    (queued,) = attributors_retrain_due(enqueue=False)
    assert (queued.name, queued.version, queued.retrained_from_id) == ("triage", 2, default_model.pk)
    assert queued.labelled_at_queue == 9 and queued.label_sources == default_model.label_sources
    assert queued.folds == default_model.folds and queued.created_by is None
    assert attributors_retrain_due(enqueue=False) == []  # one retrain of a model at a time

    trained = attributor_train(model_id=queued.pk)
    assert trained.status == AttributorStatus.SUCCEEDED and trained.n_traces == 9
    assert ProjectAttribution.objects.get(project=project).attributor_id == trained.pk
    event = AuditEvent.objects.filter(action="attributor.default").latest("pk")
    assert event.details == {"model_id": trained.pk, "automatic_retrain_of": default_model.pk}
    assert attributors_retrain_due(enqueue=False) == []  # nothing new since v2 was queued
    client.force_login(owner)
    page = client.get(f"/attribution/models/{trained.pk}/").content.decode()
    assert (
        "retrained automatically from" in page and f'href="/attribution/models/{default_model.pk}/"' in page
    )


def test_a_failed_retrain_waits_for_more_labels_and_a_chosen_default_stands(
    project, owner, files, default_model
):
    import_labelled(project, files[6:9])
    (queued,) = attributors_retrain_due(enqueue=False)
    AttributorModel.objects.filter(pk=queued.pk).update(status=AttributorStatus.FAILED, error="killed")
    assert attributors_retrain_due(enqueue=False) == []  # not again on every tick
    import_labelled(project, files[9:12])
    (again,) = attributors_retrain_due(enqueue=False)
    assert again.version == 3 and again.retrained_from_id == default_model.pk

    # Someone makes another model the default while the retrain trains: their choice stands.
    other = attributor_train(
        model_id=attributor_create(project=project, name="other", user=owner, folds=3, enqueue=False).pk
    )
    attributor_make_default(model=other, actor=owner)
    assert attributor_train(model_id=again.pk).status == AttributorStatus.SUCCEEDED
    assert ProjectAttribution.objects.get(project=project).attributor_id == other.pk


def test_zero_turns_retraining_off(project, files, default_model):
    ProjectAttribution.objects.filter(project=project).update(retrain_after=0)
    import_labelled(project, files[6:12])
    assert attributors_retrain_due(enqueue=False) == []
    assert "retrain-due" in django_settings.CELERY_BEAT_SCHEDULE  # beat asks every few minutes


def test_owners_and_annotators_set_it_viewers_read_it(client, make_user, project, owner, default_model):
    url = f"/attribution/projects/{project.slug}/models/retrain/"
    client.force_login(owner)
    page = client.get(f"/attribution/projects/{project.slug}/models/").content.decode()
    assert 'name="retrain_after"' in page and 'value="3"' in page
    assert "queued when its training projects held 6 labelled traces; they hold 6 now" in page
    response = client.post(url, {"retrain_after": "25"})
    assert response.status_code == 302
    assert ProjectAttribution.objects.get(project=project).retrain_after == 25
    assert AuditEvent.objects.filter(action="attributor.retrain_after", target="25").exists()
    client.post(url, {"retrain_after": "-1"})  # refused with a message, nothing changes
    assert ProjectAttribution.objects.get(project=project).retrain_after == 25

    viewer = make_user("viewer-member")
    project.memberships.create(user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.post(url, {"retrain_after": "1"}).status_code == 403
    assert ProjectAttribution.objects.get(project=project).retrain_after == 25
    page = client.get(f"/attribution/projects/{project.slug}/models/").content.decode()
    assert 'name="retrain_after"' not in page and "retrained after 25 new labelled traces" in page

    annotator = make_user("annotator-member")
    project.memberships.create(user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    assert client.post(url, {"retrain_after": "0"}).status_code == 302
    assert ProjectAttribution.objects.get(project=project).retrain_after == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_beat_retrains_on_a_real_worker_and_the_new_version_becomes_the_default(
    project, files, default_model, celery_worker
):
    from attribution.tasks import retrain_due_task
    from tests.conftest import wait_for

    import_labelled(project, files[6:9])
    retrain_due_task.delay()  # what Celery beat sends every CULPRIT_RETRAIN_EVERY seconds
    settings = wait_for(
        lambda: (
            ProjectAttribution.objects.exclude(attributor_id=default_model.pk).filter(project=project).first()
        ),
        timeout=90,
        worker=celery_worker,
    )
    new = settings.attributor
    assert (new.version, new.status, new.retrained_from_id) == (
        2,
        AttributorStatus.SUCCEEDED,
        default_model.pk,
    )
    assert new.n_traces == 9 and new.cv["n"] == 9
