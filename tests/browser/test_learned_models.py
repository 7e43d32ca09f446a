"""Training a learned attributor in a real browser, on a real worker: a person opens the project, goes to its
models, fills in the train form, follows the live progress until the model is trained, reads the cross-validated
chart, and makes the model the project's default."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from attribution.models import AttributorModel, AttributorStatus, ProjectAttribution
from tests.browser.conftest import log_in
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing import services
from tracing.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SCREENSHOT = "/tmp/model-page.png"


def test_a_person_trains_a_model_follows_it_and_makes_it_the_default(live_server, celery_worker, page):
    user = get_user_model().objects.create_user("lin", password="a-long-test-password")
    project = services.project_create(name="Learning", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    files = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][:12] or whowhen_files()[:12]
    import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in files))

    log_in(page, live_server.url, "lin")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.click("nav.tabs a:text-is('Learned models')")
    page.wait_for_selector("text=Train a model")
    assert "Not calibrated" in page.inner_text("#calibration")
    page.fill("input[name=name]", "triage <b>bold</b>")
    assert page.locator("input[name=sources]:checked").count() == 5  # every source ticked by default
    assert page.eval_on_selector("select[name=projects]", "s => [...s.selectedOptions].map(o => o.text)") == [
        "Learning"
    ]
    page.fill("input[name=folds]", "3")
    page.click("button:has-text('Train model')")

    page.wait_for_url("**/attribution/models/*/")
    # The page polls its body while the worker trains, and stops once the model is trained.
    page.wait_for_selector("text=Cross-validated accuracy", timeout=90_000)
    model = AttributorModel.objects.get(project=project)
    assert model.status == AttributorStatus.SUCCEEDED and model.folds == 3
    assert page.locator("#model-body[hx-trigger]").count() == 0
    assert page.locator("h1").inner_text() == "Model triage <b>bold</b> v1"  # shown as text, never as markup
    # The model's bar and the heuristic's on the same folds, and where the model stands in words.
    assert page.locator(".accuracy-chart .chart-panel .chart-bar.agent rect").count() == 2
    assert page.locator("tr.reference").count() == 1 and page.locator(".assessment li").count() == 2
    assert page.locator(".accuracy-chart .chart-panel .chart-baseline line").count() == 2
    assert page.locator(".feature-bars li").count() >= 1
    assert page.locator(".confusion-matrix .matrix-cell.diagonal").count() >= 1

    page.click("button:has-text('Make default')")
    page.wait_for_selector("text=Default for Learning")
    assert page.locator("button:has-text('Make default')").count() == 0
    settings = ProjectAttribution.objects.get(project=project)
    assert settings.attributor_id == model.pk and settings.default_method == "learned"
    page.screenshot(path=SCREENSHOT, full_page=True)

    page.click("nav.tabs a:text-is('Learned models')")
    assert "learned" in page.inner_text(".default-method")
    assert page.locator("#models tr.selected .badge.default-model").count() == 1
    page.screenshot(path="/tmp/models-list.png", full_page=True)

    # Runs labelled after training score the model on failures it has not seen, in one click from its page.
    more = [p for p in whowhen_files() if p.parent.name == "Hand-Crafted"][12:15]
    if not more:  # only the demo's copies beside the checkout: every label went into training
        return
    import_now(project, *(incoming_path(p, f"{p.parent.name}/{p.name}") for p in more))
    page.goto(f"{live_server.url}/attribution/models/{model.pk}/")
    assert f"{len(more)} labelled traces of Learning are not among those it learned from" in page.inner_text(
        "#unseen"
    )
    page.click("#unseen button")
    page.wait_for_selector(".run-score", timeout=60_000)
    assert f"On its {len(more)} labelled traces: agent" in page.inner_text(".run-score")
