"""Re-importing runs already in the project, in a real browser with a real worker: the copy is skipped and named as
a duplicate with a link to the trace that holds it; "Import them anyway" imports it again."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import log_in
from tests.browser.test_upload_flow import DROP_FILES
from tests.conftest import sample_file
from tracing import services
from tracing.models import Role, Trace

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_copy_of_an_imported_run_is_skipped_and_linked_unless_imported_anyway(
    live_server, celery_worker, page
):
    user = get_user_model().objects.create_user("linus", password="a-long-test-password")
    project = services.project_create(name="Dupes", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    document = json.loads(sample_file("Hand-Crafted").read_text())
    log_in(page, live_server.url, "linus")
    page.goto(f"{live_server.url}/projects/{project.slug}/upload/")

    page.evaluate(DROP_FILES, ["#dropzone", [{"name": "first.json", "body": json.dumps(document)}]])
    page.wait_for_selector(".job[data-status=succeeded]", timeout=60_000)
    original = Trace.objects.get(project=project)

    # The same run, other bytes and another name.
    copy = {"name": "copy.json", "body": json.dumps(document, indent=2)}
    page.evaluate(DROP_FILES, ["#dropzone", [copy]])
    page.wait_for_selector(".job[data-status=duplicate]", timeout=60_000)
    page.wait_for_function("() => !document.querySelector('.jobs[hx-trigger]')")
    batch = page.locator(".jobs").first
    assert "0 imported, 1 duplicate skipped" in batch.locator(".jobs-summary").inner_text()
    assert "duplicate of" in batch.locator(".duplicate-of").inner_text()
    assert Trace.objects.filter(project=project).count() == 1

    page.select_option("#id_duplicates", "import")
    page.evaluate(DROP_FILES, ["#dropzone", [{**copy, "name": "again.json"}]])
    page.wait_for_selector(".jobs >> nth=2")
    page.wait_for_selector(".jobs >> nth=0 >> .job[data-status=succeeded]", timeout=60_000)
    assert "1 imported, 0 duplicates skipped" in page.locator(".jobs-summary").first.inner_text()
    assert Trace.objects.filter(project=project).count() == 2

    # The duplicate's link leads to the trace that holds the run.
    page.click(f".duplicate-of a[href='/traces/{original.pk}/']")
    page.wait_for_selector(".trace-head")
    assert original.name in page.inner_text(".trace-head")
