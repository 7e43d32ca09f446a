"""On the trace page, in real Chromium: an annotator confirms the heuristic's verdict with one click, corrects it to
another step with a reason, and takes the label back -- the panel answers in place each time (htmx), and the trace's
gold follows."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from attribution import services as attribution_services
from tests.browser.conftest import log_in
from tracing import services
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import GoldLabel, Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENTS = ("Planner", "Coder", "Checker")


def test_an_annotator_confirms_corrects_and_takes_back_a_label_on_the_trace_page(live_server, page):
    owner = get_user_model().objects.create_user("olga", password="a-long-test-password")
    ann = get_user_model().objects.create_user("ann", password="a-long-test-password")
    project = services.project_create(name="Prod", owner=owner)
    services.membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    parsed = ParsedTrace(
        name="failed run",
        source_format="whowhen",
        question="What is 6 x 7?",
        ground_truth="42",
        steps=[
            ParsedStep(
                speaker=AGENTS[i % 3],
                agent=AGENTS[i % 3],
                kind="message",
                content=f"{AGENTS[i % 3]} says step {i}"
                + (": the answer is 41. Traceback: ValueError" if i == 4 else ""),
            )
            for i in range(8)
        ],
    )
    trace = services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)
    run = attribution_services.run_create(
        project=project, method="heuristic", trace_ids=[trace.pk], enqueue=False
    )
    attribution_services.run_execute_inline(run=run)
    verdict = run.verdicts.get()

    log_in(page, live_server.url, "ann")
    page.goto(f"{live_server.url}/traces/{trace.pk}/")
    panel = page.locator("#verdicts")
    panel.locator(".gold-card").get_by_text("none yet").wait_for()

    panel.locator(".label-confirm button").click()
    panel.get_by_text(f"Labelled: {verdict.agent_name} at step {verdict.step_index}.").wait_for()
    assert "Annotator · by ann" in panel.locator(".gold-card").inner_text()
    assert (
        panel.locator(".label-confirm").count() == 0
    )  # the verdict is the gold now: nothing left to confirm

    panel.locator(".label-correct summary").click()
    panel.locator(".label-form input[name=step_index]").fill("6")
    panel.locator(".label-form select[name=agent_name]").select_option("Planner")
    panel.locator(".label-form textarea").fill("<img src=x onerror=alert(1)> planned the wrong sum")
    panel.locator(".label-form button").click()
    panel.get_by_text("Labelled: Planner at step 6.").wait_for()
    gold = panel.locator(".gold-card")
    assert "Planner at step 6" in gold.inner_text()
    gold.locator("details.why summary").click()
    assert (
        "<img src=x onerror=alert(1)>" in gold.locator("details.why pre").inner_text()
    )  # shown as text, not markup
    assert page.locator("#verdicts img").count() == 0
    assert panel.locator(".label-confirm").count() == 1  # the heuristic disagrees with the gold again
    labels = GoldLabel.objects.filter(trace=trace)
    assert [(g.source, g.agent_name, g.step_index, g.created_by_id) for g in labels] == [
        ("annotator", "Planner", 6, ann.pk)
    ]

    panel.locator(".label-remove button").click()
    panel.get_by_text("Your label is taken back.").wait_for()
    panel.locator(".gold-card").get_by_text("none yet").wait_for()
    assert not GoldLabel.objects.filter(trace=trace).exists()
