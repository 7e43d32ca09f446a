"""A 5 MB step in real Chromium: the trace page shows its first characters, and "Show all" brings the rest in
windows (the step list is hx-disable, so the button is wired by static/js/step_window.js), escaped: markup in the
rest of the text never runs."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.browser.conftest import log_in
from tests.tracing.test_long_steps import LINE, long_text
from tracing.models import Step

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@override_settings(CULPRIT_STEP_WINDOW_CHARS=2_000_000)
def test_show_all_fetches_a_long_step_in_windows(page, live_server, imported_trace, owner):
    step = Step.objects.filter(trace=imported_trace).order_by("index").first()
    lines = long_text().splitlines(keepends=True)
    lines[2_000] = "<img src=x onerror=\"window.__pwned='step'\">" + "y" * (LINE - 44) + "\n"
    text = "".join(lines)
    Step.objects.filter(pk=step.pk).update(content=text)

    log_in(page, live_server.url, owner.username, "pw-for-tests-1")
    page.goto(f"{live_server.url}/traces/{imported_trace.pk}/")
    item = page.locator(f"#step-{step.index}")
    item.locator("details.body summary").first.click()
    item.locator("button.step-more", has_text=f"Show all ({len(text)} characters)").click()
    windows = item.locator("pre.step-window")
    for shown in range(1, 6):  # 5 MB in windows of 2 MB: "Show all", then "Show more" twice
        windows.nth(shown - 1).wait_for()  # the same swap brings the next button, if any
        more = item.locator("button.step-more")
        if not more.count():
            break
        more.click()
    assert windows.count() == 3
    shown = "".join(windows.nth(i).inner_text() for i in range(3))
    assert shown == text[20_000:]
    assert page.evaluate("window.__pwned") is None
