"""The LLM-simulated replay flow in a real browser: an owner sets a model (and no replay hook), attributes a Who&When
trace with counterfactual replay, a real worker replays it through the model, and the replay inspector says the
replays were simulated.

The model is an OpenAI-compatible endpoint on 127.0.0.1 answering like the simulation in
``tests/attribution/test_llm_replay.py`` (the team finds the right cube only when step 1 was fixed).
"""

from __future__ import annotations

import threading
import uuid
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.attribution.test_llm_replay import _OpenAiCompatible, cube_world, imported
from tests.browser.conftest import log_in
from tracing import services
from tracing.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_an_owner_attributes_a_trace_by_simulated_replay_and_inspects_the_replays(
    live_server, celery_worker, page
):
    from http.server import ThreadingHTTPServer

    user = get_user_model().objects.create_user("lin", password="a-long-test-password")
    project = services.project_create(name="Replay", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    trace = imported(project)
    simulation = cube_world(SimpleNamespace())
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Handler", (_OpenAiCompatible,), {"simulation": simulation})
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        log_in(page, live_server.url, "lin")
        page.goto(live_server.url + reverse("attribution:llm_settings", args=[project.slug]))
        assert "role-plays your agents" in page.inner_text("main")
        page.fill("input[name=model]", f"hosted_vllm/sim-{uuid.uuid4().hex[:8]}")
        page.fill("input[name=api_base]", f"http://127.0.0.1:{server.server_address[1]}/v1")
        page.fill("input[name=max_retries]", "0")
        page.click("button:has-text('Save')")
        page.wait_for_load_state()

        page.goto(f"{live_server.url}/traces/{trace.pk}/")
        page.select_option("#verdicts select[name=method]", "counterfactual")
        page.click("#verdicts button:has-text('Attribute')")
        card = page.locator(".verdict-card:has-text('counterfactual')")
        card.locator(".verdict-answer").wait_for(timeout=120_000)
        assert "Cubing_Expert" in card.inner_text() and "step 1" in card.inner_text()
        card.locator("a:has-text('Inspect')").click()
        page.wait_for_selector("h1:has-text('Counterfactual replays')")
    finally:
        server.shutdown()
        server.server_close()
    text = page.inner_text("main")
    assert "role-played by the model" in text and "tools are not executed" in text
    assert page.locator(".badge:has-text('simulated')").count() >= 1
    assert simulation.count("analyzer") >= 2
