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
    env = process_env(
        CULPRIT_PRODUCTION="true",
        DJANGO_SECRET_KEY_FILE=str(secret),
        DJANGO_DEBUG="false",
        DJANGO_ALLOWED_HOSTS="culprit.example.com",
    )
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE")  # the browser tests' setting, never a deployment's
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_production_refuses_to_start_without_a_secret():
    env = process_env(CULPRIT_PRODUCTION="true", DJANGO_SECRET_KEY="", DJANGO_SECRET_KEY_FILE="")
    env.pop("DJANGO_SECRET_KEY", None)
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "DJANGO_SECRET_KEY" in done.stderr


def test_every_page_carries_a_content_security_policy_allowing_only_own_scripts(owner_client, project):
    for url in (reverse("tracing:trace_list", args=[project.slug]), reverse("login"), "/api/docs"):
        response = owner_client.get(url)
        policy = response["Content-Security-Policy"]
        assert (
            "script-src 'self'" in policy
            and "unsafe-eval" not in policy
            and "frame-ancestors 'none'" in policy
        )
        assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
    assert response.status_code == 200


def test_an_upload_is_served_only_as_an_attachment(owner_client, client, project, make_user):
    (job,) = import_now(project, incoming_path(sample_file()))
    url = reverse("tracing:trace_original", args=[job.trace_ids[0]])
    response = owner_client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["Content-Type"] == "application/octet-stream"
    assert (
        response["X-Content-Type-Options"] == "nosniff" and "sandbox" in response["Content-Security-Policy"]
    )
    assert b"".join(response.streaming_content) == sample_file().read_bytes()
    client.force_login(make_user("outsider"))
    assert client.get(url).status_code == 404


def test_healthz_answers_when_the_database_does(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "cache": "ok"}


class _MidWindow:
    """The rate limiter's clock held in the middle of a minute: its windows are fixed, so a minute that turned between
    two requests of a test would start the count again (it happened once in CI: three uploads, no 429)."""

    @staticmethod
    def time() -> float:
        return 1_800_000_030.0


@pytest.fixture
def strict_limits(settings, monkeypatch):
    from config import ratelimit

    monkeypatch.setattr(ratelimit, "time", _MidWindow)
    settings.CULPRIT_RATE_LIMITS = {
        "login": "3/m",
        "login_ip": "100/m",
        "upload": "2/m",
        "api": "3/m",
        "otlp": "2/m",
    }
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
    otlp = [
        client.post("/v1/traces", b"{}", content_type="application/json", **auth).status_code
        for _ in range(3)
    ]
    assert otlp[2] == 429 and 429 not in otlp[:2]


def test_membership_token_and_model_changes_are_audited(owner_client, client, project, owner, make_user):
    make_user("carol")
    members = reverse("tracing:project_members", args=[project.slug])
    owner_client.post(members, {"username": "carol", "role": Role.ANNOTATOR})
    owner_client.post(members, {"username": "carol", "role": Role.VIEWER})
    owner_client.post(members, {"username": "carol", "role": Role.VIEWER, "remove": "1"})
    owner_client.post(reverse("tracing:project_tokens", args=[project.slug]), {"name": "exporter"})
    owner_client.post(
        reverse("attribution:llm_settings", args=[project.slug]),
        {
            "model": "openai/gpt-4o-mini",
            "api_base": "",
            "temperature": "0",
            "timeout_seconds": "60",
            "max_retries": "2",
            "spending_cap_usd": "",
            "replay_hook_url": "",
            "api_key": "sk-secret-value",
        },
    )
    events = list(AuditEvent.objects.filter(project=project).order_by("id"))
    assert [e.action for e in events] == [
        "membership.added",
        "membership.changed",
        "membership.removed",
        "token.created",
        "llm_settings.changed",
    ]
    assert all(e.actor_name == owner.username for e in events)
    assert "sk-secret-value" not in str([e.details for e in events])
    page = owner_client.get(reverse("tracing:project_audit", args=[project.slug]))
    assert page.status_code == 200 and b"token.created" in page.content
    viewer = make_user("vic")
    services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("tracing:project_audit", args=[project.slug])).status_code == 403


# --- sign-in throttling: the admin's door, forged addresses, the account count (issue 13) ---------------------------


def test_the_admin_login_is_throttled_like_the_site_login(client, make_user, strict_limits):
    admin = make_user("root")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    url = reverse("admin:login")
    statuses = [client.post(url, {"username": "root", "password": "wrong"}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert client.post(url, {"username": "root", "password": "pw-for-tests-1"}).status_code == 429


def test_forged_forwarded_addresses_do_not_escape_the_per_account_limit(client, make_user, strict_limits):
    strict_limits.CULPRIT_TRUSTED_PROXIES = 1
    make_user("alice")
    statuses = [
        client.post(
            reverse("login"),
            {"username": "alice", "password": "wrong"},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}",
            REMOTE_ADDR="10.0.0.2",
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    # The account counts alone: a name with other capitals is the same account.
    assert (
        client.post(
            reverse("login"), {"username": "ALICE", "password": "wrong"}, HTTP_X_FORWARDED_FOR="192.0.2.9"
        ).status_code
        == 429
    )


def test_the_per_address_limit_takes_the_address_the_trusted_proxy_saw_not_the_first_hop(
    client, make_user, strict_limits
):
    strict_limits.CULPRIT_TRUSTED_PROXIES = 1
    strict_limits.CULPRIT_RATE_LIMITS = strict_limits.CULPRIT_RATE_LIMITS | {
        "login": "100/m",
        "login_ip": "3/m",
    }
    statuses = [
        client.post(
            reverse("login"),
            {"username": f"user{i}", "password": "wrong"},
            # the client wrote a fresh first hop each time; the proxy appended what it saw
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7",
        ).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    other = client.post(
        reverse("login"),
        {"username": "user9", "password": "wrong"},
        HTTP_X_FORWARDED_FOR="203.0.113.7, 203.0.113.8",
    )
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "198.51.100.1", "10.0.0.2"),
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),
        (2, "6.6.6.6, 198.51.100.1, 10.0.0.5", "198.51.100.1"),
        (
            2,
            "198.51.100.1",
            "10.0.0.2",
        ),  # a chain shorter than the proxies: the peer, never the client's claim
    ],
)
def test_the_client_address_counts_trusted_hops_from_the_right(rf, settings, proxies, forwarded, expected):
    from config.ratelimit import client_ip

    settings.CULPRIT_TRUSTED_PROXIES = proxies
    request = rf.get("/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="10.0.0.2")
    assert client_ip(request) == expected


def test_successful_sign_ins_do_not_count_against_the_account(client, make_user, strict_limits):
    make_user("alice")
    for _ in range(5):
        assert (
            client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-1"}).status_code
            == 302
        )
        client.logout()


def test_rate_limits_fail_open_when_the_cache_is_down(client, make_user, project, settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    settings.CULPRIT_RATE_LIMITS = {"login": "3/m", "login_ip": "3/m", "api": "3/m", "otlp": "3/m"}
    _, token = services.api_token_create(project=project, name="ci", user=None)
    assert client.get("/api/formats", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    otlp = client.post(
        "/v1/traces", b"{}", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert otlp.status_code == 200
    make_user("alice")
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-1"})
    assert response.status_code == 302
    assert "the cache is unavailable" in caplog.text


# --- a service down (issue 13) ----------------------------------------------------------------------------------------

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every connection is refused at once


@pytest.fixture
def broker_down():
    """The web process's Celery app pointed at a broker that refuses connections, as when Redis is down."""
    from config.celery import app

    saved = app.conf.broker_write_url, app._pool, app.amqp._producer_pool
    app.conf.broker_write_url = DEAD_REDIS  # what publishing connects to
    app._pool = app.amqp._producer_pool = None
    yield app
    app.conf.broker_write_url = saved[0]
    app._pool, app.amqp._producer_pool = saved[1], saved[2]


def test_healthz_reports_a_cache_outage_separately(client, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": DEAD_REDIS}
    }
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "database": "ok", "broker": "ok", "cache": "unavailable"}
    assert client.get("/healthz", {"strict": "1"}).status_code == 503


def test_healthz_reports_a_broker_outage_separately(client, broker_down):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["broker"] == "unavailable"
    assert response.json()["status"] == "degraded" and response.json()["database"] == "ok"
    assert client.get("/healthz", {"strict": "1"}).status_code == 503


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_otlp_answers_503_with_retry_after_and_keeps_the_spans(
    client, project, broker_down
):
    from tracing.models import OtlpSpan

    _, token = services.api_token_create(project=project, name="otel", user=None)
    body = (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c", '
        b'"spanId": "eee19b7ec3c1b174", "name": "agent"}]}]}]}'
    )
    response = client.generic(
        "POST", "/v1/traces", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    assert "retry" in response.json()["message"]
    assert OtlpSpan.objects.filter(project=project).count() == 1


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_an_api_upload_is_accepted_as_queued(client, project, broker_down):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tracing.models import IngestJob, JobStatus

    _, token = services.api_token_create(project=project, name="ci", user=None)
    upload = SimpleUploadedFile("run.json", sample_file().read_bytes())
    response = client.post("/api/uploads", {"files": [upload]}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 202
    assert response.json()["detail"] == "queued; will start when the worker is back"
    assert IngestJob.objects.get(project=project).status == JobStatus.QUEUED
