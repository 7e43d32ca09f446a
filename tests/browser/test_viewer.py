"""The trace viewer and trace list in Chromium: a TRAIL waterfall, a Langfuse LLM call as chat, a content search,
a filtered and sorted list restored from its URL, and no page wider than a 1,280 px window."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.browser.conftest import log_in
from tests.conftest import ROOT, SHARED, import_now, incoming_path, sample_file
from tracing import services
from tracing.models import Role, Step, Trace

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TRAIL = SHARED / "traces" / "trail" / "gaia" / "3215fc75e81bdb73706a4fb37b66427f.trace.json"
LANGGRAPH = ROOT / "tests" / "fixtures" / "langfuse" / "langgraph-python-2025-08-22.trace.json"


def _shot(page, name: str) -> None:
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.fixture
def traces():
    user = get_user_model().objects.create_user("ada", password="a-long-test-password")
    project = services.project_create(name="Viewer", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    hand = sample_file("Hand-Crafted")
    found = {}
    for key, path in (("trail", TRAIL), ("langfuse", LANGGRAPH), ("whowhen", hand)):
        (job,) = import_now(project, incoming_path(path))
        found[key] = Trace.objects.get(pk=job.trace_ids[0])
    import_now(project, incoming_path(TRAIL.with_name(TRAIL.name.replace(".trace.", ".labels."))))
    found["project"] = project
    return found


def _no_wider_than_the_window(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, f"{page.url} is {width} px wide"


def test_the_waterfall_of_a_trail_trace_nests_spans_with_durations(live_server, page, traces):
    trace = traces["trail"]
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/traces/{trace.pk}/")
    waterfall = page.locator(".waterfall")
    waterfall.wait_for()
    rows = waterfall.locator(".wf-row")
    assert rows.count() == min(trace.step_count, 50)
    durations = waterfall.locator(".wf-dur").all_inner_texts()
    assert any(d.endswith(" s") for d in durations) and "1 m" in durations[0]  # the root spans the run
    # The LLM calls sit one level under the root; collapsing the root hides them.
    child = waterfall.locator(".wf-row.depth-1").first
    assert child.is_visible()
    _shot(page, "viewer-trail-waterfall")
    waterfall.locator("summary.wf-row[data-step='0']").click()
    assert not child.is_visible()
    assert page.locator(".final-answer").inner_text().strip().startswith("### 1. Task outcome")
    assert page.locator(".totals").inner_text().startswith("Duration")
    _no_wider_than_the_window(page)


def test_a_langfuse_llm_step_reads_as_chat_with_a_raw_json_toggle(live_server, page, traces):
    trace = traces["langfuse"]
    llm = Step.objects.filter(trace=trace, kind="llm_call").order_by("index").first()
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/traces/{trace.pk}/#step-{llm.index}")
    step = page.locator(f"#step-{llm.index}")
    assert step.locator(".msg.role-user").first.inner_text().endswith("Be helpful!")
    assert "Web-Search" in step.locator(".tool-call").first.inner_text()
    raw = step.locator(".raw-json pre")
    assert not raw.is_visible()
    step.locator(".raw-json summary").click()
    assert raw.is_visible() and '"GENERATION"' in raw.inner_text()
    # LangGraph's routing spans are hidden by default and come back with the toggle.
    routing = Step.objects.filter(trace=trace, speaker="should_continue").first()
    assert not page.locator(f"#step-{routing.index}").is_visible()
    page.uncheck("#hide-plumbing")
    assert page.locator(f"#step-{routing.index}").is_visible()
    _shot(page, "viewer-langfuse-chat")
    _no_wider_than_the_window(page)


def test_a_content_search_finds_the_websurfer_steps(live_server, page, traces):
    project = traces["project"]
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.fill("input[name=q]", "WebSurfer")
    page.wait_for_url("**q=WebSurfer**")
    page.wait_for_selector(".hit a")
    names = page.locator(".trace-cell > a").all_inner_texts()
    assert names == [traces["whowhen"].name]
    hit = page.locator(".hit a").first
    hit.click()
    page.wait_for_url("**/traces/**step=**")
    target = page.locator(".step.target")
    assert "websurfer" in target.text_content().lower()  # (perhaps inside the collapsed part)
    _no_wider_than_the_window(page)


def test_a_filtered_and_sorted_list_is_restored_from_its_url(live_server, page, traces):
    project = traces["project"]
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.select_option("select[name=has_gold]", "yes")
    page.wait_for_url("**has_gold=yes**")
    page.click("th.sortable >> text=Duration")
    page.wait_for_url("**ordering=-duration**")
    url = page.url
    expected = page.locator(".trace-cell > a").all_inner_texts()
    # Both labelled traces, the timed TRAIL run first; the Langfuse run has no gold label.
    assert expected == [traces["trail"].name, traces["whowhen"].name]
    _shot(page, "trace-list-filtered-sorted")

    other = page.context.new_page()
    other.goto(url)  # a bookmark: same filters, same order, same form state
    assert other.locator(".trace-cell > a").all_inner_texts() == expected
    assert other.locator("select[name=has_gold]").input_value() == "yes"
    assert other.locator("th[aria-sort=descending]").inner_text().lower().startswith("duration")
    _no_wider_than_the_window(other)
    other.close()


def test_the_list_sorts_by_the_latest_verdict_from_its_header(live_server, page, traces):
    from attribution.models import AttributionRun, Verdict

    for key, agent in (("trail", "Zeta"), ("langfuse", "Alpha")):
        trace = traces[key]
        run = AttributionRun.objects.create(
            project=trace.project, method="heuristic", trace_ids=[trace.pk], status="succeeded"
        )
        Verdict.objects.create(run=run, trace=trace, method="heuristic", agent_name=agent, step_index=1)
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{traces['project'].slug}/")
    page.click("th.sortable >> text=Latest verdict")
    page.wait_for_url("**ordering=verdict**")
    # By the blamed agent, A to Z; the trace without a verdict last.
    names = [traces[k].name for k in ("langfuse", "trail", "whowhen")]
    assert page.locator(".trace-cell > a").all_inner_texts() == names
    assert page.locator("th[aria-sort=ascending]").inner_text().lower().startswith("latest verdict")
    assert page.locator("select[name=ordering]").input_value() == "verdict"
    _shot(page, "trace-list-sorted-by-verdict")
    _no_wider_than_the_window(page)
    page.click("th.sortable >> text=Latest verdict")  # again: the other way, still without a verdict last
    page.wait_for_url("**ordering=-verdict**")
    assert page.locator(".trace-cell > a").all_inner_texts() == [names[1], names[0], names[2]]


def test_no_viewer_page_is_wider_than_the_window(live_server, page, traces):
    log_in(page, live_server.url, "ada")
    slug = traces["project"].slug
    urls = [f"/projects/{slug}/", f"/projects/{slug}/?q=WebSurfer&ordering=-tokens"]
    urls += [f"/traces/{traces[k].pk}/" for k in ("trail", "langfuse", "whowhen")]
    for url in urls:
        page.goto(live_server.url + url)
        page.wait_for_load_state("networkidle")
        _no_wider_than_the_window(page)
    _shot(page, "viewer-whowhen")


def test_a_flat_trace_gives_its_steps_the_whole_width_and_a_span_tree_shares_it(live_server, page, traces):
    """The trace body has two columns only beside a waterfall: a Who&When run has no spans, and its steps sat in the
    left 40% of a wide window with the right side empty."""
    page.set_viewport_size({"width": 1300, "height": 900})
    log_in(page, live_server.url, "ada")

    def widths(trace: Trace) -> tuple[float, float]:
        page.goto(f"{live_server.url}/traces/{trace.pk}/")
        page.locator(".step-list").wait_for()
        body = page.locator(".trace-body").bounding_box()["width"]
        return page.locator(".step-list").bounding_box()["width"], body

    steps, body = widths(traces["whowhen"])
    assert page.locator(".waterfall").count() == 0 and steps >= 0.95 * body
    steps, body = widths(traces["trail"])
    assert page.locator(".waterfall").count() == 1 and 0.45 * body < steps < 0.7 * body


def _heuristic_verdict(trace: Trace):
    """The offline heuristic's verdict on the trace, stored as a run would store it (the run itself is tested in
    tests/attribution; here only the pages that show it are)."""
    from attribution.methods import get_method
    from attribution.models import AttributionRun, Verdict
    from attribution.selectors import trace_view

    result = get_method("heuristic").run(trace_view(trace), with_ground_truth=True)
    run = AttributionRun.objects.create(
        project=trace.project, method="heuristic", trace_ids=[trace.pk], status="succeeded"
    )
    return Verdict.objects.create(
        run=run,
        trace=trace,
        method="heuristic",
        agent_name=result.agent,
        step_index=result.step,
        scores=[round(float(s), 4) for s in result.scores],
        reason=result.reason,
    )


def test_the_list_shows_verdicts_and_the_trace_page_a_blame_strip(live_server, page, traces):
    trace, project = traces["whowhen"], traces["project"]
    verdict = _heuristic_verdict(trace)
    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.select_option("select[name=has_verdict]", "yes")
    page.wait_for_url("**has_verdict=yes**")
    assert page.locator(".trace-cell > a").all_inner_texts() == [trace.name]
    cell = page.locator("td.ext-cell").first
    assert cell.inner_text().startswith(f"{verdict.agent_name} @ {verdict.step_index}")
    assert "heuristic" in cell.inner_text()
    _shot(page, "trace-list-verdicts")
    _no_wider_than_the_window(page)

    cell.locator("a").click()
    page.wait_for_url(f"**/traces/{trace.pk}/?step={verdict.step_index}**")
    assert "Blame strip" in page.locator(".blame-legend").inner_text()
    blamed = page.locator(f"#step-{verdict.step_index} .blame")
    level = round(
        verdict.scores[verdict.step_index] * 5
    )  # heat-0 .. heat-5, as tracing.selectors.blame_strip
    assert f"heat-{level}" in (blamed.get_attribute("class") or "").split() and level >= 3
    assert blamed.bounding_box()["width"] > 0  # drawn by the stylesheet: no inline style under the CSP
    assert page.locator(".blame").count() == min(trace.step_count, 50)
    _shot(page, "viewer-blame-strip")
    if folder := os.environ.get("CULPRIT_SCREENSHOTS"):  # the strip close up, as a person sees it
        page.locator(".blame-legend").scroll_into_view_if_needed()
        page.screenshot(path=str(Path(folder) / "viewer-blame-strip-close.png"))
    _no_wider_than_the_window(page)
