"""Building a dataset in a real browser: choose filters and a format, wait for the worker, download the file and
read it back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import log_in
from tests.conftest import import_now, incoming_path, sample_file
from tracing import services
from tracing.models import GoldLabel, LabelSource, Role, Trace

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _shot(page, name: str) -> None:
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_an_owner_builds_an_adjudicated_export_downloads_it_and_finds_the_label(
    live_server, celery_worker, page, tmp_path
):
    user = get_user_model().objects.create_user("grace", password="a-long-test-password")
    project = services.project_create(name="Curation", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    paths = [sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")]
    import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in paths])
    chosen = Trace.objects.get(project=project, name=f"Hand-Crafted/{paths[0].stem}")
    GoldLabel.objects.create(
        trace=chosen,
        agent_name="Orchestrator",
        step_index=2,
        reason="settled by the owner",
        source=LabelSource.ADJUDICATED,
    )

    log_in(page, live_server.url, "grace")
    page.wait_for_url(f"**/projects/{project.slug}/")
    page.click("nav.tabs >> text=Export")
    page.wait_for_selector("#export-form")
    assert "2 cases" in page.inner_text("#export-preview")

    for source in ("imported", "annotator", "injected", "counterfactual"):
        page.uncheck(f"input[name=sources][value={source}]")
    page.check("input[name=verified_only]")
    # The preview follows the filters as they change (htmx): one adjudicated case among the two traces.
    page.wait_for_function(
        "() => document.querySelector('#export-preview').textContent.replace(/\\s+/g, ' ').includes(' 1 case · ')"
    )
    assert "adjudicated 1" in page.inner_text("#export-preview")
    # Under the counts, the export's first cases: here the one adjudicated trace, with its label and a link to it.
    rows = page.locator("#export-preview table.export-sample tbody tr")
    assert rows.count() == 1
    assert rows.first.inner_text().split("\t")[:3] == [chosen.name, "Orchestrator @ step 2", "adjudicated"]
    assert rows.first.locator("a").get_attribute("href") == f"/traces/{chosen.pk}/"
    page.fill("input[name=seed]", "4")
    page.fill("input[name=test_percent]", "0")
    page.select_option("select[name=format]", "whowhen-jsonl")
    page.click("#start-export")

    row = page.locator(".export[data-status=succeeded]")
    row.wait_for(timeout=60_000)
    _shot(page, "export-ready")
    assert "adjudicated 1" in row.inner_text() and "train 1" in row.inner_text()
    with page.expect_download() as info:
        row.locator("a.download").click()
    download = info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    assert saved.suffix == ".jsonl"
    (document,) = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()]
    original = json.loads(paths[0].read_text())
    assert document["trace_name"] == chosen.name
    assert (document["mistake_agent"], document["mistake_step"], document["mistake_reason"]) == (
        "Orchestrator",
        "2",
        "settled by the owner",
    )
    assert [m["content"] for m in document["history"]] == [m["content"] for m in original["history"]]
    assert document["question"] == original["question"]
    assert document["culprit"] == {
        "split": "train",
        "label_source": "adjudicated",
        "source_format": "whowhen",
        "trace_name": chosen.name,
    }

    # The downloaded file re-imports as the same trace, steps and (adjudicated) label.
    copy_project = services.project_create(name="Copy")
    (job,) = import_now(copy_project, incoming_path(saved))
    copy = Trace.objects.get(pk=job.trace_ids[0])
    assert copy.name == chosen.name and copy.question == chosen.question
    assert list(copy.steps.order_by("index").values_list("speaker", "content")) == list(
        chosen.steps.order_by("index").values_list("speaker", "content")
    )
    assert list(copy.gold_labels.values_list("agent_name", "step_index", "reason")) == [
        ("Orchestrator", 2, "settled by the owner")
    ]
