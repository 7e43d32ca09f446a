"""Upload through the view and let a real Celery worker process (real Redis broker, real PostgreSQL) import."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import sample_file, wait_for_jobs
from tracing.models import IngestJob, JobStatus, Step, Trace

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_an_upload_is_imported_by_a_real_worker(celery_worker, owner_client, project):
    good = sample_file("Algorithm-Generated")
    files = [SimpleUploadedFile(good.name, good.read_bytes()), SimpleUploadedFile("bad.json", b"[not json")]
    response = owner_client.post(reverse("tracing:upload", args=[project.slug]), {"files": files})
    assert response.status_code == 302

    jobs = wait_for_jobs(list(IngestJob.objects.filter(project=project)))
    by_name = {j.filename: j for j in jobs}
    assert by_name[good.name].status == JobStatus.SUCCEEDED, by_name[good.name].error
    assert by_name["bad.json"].status == JobStatus.FAILED
    assert by_name["bad.json"].error.startswith("bad.json: ")
    trace = Trace.objects.get(pk=by_name[good.name].trace_ids[0])
    assert Step.objects.filter(trace=trace).count() == trace.step_count > 0

    page = owner_client.get(response["Location"]).content.decode()
    assert f'href="/traces/{trace.pk}/"' in page
    assert "every 1s" not in page  # finished: the page stops polling
