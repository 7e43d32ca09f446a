"""The pictures of the evaluation and agreement pages in Chromium: the accuracy chart with its intervals and
baselines, the confusion matrix and the step-error histogram drawn, a single-trace run listed apart, the agreement
page's per-annotator bars; nothing refused by the pages' CSP and nothing wider than the window."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from annotations.models import ReviewQueue
from tests.annotations.test_views import _client, _create_queue, _label_next
from tests.attribution.test_evaluation_page import make_run, make_traces
from tests.browser.conftest import PASSWORD, log_in
from tracing import services
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import Role
from tracing.services import trace_create_from_parsed

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_evaluation_charts_draw_and_a_single_trace_run_stands_apart(live_server, page):
    user = get_user_model().objects.create_user("eva", password=PASSWORD)
    project = services.project_create(name="Scores", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=9)
    click = make_run(project, "hybrid", traces[:1], right=1)  # one Attribute click, 100% over one trace

    log_in(page, live_server.url, "eva")
    page.goto(f"{live_server.url}/attribution/projects/{project.slug}/evaluation/?method=heuristic")
    chart = page.locator("figure.accuracy-chart svg")
    assert (
        chart.is_visible() and chart.locator(".chart-panel .whisker").count() == 6
    )  # 2 figures x (line, 2 caps)
    assert (
        chart.locator(".chart-panel .chart-baseline line").count() == 2
    )  # the best agent and step baselines
    assert "hybrid" not in chart.inner_html()  # the one-trace run is never charted
    assert page.locator("figure.confusion-matrix svg .matrix-cell").count() >= 4
    assert page.locator("figure.step-histogram svg .hist-bar.exact rect").is_visible()
    single = page.locator("table.single-runs")
    assert single.is_visible() and f"run #{click.pk}" in single.inner_text()
    assert page.locator("h2:text-is('Single-trace runs')").is_visible()
    # The charts scale with the window: nothing wider than it.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    if shots := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=os.path.join(shots, "evaluation-page.png"), full_page=True)


def test_the_agreement_bars_show_in_chromium_within_the_csp(live_server, page, project, owner, make_user):
    ann, bob = make_user("ann"), make_user("bob")
    for user in (ann, bob):
        services.membership_set(project=project, user=user, role=Role.ANNOTATOR)
    for n in range(2):  # two unlabelled eight-step runs for the queue
        steps = [
            ParsedStep(speaker=a, agent=a, kind="message", content=f"step {i}")
            for i, a in enumerate(["Planner", "Coder"] * 4)
        ]
        trace_create_from_parsed(
            project=project,
            upload=None,
            ordinal=n,
            parsed=ParsedTrace(name=f"run-{n}", source_format="whowhen", steps=steps),
        )
    owner_client = _client(owner)
    assert _create_queue(owner_client, project).status_code == 302
    queue = ReviewQueue.objects.get(project=project, name="Triage")
    for client, steps in ((_client(ann), (3, 1)), (_client(bob), (3, 6))):
        for step in steps:
            _label_next(client, queue, step, category="action.invalid_action", reason="r")
    owner.set_password(PASSWORD)
    owner.save()
    log_in(page, live_server.url, owner.get_username())
    page.goto(f"{live_server.url}{reverse('annotations:agreement', args=[queue.pk])}")
    bars = page.locator("figure.agreement-bars svg")
    assert bars.is_visible() and bars.locator(".agreement-row").count() == 2
    box = bars.locator(".chart-bar.agent rect").first.bounding_box()
    assert (
        box is not None and box["width"] > 20
    )  # half of the plot, drawn (a CSP-blocked style would leave 0)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    if shots := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=os.path.join(shots, "agreement-page.png"), full_page=True)
