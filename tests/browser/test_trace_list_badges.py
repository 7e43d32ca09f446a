"""Agent names in the trace list (gold badges, the agents column), in Chromium at 1,280 px: a long one wraps between
its words (after "_", between camelCase words), never inside one, and the page stays within the window."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import log_in
from tracing import services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_NAMES = [
    "HistoricalRecordsVerification_Expert",
    "assistant_statistical_data_analysis_expert",
    "Orchestrator (-> ComputerTerminalWebSurfer)",
]

# For each word of each gold badge and agent list (what lies between spaces, hyphens and the <wbr> elements that
# split a name into pieces): how many lines it spans. A word broken in the middle spans two.
WORD_LINES = """() => [...document.querySelectorAll('.trace-table .badge.gold, .trace-table .agent-names')].flatMap(cell =>
  [...cell.childNodes].filter(n => n.nodeType === Node.TEXT_NODE).flatMap(n =>
    [...n.textContent.matchAll(/[^\\s-]+-?/g)].map(m => {
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      return [m[0], tops.size];
    })))"""


@pytest.fixture
def project():
    user = get_user_model().objects.create_user("ada", password="a-long-test-password")
    project = services.project_create(name="Badges", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    for i, agent in enumerate(LONG_NAMES):
        parsed = ParsedTrace(
            name=f"run-{i}",
            source_format="whowhen",
            question="A task whose long text fills the trace column of the list, as real tasks do " * 3,
            steps=[ParsedStep(speaker=agent, agent=agent, kind="message", content=f"{agent} worked")],
            gold=[ParsedGold(agent=agent, step=0)],
        )
        services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)
    return project


def test_long_agent_names_wrap_between_words_in_badges_and_the_agents_column(live_server, page, project):
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    badges = page.locator(".trace-table .badge.gold")
    assert sorted(t.replace("\n", "") for t in badges.all_text_contents()) == sorted(
        f"{n} @ 0" for n in LONG_NAMES
    )
    words = page.evaluate(WORD_LINES)
    assert {"Historical", "Records", "Verification_", "Expert"} <= {w for w, _ in words}
    assert [w for w in words if w[1] != 1] == [], "a word of an agent name is broken across lines"
    assert any(
        b.bounding_box()["height"] > 30 for b in badges.all()
    )  # and some did wrap, at a piece boundary
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / "trace-list-long-gold-badges.png"), full_page=True)
