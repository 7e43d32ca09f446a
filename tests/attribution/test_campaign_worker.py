"""Injection campaigns on a real Celery worker: fanned out as a group, and resumed after the worker is killed with
SIGKILL mid-campaign without running a finished replay again or writing a case twice."""

from __future__ import annotations

from collections import Counter

import pytest

from attribution import services
from attribution.models import CampaignStatus, Injection, InjectionCampaign, InjectionStatus, ReplayRecord
from tests.attribution.test_campaigns import System, real_trace, use_hook
from tests.conftest import wait_for
from tracing.models import GoldLabel, Provenance, Trace

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


class SlowSystem(System):
    """Each replay takes a moment, as a real system's would, so the worker can be killed in the middle."""

    def answer(self, payload: dict) -> dict:
        import time

        time.sleep(0.3)
        return super().answer(payload)


def test_a_sandbox_campaign_runs_on_the_worker(project, celery_worker):
    services.sandbox_clean_runs_generate(project=project, runs=3, seed=60)
    ids = list(Trace.objects.filter(project=project).values_list("pk", flat=True))
    campaign = services.campaign_create(project=project, trace_ids=ids, faults_per_trace=2)
    done = wait_for(
        lambda: InjectionCampaign.objects.filter(pk=campaign.pk, status=CampaignStatus.SUCCEEDED).first(),
        timeout=60,
    )
    assert done.done == done.total == 6 and done.kept >= 1
    assert Trace.objects.filter(project=project, provenance=Provenance.INJECTED).count() == done.kept


def test_a_campaign_survives_a_worker_killed_mid_campaign_without_repeating_finished_replays(
    project, celery_worker, slow_system
):
    traces = [real_trace(project, f"crew/run-{i}") for i in range(5)]
    use_hook(project, slow_system)
    campaign = services.campaign_create(project=project, trace_ids=[t.pk for t in traces], faults_per_trace=4)
    wait_for(lambda: ReplayRecord.objects.filter(campaign=campaign).count() >= 3, timeout=60)
    celery_worker.kill()
    finished_before = set(ReplayRecord.objects.filter(campaign=campaign).values_list("trace_id", "key"))
    assert len(finished_before) < 20, "the campaign finished before the kill: make replays slower"
    celery_worker.start()
    done = wait_for(
        lambda: (
            InjectionCampaign.objects.filter(pk=campaign.pk)
            .exclude(status__in=[CampaignStatus.QUEUED, CampaignStatus.RUNNING])
            .first()
        ),
        timeout=150,
        worker=celery_worker,
        reap_after=30,  # beat's reaper, once the broker had its chance (see test_worker_crash)
    )

    assert done.status == CampaignStatus.SUCCEEDED, done.stop_reason or done.error
    assert done.done == done.total == 20
    assert Injection.objects.filter(campaign=campaign, status=InjectionStatus.PENDING).count() == 0
    # Every replay is recorded once; the hook saw each injection at most twice (only the one in flight at the
    # kill can be asked again), and a replay finished before the kill was never asked for again.
    assert ReplayRecord.objects.filter(campaign=campaign).count() == 20
    asked = Counter(
        (
            r["json"]["trace"]["id"],
            r["json"]["corrections"][0]["index"],
            r["json"]["corrections"][0]["content"],
        )
        for r in slow_system.requests
    )
    assert sum(n - 1 for n in asked.values()) <= 1, asked
    kept = Injection.objects.filter(campaign=campaign, status=InjectionStatus.KEPT)
    cases = Trace.objects.filter(project=project, provenance=Provenance.INJECTED)
    assert cases.count() == kept.count() == done.kept
    assert GoldLabel.objects.filter(trace__in=cases).count() == cases.count()
    assert set(kept.values_list("result_trace_id", flat=True)) == set(cases.values_list("pk", flat=True))


def test_the_pages_generate_sandbox_v2_runs_unless_v1_is_asked_for(project, owner, client, celery_worker):
    """The runs page's sandbox form, through the worker: v2 failures by default (the replayer cannot know their
    fault), v1 ones only when asked, and fault-free runs for campaigns are v1 either way."""
    from django.urls import reverse

    from attribution.replay import sandbox, sandbox_v2

    client.force_login(owner)
    url = reverse("attribution:sandbox_generate", args=[project.slug])
    assert client.post(url, {"runs": "3", "seed": "5", "clean": "1"}).status_code == 302
    v2 = wait_for(
        lambda: (
            names
            if len(names := [t for t in Trace.objects.filter(project=project).values_list("name", flat=True)])
            >= 2
            and any(sandbox_v2.parse_name(n) for n in names)
            else None
        ),
        timeout=60,
    )
    assert any(sandbox_v2.parse_name(n) for n in v2)
    assert not any((sandbox.parse_name(n) or (0, ()))[1] for n in v2)  # no v1 failure
    assert client.post(url, {"runs": "3", "seed": "5", "version": "1", "mode": "natural"}).status_code == 302
    wait_for(
        lambda: any(
            (sandbox.parse_name(n) or (0, ()))[1]
            for n in Trace.objects.filter(project=project).values_list("name", flat=True)
        ),
        timeout=60,
    )
    refused = client.post(url, {"runs": "2", "seed": "5", "version": "3"}, follow=True).content.decode()
    assert "Sandbox runs not generated: Sandbox: Select a valid choice." in refused
    assert 'name="version"' in refused and 'name="mode"' in refused
