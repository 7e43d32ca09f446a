"""The live banner of a project and a trace that receive OTLP spans: what waits to be built, a warning when building
stalls, and what came since the page was drawn."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.tracing.test_otlp_incremental import TRACE, SpanTree, in_batches, request, send
from tracing import selectors, services
from tracing.models import OtlpSpan, Role, Trace
from tracing.services.otlp import otlp_spans_store_protobuf, otlp_trace_rebuild

pytestmark = pytest.mark.django_db


def _store(project, spans) -> None:
    """Spans accepted and not built yet (no worker ran)."""
    otlp_spans_store_protobuf(project=project, message=request(spans))


def test_a_project_without_otlp_spans_watches_quietly_until_something_comes(
    owner_client, project, imported_trace
):
    page = owner_client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    poll = reverse("tracing:project_live", args=[project.slug]) + f"?after={imported_trace.pk}"
    assert (
        f'hx-get="{poll}" hx-trigger="every 10s"' in page and "Live:" not in page and "live-state" not in page
    )
    # an uploaded trace does not grow: its page does not watch
    trace = owner_client.get(reverse("tracing:trace_detail", args=[imported_trace.pk]))
    assert b'id="live"' not in trace.content
    _store(project, SpanTree(agents=1, calls=2).by_start())  # an exporter's first spans
    banner = owner_client.get(poll).content.decode()
    assert 'hx-trigger="every 3s"' in banner and "waiting to be built in 1 trace" in banner


def test_the_trace_list_counts_the_spans_waiting_to_be_built_and_the_traces_that_came_since(
    owner_client, project
):
    tree = SpanTree(agents=2, calls=3)
    first, rest = in_batches(tree.by_start(), 5)[0], tree.by_start()[5:]
    send(project, first)
    page = owner_client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    newest = Trace.objects.get(project=project).pk
    poll = reverse("tracing:project_live", args=[project.slug]) + f"?after={newest}"
    assert f'hx-get="{poll}"' in page and 'hx-trigger="every 3s"' in page
    assert "Live: spans sent to the OTLP endpoint appear here" in page  # nothing waits

    _store(project, rest)
    other = SpanTree(agents=1, calls=2, trace_id=bytes.fromhex("11" * 16), seed=5)
    _store(project, other.by_start())
    banner = owner_client.get(poll).content.decode()
    waiting = len(rest) + len(other.spans)
    assert f'<strong class="live-count">{waiting}</strong> waiting to be built in 2 traces' in banner
    assert "new trace" not in banner and "live-warning" not in banner

    otlp_trace_rebuild(
        project_id=project.pk, trace_id=other.trace_id.hex()
    )  # the worker builds the new trace
    banner = owner_client.get(poll).content.decode()
    assert f'<strong class="live-count">{len(rest)}</strong> waiting to be built in 1 trace.' in banner
    assert "1 new trace · show" in banner and reverse("tracing:trace_list", args=[project.slug]) in banner


def test_a_trace_page_shows_its_waiting_spans_then_its_new_steps(owner_client, project):
    tree = SpanTree(agents=2, calls=3)
    batches = in_batches(tree.by_start(), 8)
    trace = send(project, batches[0])
    shown = trace.step_count
    page = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    poll = reverse("tracing:trace_live", args=[trace.pk]) + f"?steps={shown}"
    assert f'hx-get="{poll}"' in page

    _store(project, batches[1])
    banner = owner_client.get(poll).content.decode()
    assert f'<strong class="live-count">{len(batches[1])}</strong> waiting to be built.' in banner
    assert " in 1 trace" not in banner  # a trace page counts its own spans only

    otlp_trace_rebuild(project_id=project.pk, trace_id=TRACE.hex())
    trace.refresh_from_db()
    banner = owner_client.get(poll).content.decode()
    added = trace.step_count - shown
    assert added > 0 and f"{added} new step{'s' if added > 1 else ''} · show" in banner
    assert f"?step={shown}#step-{shown}" in banner  # where appended steps start
    assert "live-count" not in banner


def test_spans_waiting_longer_than_a_build_takes_warn_that_no_worker_may_be_running(
    owner_client, project, settings
):
    settings.CULPRIT_WORKER_STALLED_AFTER = 60
    _store(project, SpanTree(agents=1, calls=2).by_start())
    poll = reverse("tracing:project_live", args=[project.slug]) + "?after=0"
    assert "live-warning" not in owner_client.get(poll).content.decode()
    OtlpSpan.objects.filter(project=project).update(received_at=timezone.now() - timedelta(minutes=3))
    banner = owner_client.get(poll).content.decode()
    assert "the oldest for 3 min" in banner and "live-warning" in banner and "Celery" in banner


def test_the_waiting_count_is_capped(project, monkeypatch):
    monkeypatch.setattr(selectors, "ARRIVING_CAP", 4)
    _store(project, SpanTree(agents=1, calls=4).by_start())
    arriving = selectors.otlp_arriving(project=project)
    assert (arriving.spans, arriving.capped, arriving.count_text, arriving.ever) == (4, True, "4+", True)
    trace = selectors.otlp_arriving(project=project, trace_id=TRACE.hex())
    assert trace.capped and trace.traces == 1


def test_the_live_banners_are_for_members_only_and_validate_their_input(
    client, make_user, owner_client, project
):
    trace = send(project, SpanTree(agents=1, calls=2).by_start())
    live = reverse("tracing:project_live", args=[project.slug])
    assert owner_client.get(live + "?after=-1").status_code == 400
    assert owner_client.get(reverse("tracing:trace_live", args=[trace.pk]) + "?steps=x").status_code == 400
    client.force_login(make_user("stranger"))
    assert client.get(live).status_code == 404
    assert client.get(reverse("tracing:trace_live", args=[trace.pk])).status_code == 404


def test_a_viewer_sees_the_live_banner(client, make_user, project):
    viewer = make_user("viewer")
    services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    _store(project, SpanTree(agents=1, calls=2).by_start())
    client.force_login(viewer)
    assert (
        "waiting to be built"
        in client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    )


def test_the_api_says_what_waits_to_be_built(client, project, settings):
    token = services.api_token_create(project=project, name="ci", user=None)[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    tree = SpanTree(agents=1, calls=2)
    _store(project, tree.by_start())
    status = client.get("/api/otlp/status", **auth).json()
    assert status["waiting_spans"] == len(tree.spans) and status["waiting_traces"] == 1
    assert status["oldest_waiting_at"] and not status["more"] and not status["stalled"]
    other = client.get("/api/otlp/status", {"trace_id": "ab" * 16}, **auth).json()
    assert other["waiting_spans"] == 0 and other["oldest_waiting_at"] is None
    otlp_trace_rebuild(project_id=project.pk, trace_id=TRACE.hex())
    done = client.get("/api/otlp/status", {"trace_id": TRACE.hex().upper()}, **auth).json()
    assert done["waiting_spans"] == 0
    assert client.get("/api/otlp/status", {"trace_id": "a" * 65}, **auth).status_code == 400
    assert client.get("/api/otlp/status").status_code == 401
