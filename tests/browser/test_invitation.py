"""In real Chromium: an owner invites a second person from the members page, that person follows the one-time link
in their own browser, sets a password, and labels a queue item; the owner then sees it in the queue's item list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from annotations import services as queue_services
from annotations.models import Annotation, CopyStatus
from tests.browser.conftest import log_in
from tracing import services
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import Membership, Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENTS = ("Orchestrator", "WebSurfer")
NEW_PASSWORD = "quiet-lantern-41-orchard"


def _shot(page, name: str) -> None:
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _trace(project, name: str):
    parsed = ParsedTrace(
        name=name,
        source_format="whowhen",
        question="When did the museum open?",
        steps=[
            ParsedStep(
                speaker=AGENTS[i % 2],
                agent=AGENTS[i % 2],
                kind="message",
                content=f"{AGENTS[i % 2]} step {i}",
            )
            for i in range(4)
        ],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def test_an_invited_person_sets_a_password_and_labels_a_queue_item(live_server, page, browser):
    owner = get_user_model().objects.create_user("olga", password="a-long-test-password")
    project = services.project_create(name="Review", owner=owner)
    trace = _trace(project, "museum run")
    queue = queue_services.queue_create(
        project=project, user=owner, name="Triage", source="no_gold", overlap=1
    )

    log_in(page, live_server.url, "olga")
    page.goto(f"{live_server.url}/projects/{project.slug}/members/")
    assert "admin" not in page.inner_text("main").lower()
    page.click("#invite-link")
    page.fill("input[name=who]", "paula")
    page.select_option("select[name=role]", "annotator")
    page.click("#invite-form button")
    page.wait_for_selector("#invitation-url")
    link = page.inner_text("#invitation-url").strip()
    assert link.startswith(f"{live_server.url}/annotations/invitations/")
    assert "paula" in page.inner_text("#open-invitations")
    _shot(page, "invitation-created")

    # The second person, in a browser of their own (no session shared with the owner).
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    guest = context.new_page()
    errors: list[str] = []
    guest.on("pageerror", lambda exc: errors.append(str(exc)))
    guest.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        guest.goto(link)
        assert "Join Review" in guest.inner_text("h1")
        assert guest.input_value("#id_username") == "paula"
        guest.fill("#id_password1", "paula")  # Django's validators refuse it: short and like the username
        guest.fill("#id_password2", "paula")
        guest.click("#accept-form button")
        guest.wait_for_selector(".errorlist")
        assert "too short" in guest.inner_text("#accept-form")
        _shot(guest, "invitation-weak-password")
        guest.fill("#id_password1", NEW_PASSWORD)
        guest.fill("#id_password2", NEW_PASSWORD)
        guest.click("#accept-form button")
        guest.wait_for_url(f"**/annotations/projects/{project.slug}/queues/")
        assert "Welcome, paula" in guest.inner_text(".messages")
        _shot(guest, "invitation-accepted")

        guest.goto(f"{live_server.url}/annotations/queues/{queue.pk}/")
        guest.click("#start-labelling")
        guest.wait_for_selector("#step-0.current")
        guest.keyboard.press("j")
        guest.wait_for_selector("#step-1.current")
        guest.keyboard.press("Enter")
        guest.wait_for_selector("#step-1.decisive")
        guest.keyboard.press("Control+Enter")
        guest.wait_for_selector("text=Nothing left for you in this queue")

        # The link is spent: a second visit is refused.
        guest.goto(link)
        assert "not valid any more" in guest.inner_text("#invitation-error")
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the guest's pages: {errors}"

    paula = get_user_model().objects.get(username="paula")
    assert paula.check_password(NEW_PASSWORD)
    assert Membership.objects.get(project=project, user=paula).role == Role.ANNOTATOR
    answer = Annotation.objects.get(item__trace=trace)
    assert (answer.status, answer.annotator, answer.step_index, answer.agent_name) == (
        CopyStatus.SUBMITTED,
        paula,
        1,
        "WebSurfer",
    )

    # The owner sees the answer in the queue's item list, and can change paula's role on the members page.
    page.goto(f"{live_server.url}/annotations/queues/{queue.pk}/?status=answered")
    row = page.locator("#item-table tbody tr.item-row")
    assert row.count() == 1 and "paula answered" in " ".join(row.inner_text().split())
    _shot(page, "queue-items")
    page.goto(f"{live_server.url}/projects/{project.slug}/members/")
    page.select_option("select[aria-label='Role of paula']", "viewer")
    page.locator("form:has(select[aria-label='Role of paula']) button").click()
    page.wait_for_load_state("networkidle")
    assert Membership.objects.get(project=project, user=paula).role == Role.VIEWER
    _shot(page, "members")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
