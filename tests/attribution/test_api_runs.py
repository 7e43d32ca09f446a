"""Attribution through the REST API: the methods, a run started with a project token, followed to its score and read
verdict by verdict -- and every way a request can be wrong answering with a reason, not a 5xx."""

from __future__ import annotations

import pytest

from attribution import services as attribution_services
from attribution.models import AttributionRun, RunStatus
from tests.conftest import import_now, incoming_path, wait_for, whowhen_files
from tracing import services
from tracing.models import Trace

GOLD_FILES = 3


def _auth(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def token(project, owner) -> str:
    return services.api_token_create(project=project, name="ci", user=owner)[1]


def _import(project, n: int = GOLD_FILES) -> list[int]:
    for path in whowhen_files()[:n]:
        import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
    return list(Trace.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))


@pytest.mark.django_db
def test_the_methods_are_listed_with_whether_they_need_a_model(client, token):
    methods = {m["name"]: m for m in client.get("/api/methods", **_auth(token)).json()}
    assert methods["heuristic"]["needs_llm"] is False and methods["all_at_once"]["needs_llm"] is True
    assert {"learned", "counterfactual", "schema_guided"} <= set(methods)


@pytest.mark.django_db
def test_a_run_started_by_token_is_followed_to_its_score_and_verdicts(
    client, project, owner, token, django_capture_on_commit_callbacks
):
    ids = _import(project)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            "/api/runs",
            {"method": "heuristic", "gold": "yes", "description": "nightly"},
            content_type="application/json",
            **_auth(token),
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["total"] == len(ids) and body["score"] is None
    run = AttributionRun.objects.get(pk=body["id"])
    assert (run.project, run.created_by, run.description) == (project, owner, "nightly")

    attribution_services.run_execute_inline(run=run)
    got = client.get(f"/api/runs/{run.pk}", **_auth(token)).json()
    assert got["status"] == "succeeded" and got["done"] == len(ids)
    score = got["score"]
    assert score["n"] == len(ids) and 0 <= score["agent_accuracy"] <= 1
    assert score["agent_interval"][0] <= score["agent_accuracy"] <= score["agent_interval"][1]

    page = client.get(f"/api/runs/{run.pk}/verdicts", {"limit": 2}, **_auth(token)).json()
    assert page["count"] == len(ids) and len(page["items"]) == 2
    first = page["items"][0]
    assert first["trace_id"] == ids[0] and first["status"] == "ok" and first["agent"] and first["step"] >= 0
    assert [r["id"] for r in client.get("/api/runs", **_auth(token)).json()] == [run.pk]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"method": "no_such_method"}, "unknown method"),
        ({"method": "all_at_once"}, "needs a model"),
        ({"method": "heuristic", "trace_ids": []}, "the selection is empty"),
        ({"method": "heuristic", "gold": "no"}, "the selection is empty"),  # every trace has a label
    ],
)
def test_a_run_that_cannot_start_answers_400_with_the_reason(client, project, token, body, message):
    _import(project, 1)
    response = client.post("/api/runs", body, content_type="application/json", **_auth(token))
    assert response.status_code == 400 and message in response.json()["detail"].lower()
    assert not AttributionRun.objects.exists()


@pytest.mark.django_db
def test_another_projects_traces_and_runs_are_out_of_reach(client, project, make_project, make_user, token):
    other = make_project("Other", {make_user("olaf"): "owner"})
    theirs = _import(other, 1)
    response = client.post(
        "/api/runs",
        {"method": "heuristic", "trace_ids": theirs},
        content_type="application/json",
        **_auth(token),
    )
    assert response.status_code == 400  # their trace is not ours: the selection is empty
    run = attribution_services.run_create(project=other, method="heuristic", trace_ids=theirs, enqueue=False)
    assert client.get(f"/api/runs/{run.pk}", **_auth(token)).status_code == 404
    assert client.get(f"/api/runs/{run.pk}/verdicts", **_auth(token)).status_code == 404
    assert client.get("/api/runs/0", **_auth(token)).status_code == 404
    assert client.get("/api/runs", {"limit": 0}, **_auth(token)).status_code == 422


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_run_started_through_the_api_runs_on_a_real_worker(client, project, token, celery_worker):
    ids = _import(project)
    response = client.post(
        "/api/runs",
        {"method": "heuristic", "trace_ids": ids},
        content_type="application/json",
        **_auth(token),
    )
    assert response.status_code == 201
    run_id = response.json()["id"]
    wait_for(
        lambda: AttributionRun.objects.filter(pk=run_id, status=RunStatus.SUCCEEDED).first(),
        timeout=90,
        worker=celery_worker,
    )
    got = client.get(f"/api/runs/{run_id}", **_auth(token)).json()
    assert got["done"] == len(ids) and got["failed"] == 0 and got["score"]["n"] == len(ids)
