from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import ROOT, import_now, incoming_path, sample_file
from tracing import services
from tracing.models import ApiToken, IngestJob, Role

pytestmark = pytest.mark.django_db

GOOD = sample_file("Hand-Crafted")


@pytest.fixture
def token(project, owner) -> str:
    return services.api_token_create(project=project, name="ci", user=owner)[1]


def _auth(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_every_call_needs_a_live_token(client, token, project):
    assert client.get("/api/traces").status_code == 401
    assert client.get("/api/traces", HTTP_AUTHORIZATION="Bearer cul_nope_nope").status_code == 401
    assert client.get("/api/traces", **_auth(token)).status_code == 200
    services.api_token_revoke(token=ApiToken.objects.get(project=project))
    assert client.get("/api/traces", **_auth(token)).status_code == 401


def test_only_a_hash_of_the_token_is_stored(token):
    row = ApiToken.objects.get()
    assert token not in (row.token_hash, row.prefix, row.name)
    assert token.startswith(f"cul_{row.prefix}_")


def test_uploading_through_the_api_gives_one_job_per_file(client, token, django_capture_on_commit_callbacks):
    files = [SimpleUploadedFile("a.json", GOOD.read_bytes()), SimpleUploadedFile("empty.json", b"")]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/api/uploads", {"files": files}, **_auth(token))
    assert response.status_code == 202
    body = response.json()
    assert [(j["filename"], j["status"]) for j in body["jobs"]] == [
        ("a.json", "queued"),
        ("empty.json", "failed"),
    ]
    assert body["jobs"][1]["error"] == "empty.json: the file is empty"
    assert len(callbacks) == 1
    job_id = body["jobs"][0]["id"]
    services.ingest_job_run(job_id=job_id)
    job = client.get(f"/api/jobs/{job_id}", **_auth(token)).json()
    assert job["status"] == "succeeded" and job["format"] == "whowhen" and job["confidence"] >= 0.9
    assert job["report"]["traces"] == 1 and job["report"]["labels"] == 1
    listed = client.get("/api/jobs", {"batch": body["batch"]}, **_auth(token)).json()
    assert {j["id"] for j in listed} == {j["id"] for j in body["jobs"]}


def test_an_unknown_format_is_refused_with_the_list_of_formats(client, token):
    response = client.post(
        "/api/uploads", {"files": [SimpleUploadedFile("a.json", b"{}")], "format": "nope"}, **_auth(token)
    )
    assert response.status_code == 422
    assert "unknown format 'nope'" in response.json()["detail"] and "whowhen" in response.json()["detail"]
    assert IngestJob.objects.count() == 0


def test_an_upload_through_the_api_names_files_by_the_folder_paths_given(client, token):
    files = [SimpleUploadedFile("7.json", GOOD.read_bytes()), SimpleUploadedFile("b.json", b"{}")]
    response = client.post(
        "/api/uploads", {"files": files, "paths": ["Hand-Crafted/7.json", ""]}, **_auth(token)
    )
    assert response.status_code == 202
    assert [j["filename"] for j in response.json()["jobs"]] == ["Hand-Crafted/7.json", "b.json"]


@pytest.mark.parametrize(
    ("paths", "detail"),
    [
        (["../x.json"], "climbs out of its folder"),
        (["a/x.json", "b/y.json"], "2 folder paths came with 1 files"),
    ],
)
def test_bad_folder_paths_through_the_api_are_refused_and_nothing_is_queued(client, token, paths, detail):
    files = [SimpleUploadedFile("x.json", GOOD.read_bytes())]
    response = client.post("/api/uploads", {"files": files, "paths": paths}, **_auth(token))
    assert response.status_code == 422 and detail in response.json()["detail"]
    assert IngestJob.objects.count() == 0


def test_traces_steps_and_labels_read_back(client, token, imported_trace):
    listed = client.get("/api/traces", {"q": imported_trace.question[:20]}, **_auth(token)).json()
    assert listed["count"] == 1 and listed["items"][0]["id"] == imported_trace.pk
    detail = client.get(f"/api/traces/{imported_trace.pk}", **_auth(token)).json()
    gold = imported_trace.gold_labels.get()
    assert detail["gold"] == [
        {
            "agent": gold.agent_name,
            "step": gold.step_index,
            "reason": gold.reason,
            "category": gold.category,
            "source": "imported",
            "confidence": None,
        }
    ]
    assert {a["name"] for a in detail["agent_list"]} >= {"Orchestrator", "WebSurfer"}
    steps = client.get(
        f"/api/traces/{imported_trace.pk}/steps", {"offset": 5, "limit": 3}, **_auth(token)
    ).json()
    assert [s["index"] for s in steps["items"]] == [5, 6, 7]
    assert steps["count"] == imported_trace.step_count


def test_another_projects_trace_answers_404(client, make_project, make_user, imported_trace):
    other = make_project("Other")
    other_token = services.api_token_create(project=other, name="x", user=None)[1]
    assert client.get(f"/api/traces/{imported_trace.pk}", **_auth(other_token)).status_code == 404
    assert client.get(f"/api/traces/{imported_trace.pk}/steps", **_auth(other_token)).status_code == 404
    assert client.get("/api/traces", **_auth(other_token)).json()["count"] == 0


def test_bad_paging_is_a_clear_422(client, token, imported_trace):
    response = client.get(f"/api/traces/{imported_trace.pk}/steps", {"limit": 100000}, **_auth(token))
    assert response.status_code == 422


def test_the_openapi_schema_and_docs_are_served_without_a_cdn(client):
    schema = client.get("/api/openapi.json").json()
    assert "/api/uploads" in schema["paths"] and "/api/traces/{trace_id}/steps" in schema["paths"]
    docs = client.get("/api/docs").content.decode()
    assert "cdn" not in docs.lower() and "/static/ninja/" in docs


def test_an_owner_creates_a_token_seen_once_and_revokes_it(owner_client, project):
    url = reverse("tracing:project_tokens", args=[project.slug])
    body = owner_client.post(url, {"name": "otel"}).content.decode()
    row = ApiToken.objects.get(name="otel")
    assert f"cul_{row.prefix}_" in body and "not be shown again" in body
    again = owner_client.get(url).content.decode()
    assert f"cul_{row.prefix}_…" in again and body.split(f"cul_{row.prefix}_")[1][:20] not in again
    owner_client.post(url, {"revoke": row.pk})
    row.refresh_from_db()
    assert row.revoked_at is not None


def test_an_annotator_cannot_manage_tokens(client, project, make_user):
    annotator = make_user("ann")
    services.membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    assert client.get(reverse("tracing:project_tokens", args=[project.slug])).status_code == 403


@pytest.mark.django_db
def test_the_openapi_document_has_no_duplicate_keys(client):
    """Swagger UI refuses a document with a key twice (e.g. a status code as int and as string)."""
    import json as _json

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
        return dict(pairs)

    _json.loads(client.get("/api/openapi.json").content, object_pairs_hook=no_duplicates)


@pytest.mark.django_db
def test_out_of_range_numbers_are_refused_not_overflowed(client, project, owner):
    _, token = services.api_token_create(project=project, name="t", user=owner)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get(f"/api/traces?offset={2**63}", **auth).status_code == 422
    assert client.get(f"/api/traces/{2**64}", **auth).status_code == 404
    assert client.get(f"/api/traces/{2**64}/steps", **auth).status_code == 404
    assert client.get(f"/api/jobs/{2**64}", **auth).status_code == 404


def test_a_trace_exposes_every_labelled_error_and_its_gold_label(client, token, project):
    trail = ROOT / "tests" / "fixtures" / "trail"
    name = "0ebe673d64647ec44c370638b82d3c78"
    for path in (
        trail / "gaia" / f"{name}.trace.json",
        trail / "label_cases" / "multi" / f"{name}.labels.json",
    ):
        (job,) = import_now(project, incoming_path(path, path.name))
        assert job.status == "succeeded", job.error
    trace = project.traces.get()
    detail = client.get(f"/api/traces/{trace.pk}", **_auth(token)).json()
    errors = detail["errors"]
    assert len(errors) == 4 == trace.error_labels.count()
    assert [e["decisive"] for e in errors] == [False, False, True, False]
    assert errors[2] | {"description": "", "evidence": ""} == {
        "category": "Tool-related",
        "family": "TRAIL",
        "step": 3,
        "span_id": errors[2]["span_id"],
        "agent": "manager",
        "impact": "HIGH",
        "description": "",
        "evidence": "",
        "source": "imported",
        "decisive": True,
    }
    assert errors[2]["span_id"] and errors[2]["description"]
    assert errors[3]["step"] is None and errors[3]["span_id"] == "ffffffffffffffff"
    assert [(g["step"], g["category"]) for g in detail["gold"]] == [(3, "Tool-related")]


def test_the_openapi_schema_documents_the_error_labels(client):
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "errors" in schema["TraceDetailOut"]["required"]
    fields = schema["ErrorLabelOut"]["properties"]
    assert set(fields) == {
        "category",
        "family",
        "step",
        "span_id",
        "agent",
        "impact",
        "description",
        "evidence",
        "source",
        "decisive",
    }
    assert "taxonomy family" in fields["family"]["description"]
