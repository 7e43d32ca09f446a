"""The trace page's blame strip (the latest verdict's per-step scores as a heat bar beside each shown step, with a
legend) and human names for gold label categories, both provided by attribution through tracing.extensions."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from attribution.models import AttributionRun, Verdict
from tracing import services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Trace

pytestmark = pytest.mark.django_db


def _trace(project, steps: int, *, category: str = "") -> Trace:
    agents = ["Planner", "WebSurfer"]
    parsed = ParsedTrace(
        name="run",
        source_format="whowhen",
        question="q",
        outcome="failed",
        steps=[
            ParsedStep(speaker=agents[i % 2], agent=agents[i % 2], kind="message", content=f"turn {i}")
            for i in range(steps)
        ],
        gold=[ParsedGold(agent="WebSurfer", step=1, category=category)],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _verdict(
    trace: Trace,
    scores: list[float],
    *,
    agent: str = "WebSurfer",
    step: int = 1,
    method: str = "heuristic",
    status: str = "ok",
) -> Verdict:
    run = AttributionRun.objects.create(
        project=trace.project, method=method, trace_ids=[trace.pk], status="succeeded"
    )
    return Verdict.objects.create(
        run=run, trace=trace, method=method, agent_name=agent, step_index=step, status=status, scores=scores
    )


def _bars(html: str) -> dict[int, str]:
    """step index -> the heat class of its bar."""
    return {
        int(i): level
        for i, level in re.findall(r'<li id="step-(\d+)"[^>]*>\s*<span class="blame heat-(\w+)"', html)
    }


def test_each_step_gets_a_heat_bar_from_the_latest_verdict_and_a_legend(owner_client, project):
    trace = _trace(project, 4)
    _verdict(trace, [0.0, 0.0, 0.0, 1.0], agent="Planner", step=3, method="all_at_once")  # older
    _verdict(trace, [0.1, 1.0, 0.42, 0.0])
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert _bars(html) == {0: "0", 1: "5", 2: "2", 3: "0"}
    assert "Blame score 0.42 (heuristic verdict of" in html
    assert 'class="blame-legend"' in html and html.count('class="blame-swatch heat-') == 6
    assert "which blames WebSurfer at" in html and '<span class="badge blamed"' in html
    step1 = html[html.index('id="step-1"') : html.index('id="step-2"')]
    assert "blamed: WebSurfer" in step1


def test_failed_verdicts_and_verdicts_without_scores_draw_no_strip(owner_client, project):
    trace = _trace(project, 3)
    _verdict(trace, [], method="all_at_once")
    _verdict(trace, [1.0, 0.0, 0.0], status="failed")
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert "blame-legend" not in html and 'class="blame ' not in html


def test_the_strip_follows_the_step_window_and_reads_only_its_slice(owner_client, project):
    trace = _trace(project, 130)
    _verdict(trace, [round(i / 129, 4) for i in range(130)], step=129)
    url = reverse("tracing:trace_detail", args=[trace.pk])
    with CaptureQueriesContext(connection) as ctx:
        html = owner_client.get(url, {"page": 3}).content.decode()
    bars = _bars(html)
    assert sorted(bars) == list(range(100, 130))
    assert bars[100] == str(round(100 / 129 * 5)) and bars[129] == "5"
    if connection.vendor == "postgresql":
        (sql,) = [q["sql"] for q in ctx.captured_queries if "attribution_verdict" in q["sql"]]
        assert "jsonb_path_query_array" in sql and "$[100 to 129]" in sql
    # The htmx window swap carries the bars and the legend as well.
    part = owner_client.get(url, {"page": 2}, HTTP_HX_REQUEST="true").content.decode()
    assert sorted(_bars(part)) == list(range(50, 100)) and "blame-legend" in part


def test_a_verdict_shorter_than_a_grown_trace_leaves_later_steps_unscored(owner_client, project):
    trace = _trace(project, 4)
    _verdict(trace, [0.2, 1.0])
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert _bars(html) == {0: "1", 1: "5", 2: "none", 3: "none"}
    assert "No score for this step" in html


def test_gold_categories_read_as_human_names(owner_client, project):
    trace = _trace(project, 3, category="action.misalignment")
    html = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert (
        'title="action.misalignment">Action: did something other than it planned (misalignment)</span>'
        in html
    )
    assert ", action.misalignment)" not in html
