"""A very long step (issue 13, finding 16): the trace page reads only the first CULPRIT_STEP_PREVIEW_CHARS characters
of it from the database, and "Show all" fetches the rest in windows of CULPRIT_STEP_WINDOW_CHARS, escaped, for
members of the trace's project only."""

from __future__ import annotations

import re

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils.html import escape

from tracing.models import Step

pytestmark = pytest.mark.django_db

LINE = 2_110  # each line one "word" longer than PostgreSQL indexes (2,047), so the step's search index stays small


def long_text() -> str:
    """About 5 MB of numbered lines, with markup in the middle that must come back escaped."""
    lines = [f"{i:09d}" + "y" * (LINE - 10) + "\n" for i in range(2_400)]
    lines[50] = f"{50:09d}<b>bold!</b>" + "y" * (LINE - 22) + "\n"
    return "".join(lines)


SIZE = len(long_text())


@pytest.fixture
def long_step(imported_trace) -> tuple[Step, str]:
    step = Step.objects.filter(trace=imported_trace).order_by("index").first()
    text = long_text()
    Step.objects.filter(pk=step.pk).update(content=text)
    return step, text


def window_url(step: Step, offset: object) -> str:
    return reverse("tracing:step_content", args=[step.trace_id, step.index]) + f"?offset={offset}"


def test_the_trace_page_stays_small_and_offers_the_rest(owner_client, long_step):
    step, text = long_step
    response = owner_client.get(reverse("tracing:trace_detail", args=[step.trace_id]))
    page = response.content.decode()
    assert response.status_code == 200
    print(f"trace page with a {SIZE:,}-character step: {len(response.content):,} bytes")
    assert len(response.content) < 500_000, len(response.content)
    assert f"Show all ({SIZE} characters)" in page
    assert text[:20_000] in page and "000000009y" in page
    assert "000000010y" not in page  # line 10 starts after character 21,100: never read from the database
    assert f'data-step-window="{window_url(step, 20_000)}"' in page


@override_settings(CULPRIT_STEP_WINDOW_CHARS=200_000)
def test_windows_return_the_right_slices_escaped_until_the_end(owner_client, long_step):
    step, text = long_step
    first = owner_client.get(window_url(step, 20_000)).content.decode()
    body = re.search(r'<pre class="content step-window">(.*?)</pre>', first, re.S).group(1)
    assert body == escape(text[20_000:220_000])
    assert "&lt;b&gt;bold!&lt;/" in body and "<b>" not in body
    assert f'data-step-window="{window_url(step, 220_000)}"' in first
    last = owner_client.get(window_url(step, SIZE - 150_000)).content.decode()
    assert escape(text[-150_000:]) in last and "data-step-window" not in last
    past = owner_client.get(window_url(step, SIZE + 10)).content.decode()
    assert "data-step-window" not in past


def test_the_window_view_checks_its_input_and_membership(client, owner_client, long_step, make_user):
    step, _ = long_step
    for bad in ("-1", "x", "1e3"):
        response = owner_client.get(window_url(step, bad))
        assert response.status_code == 400 and b"offset" in response.content.lower()
    whole = owner_client.get(reverse("tracing:step_content", args=[step.trace_id, step.index]))
    assert whole.status_code == 200 and b"000000000y" in whole.content  # no offset: from the start
    missing = reverse("tracing:step_content", args=[step.trace_id, 99_999]) + "?offset=0"
    assert owner_client.get(missing).status_code == 404
    client.logout()
    assert client.get(window_url(step, 0)).status_code == 302  # to the login page
    client.force_login(make_user("stranger"))
    assert client.get(window_url(step, 0)).status_code == 404


def test_a_short_step_is_shown_whole_without_a_window_button(owner_client, imported_trace):
    page = owner_client.get(reverse("tracing:trace_detail", args=[imported_trace.pk])).content.decode()
    assert "data-step-window" not in page
