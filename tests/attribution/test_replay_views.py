from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from attribution import services
from attribution.models import Verdict
from tracing.models import Role, Trace

pytestmark = pytest.mark.django_db


def _counterfactual_verdict(project) -> Verdict:
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
    from attribution.selectors import REPLAY_PURPOSES

    assert any(
        f"<td>{html.escape(why)}</td>" in body for why in REPLAY_PURPOSES.values()
    )  # what each replay was for, in words
    # The continuation looks like the original: kinds by name, each agent in the trace's own colour.
    continuation = body[body.index("Counterfactual continuation") :]
    assert "tool_call" not in continuation.split("</ol>")[0].replace('class="step kind-tool_call', "")
    assert "Tool call" in continuation
    colours = dict(
        re.findall(r'agent-chip c(\d+)">([^<]+)<', body[: body.index("Counterfactual continuation")])
    )
    shown = re.findall(r'agent-chip c(\d+)">([^<]+)<', continuation)
    assert shown and all(colours.get(c) == name for c, name in shown if name in colours.values())
    other = owner_client.get(reverse("attribution:replay_inspector", args=[verdict.pk]), {"replay": "0"})
    assert other.status_code == 200


def test_a_stranger_cannot_open_someone_elses_replays(client, project, make_user):
    verdict = _counterfactual_verdict(project)
    client.force_login(make_user("eve"))
    assert client.get(reverse("attribution:replay_inspector", args=[verdict.pk])).status_code == 404


def test_generating_sandbox_runs_from_the_runs_page_queues_a_task(
    owner_client, project, client, make_user, django_capture_on_commit_callbacks
):
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


def test_counterfactual_replays_a_real_trace_through_the_projects_http_hook(owner_client, project):
    """A real HTTP server on 127.0.0.1 plays the team's system: the run succeeds once step K is corrected."""
    import threading

    from attribution.models import ProjectLlmSettings
    from tests.attribution.test_http_hook import Hook, QuietServer, _handler
    from tests.conftest import import_now, incoming_path, whowhen_files

    path = next(p for p in whowhen_files() if p.parent.name == "Algorithm-Generated")
    (job,) = import_now(project, incoming_path(path))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    decisive = trace.steps.exclude(kind__in=["tool_result", "human", "system"]).order_by("index")[1].index

    class System(Hook):
        def answer(self, payload: dict) -> dict:
            if payload.get("action") == "propose":
                return {"content": f"a better action for step {payload['index']}"}
            fixed = any(c["index"] == decisive for c in payload["corrections"])
            answer = payload["trace"]["ground_truth"] if fixed else "wrong"
            return {
                "continuation": [
                    {
                        "agent": payload["corrections"][0]["agent"],
                        "kind": "message",
                        "content": f"FINAL ANSWER: {answer}",
                    }
                ],
                "outcome": "success" if fixed else "failure",
                "final_answer": answer,
                "cost_usd": 0,
            }

    system = System()
    server = QuietServer(("127.0.0.1", 0), _handler(system))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = reverse("attribution:llm_settings", args=[project.slug])
        owner_client.post(
            url,
            {
                "model": "",
                "api_base": "",
                "temperature": "0",
                "timeout_seconds": "10",
                "max_retries": "1",
                "spending_cap_usd": "",
                "replay_hook_url": f"http://127.0.0.1:{server.server_address[1]}/replay",
                "replay_hook_auth": "Bearer hook-secret",
            },
        )
        stored = ProjectLlmSettings.objects.get(project=project)
        assert stored.replay_hook_url and "hook-secret" not in stored.replay_hook_auth_encrypted
        run = services.run_create(
            project=project, method="counterfactual", trace_ids=[trace.pk], enqueue=False
        )
        services.run_execute_inline(run=run)
    finally:
        server.shutdown()
        server.server_close()
    verdict = Verdict.objects.get(run=run)
    assert verdict.status == "ok", verdict.error
    assert verdict.step_index == decisive
    assert system.requests and all(
        r["headers"].get("Authorization") == "Bearer hook-secret" for r in system.requests
    )


def test_counterfactual_without_a_hook_says_how_to_get_one(project):
    from tests.conftest import import_now, incoming_path, whowhen_files

    path = whowhen_files()[0]
    (job,) = import_now(project, incoming_path(path))
    run = services.run_create(
        project=project, method="counterfactual", trace_ids=job.trace_ids, enqueue=False
    )
    services.run_execute_inline(run=run)
    verdict = Verdict.objects.get(run=run)
    assert verdict.status == "failed" and "replay hook URL" in verdict.error
