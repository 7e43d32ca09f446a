"""An annotator labels a queue in real Chromium with the keyboard only: move, mark, categorise, explain, reload
(the draft survives), page through a long trace, read the cheatsheet, submit, skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from annotations import services as queue_services
from annotations.models import Annotation, CopyStatus, Skip
from tests.browser.conftest import log_in
from tracing import services
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import Role

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENTS = ("Planner", "Coder", "Checker")


def _trace(project, name: str, steps: int):
    parsed = ParsedTrace(
        name=name,
        source_format="whowhen",
        question="What is 6 x 7?",
        steps=[
            ParsedStep(
                speaker=AGENTS[i % 3],
                agent=AGENTS[i % 3],
                kind="message",
                content=("long line\n" * 40 if i == 2 else f"{AGENTS[i % 3]} says step {i}"),
            )
            for i in range(steps)
        ],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=steps, parsed=parsed)


def _shot(page, name: str) -> None:
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=False)


def test_an_annotator_labels_a_queue_item_with_the_keyboard_only(live_server, page):
    owner = get_user_model().objects.create_user("olga", password="a-long-test-password")
    ann = get_user_model().objects.create_user("ann", password="a-long-test-password")
    project = services.project_create(name="Review", owner=owner)
    services.membership_set(project=project, user=ann, role=Role.ANNOTATOR)
    long_trace = _trace(project, "long run", 60)  # more steps than one window (50)
    _trace(project, "short run", 5)
    queue = queue_services.queue_create(
        project=project,
        user=owner,
        name="Triage",
        source="no_gold",
        overlap=1,
        instructions="Blame the first wrong step.",
    )

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "a-long-test-password")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/projects/{project.slug}/")
    page.goto(f"{live_server.url}/annotations/queues/{queue.pk}/next/")
    page.wait_for_selector("#step-0.current")
    assert "long run" in page.inner_text(".trace-name")
    kb = page.keyboard

    for _ in range(3):
        kb.press("j")
    kb.press("k")
    page.wait_for_selector("#step-2.current")
    kb.press("o")  # step 2 is long: collapsed until opened
    assert page.locator("#step-2 details").get_attribute("open") is not None
    kb.press("Enter")
    page.wait_for_selector("#step-2.decisive")
    assert page.inner_text("#answer-summary").startswith("Decisive error: Checker at step 2")
    kb.press("1")  # group 1: memory
    kb.press("2")  # its second type: retrieval failure
    assert "retrieval failure" in page.inner_text("#answer-summary")
    kb.press("r")
    kb.type("Checker ignored the retrieved table")
    kb.press("Escape")

    # A further error besides the decisive one: step 4, added with "a"; the next digits set its own category.
    kb.press("j")
    kb.press("a")  # step 3 added by mistake...
    page.wait_for_selector("#step-3.further")
    kb.press("x")  # ...and removed again
    page.wait_for_selector("#step-3:not(.further)")
    kb.press("j")
    page.wait_for_selector("#step-4.current")
    kb.press("a")
    page.wait_for_selector("#step-4.further")
    kb.press("1")
    kb.press("1")
    further = "#further-errors li.further-error"
    assert page.locator(further).count() == 1
    assert page.inner_text(f"{further} .fe-step") == "4"
    assert page.input_value(f"{further} select[name=error_category]").startswith("memory.")
    assert page.input_value("#id_category") == "memory.retrieval_failure"  # the decisive one's is unchanged
    assert "1 further error" in page.inner_text("#answer-summary")
    kb.press("k")
    kb.press("k")
    page.wait_for_selector("#step-2.current")
    _shot(page, "labelling-marked")

    page.reload()  # the draft survives
    page.wait_for_selector("#step-2.current.decisive")
    assert page.input_value("#id_reason") == "Checker ignored the retrieved table"
    assert page.input_value("#id_category") == "memory.retrieval_failure"
    page.wait_for_selector("#step-4.further")  # the further error came back with the draft

    for _ in range(48):  # to the last step of the first window, and one more: the next window opens
        kb.press("j")
    page.wait_for_selector("#step-50.current")
    assert "page 2 of 2" in page.inner_text(".pager")
    assert "at step 2" in page.inner_text("#answer-summary")  # the answer travelled with the draft

    kb.press("?")
    page.wait_for_selector("#cheatsheet[open]")
    assert "Ctrl" in page.inner_text("#cheatsheet")
    kb.press("Escape")
    page.wait_for_selector("#cheatsheet:not([open])", state="attached")

    kb.press("Control+Enter")
    page.wait_for_selector("#step-0.current")
    assert "short run" in page.inner_text(".trace-name")
    answer = Annotation.objects.get(item__trace=long_trace)
    assert (answer.status, answer.annotator, answer.step_index, answer.agent_name) == (
        CopyStatus.SUBMITTED,
        ann,
        2,
        "Checker",
    )
    assert (
        answer.category == "memory.retrieval_failure"
        and answer.reason == "Checker ignored the retrieved table"
    )
    assert answer.lead_time_ms > 0
    (error,) = answer.further_errors.all()
    assert (error.step_index, error.agent_name) == (4, "Coder") and error.category.startswith("memory.")

    # A second look: "b" reopens the answer just given, as it was; changed and saved, the next item comes back.
    kb.press("b")
    page.wait_for_selector(".editing-note")
    assert "long run" in page.inner_text(".trace-name")
    assert page.input_value("#id_step_index") == "2"
    assert page.input_value("#id_reason") == "Checker ignored the retrieved table"
    page.wait_for_selector("#step-4.further")
    page.wait_for_selector("#step-2.current")  # it opens on the answer's step
    kb.press("j")
    page.wait_for_selector("#step-3.current")
    kb.press("Enter")
    page.wait_for_selector("#step-3.decisive")
    kb.press("Control+Enter")
    page.wait_for_selector("text=Your answer on long run was changed")
    assert "short run" in page.inner_text(".trace-name")
    answer.refresh_from_db()
    assert (answer.step_index, answer.agent_name, answer.status) == (3, "Planner", CopyStatus.SUBMITTED)
    assert [e.step_index for e in answer.further_errors.all()] == [4]

    kb.press("s")  # skip the second item: the queue has nothing else for ann
    page.wait_for_selector("text=Nothing left for you in this queue")
    assert Skip.objects.filter(annotator=ann, item__trace__name="short run").exists()
    assert Annotation.objects.get(item__trace__name="short run").status == CopyStatus.OPEN


def test_an_owner_creates_a_queue_reads_the_agreement_and_adjudicates(live_server, page):
    owner = get_user_model().objects.create_user("olga", password="a-long-test-password")
    project = services.project_create(name="Review", owner=owner)
    people = []
    for name in ("ann", "bob"):
        person = get_user_model().objects.create_user(name)
        services.membership_set(project=project, user=person, role=Role.ANNOTATOR)
        people.append(person)
    agreed, split = _trace(project, "agreed run", 6), _trace(project, "split run", 7)

    log_in(page, live_server.url, "olga")
    page.wait_for_url(f"**/projects/{project.slug}/")
    page.click(f"nav a[href='/annotations/projects/{project.slug}/queues/']")
    page.fill("input[name=name]", "Triage")
    page.select_option("select[name=source]", "no_gold")
    page.fill("input[name=overlap]", "2")
    page.fill("textarea[name=instructions]", "Blame the first wrong step.")
    _shot(page, "queue-create")
    page.click("text=Create queue")
    page.wait_for_selector("#start-labelling")
    assert "2 items" in page.inner_text("main")

    from annotations.models import ReviewQueue

    queue = ReviewQueue.objects.get(name="Triage")
    for person, steps in zip(people, ((4, 1), (4, 5)), strict=True):
        for step in steps:
            copy = queue_services.annotation_claim(queue=queue, user=person)
            queue_services.annotation_submit(
                annotation=copy, user=person, step_index=step, reason=f"{person} says"
            )

    page.click("text=Agreement")
    page.wait_for_selector("#queue-agreement")
    assert page.inner_text("#agent-agreement") == "50.0%"
    assert page.inner_text("#step-agreement") == "50.0%"
    assert page.locator("#per-annotator tbody tr").count() == 2
    _shot(page, "agreement")

    page.click("text=Adjudicate 1 disagreement")
    page.click("#accept-unanimous")
    page.wait_for_selector("text=1 unanimous item accepted")
    page.click("#disagreements >> text=Decide")
    page.wait_for_selector("#answers")
    _shot(page, "adjudicate-item")
    page.click("#answers li:has-text('bob') >> text=Accept this answer")
    page.wait_for_selector("text=resolved.")
    _shot(page, "adjudication")
    gold = split.gold_labels.get()
    assert (gold.source, gold.step_index, gold.agent_name) == ("adjudicated", 5, "Checker")
    assert agreed.gold_labels.get().source == "annotator"
    page.click(f"#resolved a:has-text('{split.name}')")
    page.wait_for_selector(".gold-label")
    assert "adjudicated" in page.inner_text(".gold-label")
