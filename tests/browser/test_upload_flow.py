"""The first used-by flow in a real browser: log in, drop files on the page, watch them import, open a trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import log_in, screenshot
from tests.conftest import sample_file
from tracing import services
from tracing.models import IngestJob, Role, Trace

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Waits for upload.js to mark the zone ready: the script is deferred, so a drop dispatched as soon as the zone is
# parsed could reach no handler (under load it did, and nothing was uploaded).
DROP_FILES = """
async ([selector, files]) => {
  for (let i = 0; i < 600 && !document.querySelector(selector + "[data-ready]"); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const transfer = new DataTransfer();
  for (const f of files) transfer.items.add(new File([f.body], f.name, {type: "application/json"}));
  const zone = document.querySelector(selector);
  zone.dispatchEvent(new DragEvent("dragenter", {bubbles: true, dataTransfer: transfer}));
  zone.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: transfer}));
}
"""


def test_a_person_drops_files_watches_them_import_and_finds_the_gold_step(live_server, celery_worker, page):
    user = get_user_model().objects.create_user("ada", password="a-long-test-password")
    project = services.project_create(name="Browser", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    hand, algo = sample_file("Hand-Crafted"), sample_file("Algorithm-Generated")

    log_in(page, live_server.url, "ada")
    page.wait_for_url(f"**/projects/{project.slug}/")
    page.click("text=Upload traces")
    page.wait_for_selector("#dropzone")

    files = [
        {"name": hand.name, "body": hand.read_text()},
        {"name": algo.name, "body": algo.read_text()},
        {"name": "broken.json", "body": '{"history": ['},
    ]
    page.evaluate(DROP_FILES, ["#dropzone", files])

    try:
        page.wait_for_selector(".job[data-status=succeeded] >> nth=1", timeout=60_000)
    except Exception as exc:  # say where the jobs are, not only that the page never showed them
        jobs = list(
            IngestJob.objects.filter(project=project).values("filename", "status", "error", "attempts")
        )
        raise AssertionError(f"two imports never succeeded on the page; the jobs: {jobs}") from exc
    page.wait_for_selector(".job[data-status=failed]")
    page.wait_for_function("() => !document.querySelector('.jobs[hx-trigger]')")  # polling stopped
    screenshot(page, "upload-finished")
    failed = page.inner_text(".job[data-status=failed]")
    assert "broken.json: the JSON ends unexpectedly" in failed and "truncated" in failed
    assert page.locator(".job[data-status=succeeded]").count() == 2
    assert "1 failed" in page.inner_text(".jobs-summary")  # counted where the eye lands first

    trace = Trace.objects.get(project=project, name=f"Hand-Crafted/{hand.stem}")
    gold = trace.gold_labels.get()
    page.click(f".job[data-status=succeeded] a[href='/traces/{trace.pk}/']")
    page.wait_for_selector(".trace-head")
    assert gold.agent_name in page.inner_text(".gold-label")
    page.click(f".gold-label a:has-text('step {gold.step_index}')")
    highlighted = page.locator(f"#step-{gold.step_index}")
    highlighted.wait_for()
    classes = highlighted.get_attribute("class")
    assert "gold" in classes and "target" in classes
    assert highlighted.is_visible()
    assert (
        json.loads(hand.read_text())["history"][gold.step_index]["content"][:40] in highlighted.inner_text()
    )
    screenshot(page, "trace-gold-step")

    # Jump to another step with the form, as a person would.
    page.fill("#jump-step", "0")
    page.click("form.jump button")
    page.wait_for_selector("#step-0.target")


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_many_formats_dropped_together_import_like_the_cli_does(live_server, celery_worker, page):
    user = get_user_model().objects.create_user("grace", password="a-long-test-password")
    project = services.project_create(name="Formats", owner=user)
    trail = sorted((FIXTURES / "trail" / "gaia").glob("*.trace.json"))[0]
    files = [
        trail.with_name(trail.name.replace(".trace.", ".labels.")),
        trail,
        FIXTURES / "textlogs" / "ag2.log",
        FIXTURES / "textlogs" / "unknown_framework.log",
        FIXTURES / "textlogs" / "crewai.log",
        FIXTURES / "otlp" / "multi_agent_genai.json",
        FIXTURES / "openai_chat" / "refund_handoff.json",
    ]
    log_in(page, live_server.url, "grace")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    page.evaluate(DROP_FILES, ["#dropzone", [{"name": f.name, "body": f.read_text()} for f in files]])
    page.wait_for_selector(f".job[data-status=succeeded] >> nth={len(files) - 1}", timeout=60_000)
    page.wait_for_function("() => !document.querySelector('.jobs[hx-trigger]')")
    screenshot(page, "upload-many-formats")
    formats = page.locator(".job .tag").all_inner_texts()
    assert {f.split(" ")[0] for f in formats} == {
        "trail-labels",
        "trail",
        "text-ag2",
        "text-log",
        "text-crewai",
        "otlp-json",
        "openai-chat",
    }
    # The label file came first; its labels waited for the trace and now sit on it.
    trace = Trace.objects.get(project=project, source_format="trail")
    gold = trace.gold_labels.get()
    page.goto(f"{live_server.url}/traces/{trace.pk}/?step={gold.step_index}")
    assert "gold" in page.locator(f"#step-{gold.step_index}").get_attribute("class")


def test_the_upload_button_with_no_file_chosen_opens_the_file_chooser(live_server, page):
    """Files upload as soon as they are chosen; pressing Upload with none chosen asks for files instead of posting
    an empty form or showing the browser's validation bubble."""
    user = get_user_model().objects.create_user("bea", password="a-long-test-password")
    project = services.project_create(name="Chooser", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    log_in(page, live_server.url, "bea")
    page.wait_for_url(f"**/projects/{project.slug}/")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")
    with page.expect_file_chooser() as chooser:
        page.click("#upload-form button[type=submit]")
    assert chooser.value.is_multiple()
    assert IngestJob.objects.filter(project=project).count() == 0
