"""Deleting traces: from a trace's page, from a filtered list (with a confirmation that holds its count) and through
the API; everything that hangs from a trace goes with it, in every app; owners only; audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotations import services as annotation_services
from annotations.models import QueueItem, QueueSource
from attribution.models import AttributionRun, Verdict
from tests.conftest import import_now, incoming_path, sample_file
from tests.tracing.test_otlp_incremental import TRACE, SpanTree, request, send
from tracing import services
from tracing.models import (
    Agent,
    AuditEvent,
    GoldLabel,
    OtlpPendingBuild,
    OtlpSpan,
    Role,
    Step,
    StepSearch,
    Trace,
    TraceSearch,
)
from tracing.services.otlp import otlp_builds_mark, otlp_spans_store_protobuf, otlp_trace_rebuild

pytestmark = pytest.mark.django_db


def _labelled(project) -> Trace:
    """An imported Who&When run with its gold label, a verdict, a review-queue item and its search rows."""
    (job,) = import_now(project, incoming_path(sample_file("Hand-Crafted")))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    run = AttributionRun.objects.create(project=project, method="heuristic", trace_ids=[trace.pk])
    Verdict.objects.create(run=run, trace=trace, method="heuristic", agent_name="WebSurfer", step_index=1)
    annotation_services.queue_create(
        project=project, user=None, name="check", source=QueueSource.SEARCH, filter={"q": ""}, overlap=1
    )
    services.search_index_run()
    return trace


def test_a_trace_goes_with_everything_that_hangs_from_it_and_nothing_else(
    owner_client, project, make_project
):
    trace = _labelled(project)
    (other_job,) = import_now(project, incoming_path(sample_file("Algorithm-Generated")))
    elsewhere = _labelled(make_project("Elsewhere"))
    assert GoldLabel.objects.filter(trace=trace).exists() and QueueItem.objects.filter(trace=trace).exists()
    assert (
        StepSearch.objects.filter(trace=trace).exists() and TraceSearch.objects.filter(trace=trace).exists()
    )

    response = owner_client.post(reverse("tracing:trace_delete", args=[trace.pk]))
    assert response.status_code == 302 and response.url == reverse("tracing:trace_list", args=[project.slug])
    assert not Trace.objects.filter(pk=trace.pk).exists()
    for model in (Step, Agent, GoldLabel, Verdict, QueueItem, StepSearch, TraceSearch):
        assert not model.objects.filter(trace_id=trace.pk).exists(), model.__name__
    assert Trace.objects.filter(pk__in=[other_job.trace_ids[0], elsewhere.pk]).count() == 2
    assert Step.objects.filter(trace=elsewhere).count() == elsewhere.step_count
    event = AuditEvent.objects.get(project=project, action="traces.deleted")
    assert event.target == trace.name and event.details == {"count": 1, "names": [trace.name]}
    page = owner_client.get(response.url).content.decode()
    assert f"Deleted trace “{trace.name}”." in page

    # Its content is not in the project any more: uploading the same file imports it again, not as a duplicate.
    (again,) = import_now(project, incoming_path(sample_file("Hand-Crafted")))
    assert again.status == "succeeded" and len(again.trace_ids) == 1


def test_a_trace_the_otlp_endpoint_built_goes_with_its_stored_spans(owner_client, project):
    tree = SpanTree(agents=2, calls=3)
    trace = send(project, tree.by_start())
    otlp_builds_mark(project_id=project.pk, trace_ids=[TRACE.hex()])
    assert OtlpSpan.objects.filter(project=project).count() == len(tree.spans)
    owner_client.post(reverse("tracing:trace_delete", args=[trace.pk]))
    assert not OtlpSpan.objects.filter(project=project).exists()
    assert not OtlpPendingBuild.objects.filter(project=project).exists()
    # A span of that trace id sent later starts a new trace of its own, not the deleted one rebuilt.
    late = tree.by_start()[-1:]
    otlp_spans_store_protobuf(project=project, message=request(late))
    rebuilt = otlp_trace_rebuild(project_id=project.pk, trace_id=TRACE.hex())
    assert rebuilt.pk != trace.pk and rebuilt.metadata["span_count"] == 1


def test_a_filtered_list_is_deleted_after_a_confirmation_whose_count_must_still_hold(owner_client, project):
    hand = [import_now(project, incoming_path(p))[0].trace_ids[0] for p in _who_and_when("Hand-Crafted", 3)]
    algo = import_now(project, incoming_path(sample_file("Algorithm-Generated")))[0].trace_ids
    url = reverse("tracing:traces_delete", args=[project.slug])
    scope = "format=whowhen&q=&agent=WebSurfer"

    page = owner_client.get(url, {"scope": scope})
    html = page.content.decode()
    assert page.status_code == 200 and '<strong class="delete-count">3</strong> traces' in html
    assert "agent WebSurfer" in html and all(Trace.objects.get(pk=pk).name in html for pk in hand)

    unconfirmed = owner_client.post(url, {"scope": scope, "expected": 3})
    assert unconfirmed.status_code == 400 and "Tick the box to confirm" in unconfirmed.content.decode()
    stale = owner_client.post(url, {"scope": scope, "expected": 2, "confirm": "on"})
    assert stale.status_code == 400 and "The selection changed since you looked" in stale.content.decode()
    assert Trace.objects.filter(pk__in=hand).count() == 3

    done = owner_client.post(url, {"scope": scope, "expected": 3, "confirm": "on"})
    assert done.status_code == 302
    assert not Trace.objects.filter(pk__in=hand).exists() and Trace.objects.filter(pk__in=algo).exists()
    assert "Deleted 3 traces." in owner_client.get(done.url).content.decode()
    assert AuditEvent.objects.get(action="traces.deleted").details["count"] == 3
    assert owner_client.get(url, {"scope": "outcome=nonsense"}).status_code == 400


def test_only_owners_delete(client, make_user, project):
    trace = send(project, SpanTree(agents=1, calls=2).by_start())
    for role in (Role.VIEWER, Role.ANNOTATOR):
        user = make_user(f"a-{role}")
        services.membership_set(project=project, user=user, role=role)
        client.force_login(user)
        assert client.post(reverse("tracing:trace_delete", args=[trace.pk])).status_code == 403
        assert client.get(reverse("tracing:traces_delete", args=[project.slug])).status_code == 403
        page = client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
        assert "Delete this trace" not in page
    assert Trace.objects.filter(pk=trace.pk).exists()


def test_the_api_deletes_with_a_token_an_owner_made(client, owner, project, make_project, make_user):
    trace = send(project, SpanTree(agents=1, calls=2).by_start())
    owners = {
        "HTTP_AUTHORIZATION": f"Bearer {services.api_token_create(project=project, name='o', user=owner)[1]}"
    }
    nobody = {
        "HTTP_AUTHORIZATION": f"Bearer {services.api_token_create(project=project, name='n', user=None)[1]}"
    }
    other = make_project("Other", {owner: Role.OWNER})
    elsewhere = {
        "HTTP_AUTHORIZATION": f"Bearer {services.api_token_create(project=other, name='x', user=owner)[1]}"
    }
    assert client.delete(f"/api/traces/{trace.pk}").status_code == 401
    assert client.delete(f"/api/traces/{trace.pk}", **elsewhere).status_code == 404
    refused = client.delete(f"/api/traces/{trace.pk}", **nobody)
    assert refused.status_code == 403 and "owners" in refused.json()["detail"]
    assert client.delete(f"/api/traces/{trace.pk}", **owners).status_code == 204
    assert not Trace.objects.filter(pk=trace.pk).exists()
    assert AuditEvent.objects.get(action="traces.deleted").actor == owner
    assert client.delete(f"/api/traces/{trace.pk}", **owners).status_code == 404


def _who_and_when(subset: str, n: int):
    from tests.conftest import whowhen_files

    return [p for p in whowhen_files() if p.parent.name == subset and '"WebSurfer"' in p.read_text()][:n]


def test_a_run_over_deleted_traces_lets_them_go_and_still_finishes(owner_client, project):
    from attribution.models import RunStatus

    ids = [bytes([i]) * 16 for i in (1, 2, 3)]
    a, b, c = (send(project, SpanTree(agents=1, calls=2, trace_id=i).by_start(), trace_id=i) for i in ids)
    run = AttributionRun.objects.create(
        project=project,
        method="heuristic",
        trace_ids=[a.pk, b.pk, c.pk],
        total=3,
        done=1,
        status=RunStatus.RUNNING,
    )
    Verdict.objects.create(run=run, trace=b, method="heuristic", agent_name="x", step_index=0)
    owner_client.post(reverse("tracing:trace_delete", args=[b.pk]))  # the verdict it wrote goes too
    run.refresh_from_db()
    assert (run.trace_ids, run.total, run.done, run.status) == ([a.pk, c.pk], 2, 0, RunStatus.RUNNING)
    Verdict.objects.create(run=run, trace=a, method="heuristic", agent_name="x", step_index=0)
    AttributionRun.objects.filter(pk=run.pk).update(done=1)
    owner_client.post(
        reverse("tracing:trace_delete", args=[c.pk])
    )  # the one left to do: nothing is left to wait for
    run.refresh_from_db()
    assert (run.total, run.done, run.status) == (1, 1, RunStatus.SUCCEEDED)
    finished = AttributionRun.objects.create(
        project=project, method="heuristic", trace_ids=[a.pk], total=1, done=1, status=RunStatus.SUCCEEDED
    )
    owner_client.post(reverse("tracing:trace_delete", args=[a.pk]))
    finished.refresh_from_db()
    assert (finished.trace_ids, finished.total, finished.done) == ([a.pk], 1, 1)  # history stays as it was


def test_a_campaign_over_deleted_traces_lets_them_go_and_still_finishes(owner_client, project):
    from attribution import services as attribution_services
    from attribution.models import CampaignStatus, Injection, InjectionCampaign, InjectionStatus

    ids = [bytes([i]) * 16 for i in (4, 5, 6)]
    a, b, c = (send(project, SpanTree(agents=1, calls=2, trace_id=i).by_start(), trace_id=i) for i in ids)
    campaign = InjectionCampaign.objects.create(
        project=project, trace_ids=[a.pk, b.pk, c.pk], status=CampaignStatus.RUNNING, total=4, done=2, kept=1
    )

    def planned(origin, key, status=InjectionStatus.PENDING):
        return Injection.objects.create(
            campaign=campaign, origin=origin, key=key, fault_kind="x", status=status
        )

    planned(a, "a1", InjectionStatus.KEPT)
    waiting = planned(a, "a2")
    planned(b, "b1", InjectionStatus.DISCARDED)
    left = planned(c, "c1")
    owner_client.post(reverse("tracing:trace_delete", args=[a.pk]))  # one kept, one still to replay
    campaign.refresh_from_db()
    assert (campaign.trace_ids, campaign.total, campaign.done, campaign.kept) == ([b.pk, c.pk], 2, 1, 0)
    assert campaign.status == CampaignStatus.RUNNING
    # The deleted injection's task, delivered now, finds nothing to do; the campaign counts nothing for it.
    assert attribution_services.injection_execute(injection_id=waiting.pk) is None
    owner_client.post(reverse("tracing:trace_delete", args=[c.pk]))  # its last pending injection goes
    campaign.refresh_from_db()
    assert (campaign.total, campaign.done, campaign.status) == (1, 1, CampaignStatus.SUCCEEDED)
    assert not Injection.objects.filter(pk=left.pk).exists()

    queued = InjectionCampaign.objects.create(project=project, trace_ids=[b.pk], status=CampaignStatus.QUEUED)
    owner_client.post(reverse("tracing:trace_delete", args=[b.pk]))  # nothing left to break
    queued.refresh_from_db()
    assert queued.status == CampaignStatus.CANCELLED
    assert queued.stop_reason == "every trace it was to break was deleted"
    campaign.refresh_from_db()
    assert (campaign.trace_ids, campaign.total, campaign.done) == ([b.pk], 1, 1)  # finished: kept as it was


@pytest.mark.django_db(
    transaction=True
)  # the verdict's write meets the deletion at commit, as it does in a worker
def test_a_trace_deleted_while_a_model_attributes_it_counts_nothing(project, monkeypatch):
    """A slow method (an LLM judge) is attributing the trace when an owner deletes it: the verdict's write fails on
    the missing trace and the run's counters stay as the deletion left them; a task for it sent later does nothing."""
    from attribution.methods.base import MethodResult
    from attribution.models import RunStatus
    from attribution.services import runs

    ids = [bytes([i]) * 16 for i in (7, 8)]
    a, b = (send(project, SpanTree(agents=1, calls=2, trace_id=i).by_start(), trace_id=i) for i in ids)
    run = AttributionRun.objects.create(
        project=project, method="heuristic", trace_ids=[a.pk, b.pk], total=2, status=RunStatus.RUNNING
    )

    def deleted_meanwhile(run_, trace, *args, **kwargs):
        services.traces_delete(project=project, trace_ids=[trace.pk])
        return MethodResult(agent="x", step=0, confidence=0.5, reason="r"), ""

    monkeypatch.setattr(runs, "_attribute", deleted_meanwhile)
    assert runs.run_trace(run_id=run.pk, trace_id=a.pk) is None
    run.refresh_from_db()
    assert (run.trace_ids, run.total, run.done, run.status) == ([b.pk], 1, 0, RunStatus.RUNNING)
    assert runs.run_trace(run_id=run.pk, trace_id=a.pk) is None  # redelivered: nothing to do
    assert not Verdict.objects.filter(run=run).exists()
