"""A dataset export through a real Celery worker: queued by the page, written by the worker, downloaded."""

from __future__ import annotations

import json

import pytest

from annotations.models import DatasetExport, ExportStatus
from tests.conftest import import_now, incoming_path, sample_file, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_worker_builds_an_export_started_on_the_page(celery_worker, owner_client, project):
    paths = [sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")]
    import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
    response = owner_client.post(f"/annotations/projects/{project.slug}/exports/", {
        "format": "whowhen-jsonl", "sources": ["imported"], "seed": "1", "test_percent": "50"})
    assert response.status_code == 302
    export = DatasetExport.objects.get(project=project)

    export = wait_for(lambda: DatasetExport.objects.filter(pk=export.pk, status__in=[
        ExportStatus.SUCCEEDED, ExportStatus.FAILED]).first())
    assert export.status == ExportStatus.SUCCEEDED, export.error
    assert export.attempts == 1 and export.manifest["split_sizes"] == {"train": 1, "test": 1}
    download = owner_client.get(f"/annotations/exports/{export.pk}/download/")
    documents = [json.loads(line) for line in b"".join(download.streaming_content).decode().splitlines()]
    assert sorted(d["trace_name"] for d in documents) == sorted(f"{p.parent.name}/{p.stem}" for p in paths)
    page = owner_client.get(f"/annotations/projects/{project.slug}/exports/")
    assert b"Download" in page.content and b'hx-trigger="every 1s"' not in page.content
