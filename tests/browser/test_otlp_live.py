"""A person watches a project receive OTLP spans, in Chromium with a real Celery worker: the trace list says a new
trace came and shows it; the trace page says its new steps came and opens where they start."""

from __future__ import annotations

import urllib.request

import pytest

from tests.browser.conftest import log_in, owned_project, screenshot
from tests.conftest import wait_for
from tests.tracing.test_otlp_incremental import SpanTree, in_batches, request
from tracing import services
from tracing.models import OtlpSpan, Trace

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _send(base_url: str, token: str, spans) -> None:
    """One export request to the OTLP endpoint, as an SDK's exporter sends it."""
    post = urllib.request.Request(  # noqa: S310 (the test's own server)
        f"{base_url}/v1/traces",
        data=request(spans).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(post, timeout=30) as response:  # noqa: S310 (the test's own server)
        assert response.status == 200


def test_a_person_watches_spans_arrive_as_a_new_trace_and_then_as_new_steps(live_server, celery_worker, page):
    project = owned_project("Live", "ada")
    token = services.api_token_create(project=project, name="otel", user=None)[1]
    earlier = SpanTree(agents=1, calls=2, trace_id=bytes.fromhex("22" * 16), seed=7)
    _send(live_server.url, token, earlier.by_start())
    wait_for(lambda: Trace.objects.filter(project=project).exists(), worker=celery_worker)

    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.wait_for_selector("#live >> text=Live: spans sent to the OTLP endpoint appear here")

    tree = SpanTree(agents=2, calls=3, seed=2)
    first, second = in_batches(tree.by_start(), len(tree.spans) // 2 + 1)
    _send(live_server.url, token, first)
    page.wait_for_selector("#live >> text=1 new trace · show", timeout=30_000)
    screenshot(page, "otlp-live-list")
    page.click("#live >> text=1 new trace · show")
    page.wait_for_load_state("networkidle")
    page.click(f"text={Trace.objects.get(project=project, external_id=tree.trace_id.hex()).name}")
    page.wait_for_selector(".trace-head")
    shown = Trace.objects.get(project=project, external_id=tree.trace_id.hex()).step_count

    _send(live_server.url, token, second)
    wait_for(lambda: not OtlpSpan.objects.filter(project=project, built=False).exists(), worker=celery_worker)
    added = Trace.objects.get(project=project, external_id=tree.trace_id.hex()).step_count - shown
    assert added > 0
    page.wait_for_selector(f"#live >> text={added} new steps · show", timeout=30_000)
    screenshot(page, "otlp-live-trace")
    page.click(f"#live >> text={added} new steps · show")
    page.wait_for_selector(f"#step-{shown}")
    assert f"step={shown}" in page.url
