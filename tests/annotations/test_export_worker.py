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
    response = owner_client.post(
        f"/annotations/projects/{project.slug}/exports/",
        {"format": "whowhen-jsonl", "sources": ["imported"], "seed": "1", "test_percent": "50"},
    )
    assert response.status_code == 302
    export = DatasetExport.objects.get(project=project)

    export = wait_for(
        lambda: DatasetExport.objects.filter(
            pk=export.pk, status__in=[ExportStatus.SUCCEEDED, ExportStatus.FAILED]
        ).first()
    )
    assert export.status == ExportStatus.SUCCEEDED, export.error
    assert export.attempts == 1 and export.manifest["split_sizes"] == {"train": 1, "test": 1}
    download = owner_client.get(f"/annotations/exports/{export.pk}/download/")
    documents = [json.loads(line) for line in b"".join(download.streaming_content).decode().splitlines()]
    assert sorted(d["trace_name"] for d in documents) == sorted(f"{p.parent.name}/{p.stem}" for p in paths)
    page = owner_client.get(f"/annotations/projects/{project.slug}/exports/")
    assert b"Download" in page.content and b'hx-trigger="every 1s"' not in page.content


def synthetic_traces(project, traces: int, steps: int) -> None:
    from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
    from tracing.services import trace_create_from_parsed

    body = "Read the page and copied the figure from row 3 of the table. " * 8
    for t in range(traces):
        parsed = ParsedTrace(
            name=f"synthetic/{t:03d}",
            source_format="whowhen",
            question=f"question {t}",
            steps=[
                ParsedStep(
                    speaker=f"agent{i % 3}", agent=f"agent{i % 3}", kind="message", content=f"{i}: {body}"
                )
                for i in range(steps)
            ],
            gold=[ParsedGold(agent="agent1", step=steps // 2, reason="synthetic")],
        )
        trace_create_from_parsed(project=project, upload=None, ordinal=t, parsed=parsed)


def test_an_export_survives_a_worker_killed_mid_write_and_is_written_whole_once(celery_worker, project):
    import zipfile
    from pathlib import Path

    from django.conf import settings

    from annotations import services
    from annotations.selectors import ExportFilters

    synthetic_traces(project, traces=80, steps=1000)
    export = services.export_create(project=project, fmt="whowhen-zip", filters=ExportFilters(), user=None)
    wait_for(lambda: DatasetExport.objects.filter(pk=export.pk, steps_done__gt=0).first(), timeout=60)
    celery_worker.kill()
    export.refresh_from_db()
    assert export.status == ExportStatus.RUNNING, "the export finished before the kill: use more steps"
    celery_worker.start()  # the unacknowledged task comes back after the broker's visibility timeout

    done = wait_for(
        lambda: DatasetExport.objects.filter(
            pk=export.pk, status__in=[ExportStatus.SUCCEEDED, ExportStatus.FAILED]
        ).first(),
        timeout=120,
    )
    assert done.status == ExportStatus.SUCCEEDED, done.error
    assert done.attempts == 2 and done.steps_done == done.steps_total == 80_000
    with zipfile.ZipFile(Path(settings.MEDIA_ROOT) / done.file.name) as archive:
        cases = [n for n in archive.namelist() if not n.startswith(".")]
        assert len(cases) == 80
        assert all(len(json.loads(archive.read(n))["history"]) == 1000 for n in cases)
