"""Deployment security: `check --deploy` clean with production settings, the Content-Security-Policy, rate limits
on login, uploads, the API and OTLP, uploads served only as attachments, and the audit log."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.cache import cache
from django.urls import reverse

from tests.conftest import ROOT, import_now, incoming_path, process_env, sample_file
from tracing import services
from tracing.models import AuditEvent, Role

pytestmark = pytest.mark.django_db


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x" * 20 + "a-long-random-production-secret-value-0123456789")
    env = process_env(CULPRIT_PRODUCTION="true", DJANGO_SECRET_KEY_FILE=str(secret), DJANGO_DEBUG="false",
                      DJANGO_ALLOWED_HOSTS="culprit.example.com")
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE")  # the browser tests' setting, never a deployment's
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_production_refuses_to_start_without_a_secret():
    env = process_env(CULPRIT_PRODUCTION="true", DJANGO_SECRET_KEY="", DJANGO_SECRET_KEY_FILE="")
    env.pop("DJANGO_SECRET_KEY", None)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "DJANGO_SECRET_KEY" in done.stderr


def test_every_page_carries_a_content_security_policy_allowing_only_own_scripts(owner_client, project):
    for url in (reverse("tracing:trace_list", args=[project.slug]), reverse("login"), "/api/docs"):
        response = owner_client.get(url)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
    assert response.status_code == 200


def test_an_upload_is_served_only_as_an_attachment(owner_client, client, project, make_user):
    (job,) = import_now(project, incoming_path(sample_file()))
    url = reverse("tracing:trace_original", args=[job.trace_ids[0]])
    response = owner_client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff" and "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == sample_file().read_bytes()
    client.force_login(make_user("outsider"))
    assert client.get(url).status_code == 404


def test_healthz_answers_when_the_database_does(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"


@pytest.fixture
def strict_limits(settings):
    settings.CULPRIT_RATE_LIMITS = {"login": "3/m", "login_ip": "100/m", "upload": "2/m", "api": "3/m", "otlp": "2/m"}
    cache.clear()
    yield settings
    cache.clear()


def test_login_attempts_are_rate_limited(client, make_user, strict_limits):
    make_user("alice")
    url = reverse("login")
    statuses = [client.post(url, {"username": "alice", "password": "wrong"}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.post(url, {"username": "alice", "password": "pw-for-tests-1"})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    # Another account from the same address is not locked out by alice's attempts.
    make_user("bob")
    assert client.post(url, {"username": "bob", "password": "pw-for-tests-1"}).status_code == 302


def test_uploads_api_and_otlp_are_rate_limited(owner_client, client, project, owner, strict_limits):
    url = reverse("tracing:upload", args=[project.slug])
    assert [owner_client.post(url, {}).status_code for _ in range(3)] == [400, 400, 429]
    _, token = services.api_token_create(project=project, name="ci", user=owner)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    statuses = [client.get("/api/formats", **auth).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    otlp = [client.post("/v1/traces", b"{}", content_type="application/json", **auth).status_code for _ in range(3)]
    assert otlp[2] == 429 and 429 not in otlp[:2]


def test_membership_token_and_model_changes_are_audited(owner_client, client, project, owner, make_user):
    make_user("carol")
    members = reverse("tracing:project_members", args=[project.slug])
    owner_client.post(members, {"username": "carol", "role": Role.ANNOTATOR})
    owner_client.post(members, {"username": "carol", "role": Role.VIEWER})
    owner_client.post(members, {"username": "carol", "role": Role.VIEWER, "remove": "1"})
    owner_client.post(reverse("tracing:project_tokens", args=[project.slug]), {"name": "exporter"})
    owner_client.post(reverse("attribution:llm_settings", args=[project.slug]), {
        "model": "openai/gpt-4o-mini", "api_base": "", "temperature": "0", "timeout_seconds": "60",
        "max_retries": "2", "spending_cap_usd": "", "replay_hook_url": "", "api_key": "sk-secret-value"})
    events = list(AuditEvent.objects.filter(project=project).order_by("id"))
    assert [e.action for e in events] == ["membership.added", "membership.changed", "membership.removed",
                                          "token.created", "llm_settings.changed"]
    assert all(e.actor_name == owner.username for e in events)
    assert "sk-secret-value" not in str([e.details for e in events])
    page = owner_client.get(reverse("tracing:project_audit", args=[project.slug]))
    assert page.status_code == 200 and b"token.created" in page.content
    viewer = make_user("vic")
    services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("tracing:project_audit", args=[project.slug])).status_code == 403
