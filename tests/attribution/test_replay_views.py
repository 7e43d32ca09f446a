from __future__ import annotations

import pytest
from django.urls import reverse

from attribution import services
from attribution.models import Verdict
from tracing.models import Role, Trace

pytestmark = pytest.mark.django_db


def _counterfactual_verdict(project) -> Verdict:  # type: ignore[no-untyped-def]
    services.sandbox_cases_generate(project=project, runs=3, seed=11)
    trace = Trace.objects.filter(project=project).first()
    run = services.run_create(project=project, method="counterfactual", trace_ids=[trace.pk], enqueue=False)
    services.run_execute_inline(run=run)
    return Verdict.objects.get(run=run)


def test_the_replay_inspector_shows_the_flip_beside_the_original_run(owner_client, project):
    verdict = _counterfactual_verdict(project)
    gold = verdict.trace.gold_labels.get()
    assert (verdict.agent_name, verdict.step_index) == (gold.agent_name, gold.step_index)
    panel = owner_client.get(reverse("attribution:trace_panel", args=[verdict.trace_id])).content.decode()
    assert reverse("attribution:replay_inspector", args=[verdict.pk]) in panel
    body = owner_client.get(reverse("attribution:replay_inspector", args=[verdict.pk])).content.decode()
    assert "the outcome flips" in body and "Counterfactual continuation" in body
    assert f"#{verdict.step_index}" in body and "corrected in the replay" in body
    other = owner_client.get(reverse("attribution:replay_inspector", args=[verdict.pk]), {"replay": "0"})
    assert other.status_code == 200


def test_a_stranger_cannot_open_someone_elses_replays(client, project, make_user):
    verdict = _counterfactual_verdict(project)
    client.force_login(make_user("eve"))
    assert client.get(reverse("attribution:replay_inspector", args=[verdict.pk])).status_code == 404


def test_generating_sandbox_runs_from_the_runs_page_queues_a_task(owner_client, project, client, make_user,
                                                                   django_capture_on_commit_callbacks):
    url = reverse("attribution:sandbox_generate", args=[project.slug])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(url, {"runs": "5", "seed": "7"})
    assert response.status_code == 302 and len(callbacks) == 1
    page = owner_client.get(reverse("attribution:run_list", args=[project.slug])).content.decode()
    assert "Generate sandbox runs" in page
    viewer = make_user("vera")
    from tracing import services as tracing_services

    tracing_services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.post(url, {"runs": "5", "seed": "7"}).status_code == 403
