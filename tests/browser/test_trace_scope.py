"""From a filtered trace list to a review queue of exactly those traces, in Chromium: the owner narrows the list by
outcome and agent, follows "Review them in a queue", names the queue and finds its items are the list's traces."""

from __future__ import annotations

import re

import pytest

from annotations.models import QueueItem, ReviewQueue
from tests.browser.conftest import log_in, owned_project
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing import selectors as tracing_selectors
from tracing.models import Outcome

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_turns_a_filtered_trace_list_into_a_queue(live_server, page):
    project = owned_project("Scoped", "ines")
    files = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:3]
    files += [p for p in whowhen_files() if p.parent.name == "Algorithm-Generated"][:3]
    import_now(project, *[incoming_path(p, f"{p.parent.name}/{p.name}") for p in files])
    wanted = set(
        tracing_selectors.trace_ids(
            project=project, filters=tracing_selectors.TraceFilters(outcome=Outcome.FAILED, agent="WebSurfer")
        )
    )
    assert wanted

    log_in(page, live_server.url, "ines")
    page.wait_for_url(f"**/projects/{project.slug}/")
    page.select_option("select[name=outcome]", "failed")
    page.fill("input[name=agent]", "WebSurfer")
    page.keyboard.press("Enter")
    page.locator("#results", has_text=f"{len(wanted)} matching trace").wait_for()
    page.click("text=Review them in a queue")
    page.wait_for_url("**/queues/?scope=*")
    scope = page.locator("p.scope")
    assert f"the {len(wanted)} trace" in scope.inner_text() and "agent WebSurfer" in scope.inner_text()
    assert page.locator(".queue-create select[name=source]").count() == 0  # the scope is the source
    page.fill("input[name=name]", "WebSurfer failures")
    page.click("button:has-text('Create queue')")
    page.wait_for_url(re.compile(r"/annotations/queues/\d+/"))
    queue = ReviewQueue.objects.get(project=project)
    assert set(QueueItem.objects.filter(queue=queue).values_list("trace_id", flat=True)) == wanted
