"""An owner deletes traces in Chromium: one from its page, then a filtered list after confirming its count."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in, owned_project, screenshot
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import Trace

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_deletes_a_trace_then_a_filtered_list(live_server, page):
    project = owned_project("Tidy", "ada")
    hand = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:3]
    algo = [p for p in whowhen_files() if p.parent.name == "Algorithm-Generated"][:2]
    for path in hand + algo:
        import_now(project, incoming_path(path))
    first = Trace.objects.filter(project=project, name__startswith="Hand-Crafted").order_by("pk").first()

    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/traces/{first.pk}/")
    page.click("text=Delete this trace…")
    page.click(f"text=Delete “{first.name}” for good")
    page.wait_for_selector(f".messages >> text=Deleted trace “{first.name}”.")
    assert page.url.endswith(f"/projects/{project.slug}/")
    assert not Trace.objects.filter(pk=first.pk).exists()

    page.goto(f"{live_server.url}/projects/{project.slug}/?q=Algorithm-Generated")
    page.wait_for_selector("text=2 matching traces")
    page.click("text=Delete them…")
    page.wait_for_selector('.delete-count >> text="2"')
    screenshot(page, "traces-delete-confirm")
    page.check("input[name=confirm]")
    page.click("text=Delete 2 traces")
    page.wait_for_selector(".messages >> text=Deleted 2 traces.")
    assert Trace.objects.filter(project=project).count() == 2
    assert not Trace.objects.filter(project=project, name__startswith="Algorithm-Generated").exists()
