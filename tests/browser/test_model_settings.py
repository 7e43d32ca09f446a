"""The model page in a real browser: an owner sets a self-hosted model with its context window and a token budget,
the page says its price is unknown, and "Test connection" (htmx) shows the model's answer, escaped, then an error.

The model is the stdlib OpenAI-compatible server of ``tests/llm_server.py`` on 127.0.0.1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from attribution.models import LlmCall, ProjectLlmSettings
from tests.browser.conftest import log_in
from tests.llm_server import fake_llm_server
from tracing import services
from tracing.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_owner_sets_a_self_hosted_model_and_tests_the_connection(live_server, page):
    user = get_user_model().objects.create_user("mo", password="a-long-test-password")
    project = services.project_create(name="Models", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    with fake_llm_server(context=32768) as server:
        server.script = ["<img src=x onerror=alert(1)>ready", ("500",)]
        log_in(page, live_server.url, "mo")
        page.goto(live_server.url + reverse("attribution:llm_settings", args=[project.slug]))
        page.fill("input[name=model]", "openai/my-vllm-model")
        page.fill("input[name=api_base]", server.url)
        page.fill("input[name=max_retries]", "0")
        page.fill("input[name=context_tokens]", "32768")
        page.fill("input[name=run_max_tokens]", "200000")
        page.click("button:has-text('Save')")
        page.wait_for_load_state()
        facts = page.inner_text("#model-facts")
        assert "32768 tokens (set here)" in facts and "Price: unknown" in facts

        page.click("button:has-text('Test connection')")
        page.wait_for_selector("#connection:has-text('Connected in')")
        assert "<img src=x onerror=alert(1)>ready" in page.inner_text("#connection")  # shown as text
        assert page.locator("#connection img").count() == 0
        page.click("button:has-text('Test connection')")
        page.wait_for_selector("#connection:has-text('The connection failed')")
        assert "InternalServerError (HTTP 500)" in page.inner_text("#connection")
    row = ProjectLlmSettings.objects.get(project=project)
    assert (row.context_tokens, row.run_max_tokens) == (32768, 200000)
    assert [r.max_tokens for r in server.received] == [8, 8]
    assert LlmCall.objects.filter(project=project, purpose="test connection").count() == 2


def test_the_settings_form_sits_in_two_columns_on_a_wide_screen_and_one_on_a_narrow_one(live_server, page):
    user = get_user_model().objects.create_user("mo", password="a-long-test-password")
    project = services.project_create(name="Models", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, live_server.url, "mo")
    page.goto(live_server.url + reverse("attribution:llm_settings", args=[project.slug]))

    def columns() -> int:  # the distinct left edges of the groups
        boxes = [page.locator("legend").nth(i).bounding_box() for i in range(page.locator("legend").count())]
        return len({round(box["x"]) for box in boxes})

    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / "model-settings.png"))
    assert page.locator("legend").all_inner_texts() == [
        "Model & endpoint",
        "Limits",
        "Prices",
        "Budgets",
        "Replay hook",
    ]
    assert columns() == 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.set_viewport_size({"width": 600, "height": 800})
    assert columns() == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 600
