"""A 3 MB raw record and a 1 MB final answer in real Chromium: the trace page shows their first characters, and
"Show all" brings the rest in windows (``part=raw``, ``part=answer``), escaped: markup in them never runs."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.browser.conftest import log_in
from tests.tracing.test_long_parts import PREVIEW, long_trace  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _show_all(item, text: str) -> str:
    """Click "Show all", then "Show more" until no button is left; the text of the windows shown."""
    item.locator("button.step-more", has_text=f"Show all ({len(text)} characters)").click()
    windows = item.locator("pre.step-window")
    for shown in range(1, 6):
        windows.nth(shown - 1).wait_for()  # the same swap brings the next button, if any
        more = item.locator("button.step-more")
        if not more.count():
            break
        more.click()
    return "".join(windows.nth(i).inner_text() for i in range(windows.count()))


@override_settings(CULPRIT_STEP_WINDOW_CHARS=2_000_000)
def test_show_all_fetches_the_raw_json_and_the_final_answer_in_windows(page, live_server, long_trace, owner):  # noqa: F811
    trace, llm, answer, raw = long_trace
    log_in(page, live_server.url, owner.username, "pw-for-tests-1")
    page.goto(f"{live_server.url}/traces/{trace.pk}/")
    final = page.locator(".final-answer")
    final.locator("details.body summary").first.click()
    assert _show_all(final, answer) == answer[PREVIEW:]
    step = page.locator(f"#step-{llm.index}")
    step.locator(".raw-json summary").click()
    assert step.locator(".raw-json pre.content").first.inner_text() == raw[:PREVIEW]
    assert _show_all(step.locator(".raw-json"), raw) == raw[PREVIEW:]
    assert step.locator(".raw-json pre.step-window").count() == 2  # 3 MB: the preview, then windows of 2 MB
    assert page.evaluate("window.__pwned") is None
