"""Back after paging the trace list with htmx shows the whole page, never the bare results partial (issue 12).

The pager swaps only ``#results`` and pushes the URL. Pressing Back restores the page from htmx's history cache, or,
when the cache misses, asks the server again with ``HX-History-Restore-Request``: that request carries ``HX-Request``
too, and HtmxMiddleware must answer it with the full page, since htmx puts the answer into ``<body>``."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import log_in
from tracing import services
from tracing.models import Role, Trace
from tracing.views import TRACES_PER_PAGE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def many_traces():
    user = get_user_model().objects.create_user("ada", password="a-long-test-password")
    project = services.project_create(name="Pages", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    # Three pages: two pager clicks, then two steps Back.
    Trace.objects.bulk_create(
        Trace(project=project, name=f"run-{i:03d}", source_format="whowhen", ordinal=i)
        for i in range(2 * TRACES_PER_PAGE + 5)
    )
    return project


def _next_page(page, number: int) -> None:
    page.locator("nav.pager a", has_text="Next").click()
    page.wait_for_url(re.compile(rf"[?&]page={number}\b"))
    page.locator("nav.pager", has_text=f"Page {number} of 3").wait_for()


def _assert_full_page(page, number: int) -> None:
    page.locator("nav.pager", has_text=f"Page {number} of 3").wait_for()
    # The layout around the results is there, once: not the partial alone, and not a page nested in the page.
    assert page.locator("header.topbar").count() == 1
    assert page.locator("form.filters").count() == 1
    assert page.locator("header.topbar").is_visible()
    assert page.locator("form.filters input[name=q]").is_visible()
    assert page.locator("h1", has_text="Pages").is_visible()
    assert page.locator("table.trace-table tbody tr").count() == TRACES_PER_PAGE


def test_back_after_htmx_paging_shows_the_whole_page(live_server, page, many_traces):
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{many_traces.slug}/")
    page.locator("nav.pager", has_text="Page 1 of 3").wait_for()
    swaps: list[str] = []
    page.on("request", lambda r: swaps.append(r.url) if r.headers.get("hx-request") == "true" else None)

    _next_page(page, 2)
    _next_page(page, 3)
    assert len(swaps) == 2, "the pager should swap the results with htmx, not load whole pages"
    assert page.locator("header.topbar").count() == 1  # a swap replaces the results only

    page.go_back()  # from htmx's history cache
    page.wait_for_url(re.compile(r"[?&]page=2\b"))
    _assert_full_page(page, 2)


def test_back_after_a_history_cache_miss_asks_the_server_for_the_whole_page(live_server, page, many_traces):
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{many_traces.slug}/")
    page.locator("nav.pager", has_text="Page 1 of 3").wait_for()
    _next_page(page, 2)
    _next_page(page, 3)
    restores: list[str] = []
    page.on(
        "request",
        lambda r: restores.append(r.url) if r.headers.get("hx-history-restore-request") == "true" else None,
    )

    # htmx 2 keeps its history cache in sessionStorage (older versions in localStorage): clear both, so Back misses.
    page.evaluate(
        "() => { sessionStorage.removeItem('htmx-history-cache'); localStorage.removeItem('htmx-history-cache') }"
    )
    page.go_back()
    page.wait_for_url(re.compile(r"[?&]page=2\b"))
    _assert_full_page(page, 2)
    assert restores and "page=2" in restores[-1], "Back should have asked the server to restore the page"

    page.evaluate("() => sessionStorage.removeItem('htmx-history-cache')")
    page.go_back()  # to the first page, loaded without htmx
    page.wait_for_url(re.compile(r"/projects/[\w-]+/$"))
    _assert_full_page(page, 1)
