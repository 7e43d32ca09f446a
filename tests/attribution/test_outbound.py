"""The outbound policy (``attribution.outbound``): replay hooks, model ``api_base`` URLs and litellm's own connections
reach only public addresses unless the deployment lists more, the check holds at connect time (DNS rebinding,
redirects), and no response body or provider key leaks.

The hooks and model endpoints are real HTTP servers on 127.0.0.1; DNS answers are the one thing replaced (by a
patched ``socket.getaddrinfo``), since a name that resolves differently on each lookup cannot be had otherwise.
The suite's environment allows 127.0.0.0/8 (tests/env.py); these tests set the deployment's allow-list themselves.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from attribution import crypto, outbound
from attribution.forms import LlmSettingsForm
from attribution.llm import NO_KEY, LlmClient, provider_key
from attribution.methods.base import MethodError
from attribution.models import ProjectLlmSettings
from attribution.replay.base import ReplayError
from attribution.replay.http_hook import HttpHookReplayer
from tests.attribution.test_http_hook import Hook, serving
from tests.attribution.test_http_hook import trace as trace  # noqa: F401,PLC0414 - the fixture
from tests.conftest import ROOT, process_env

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.216.34"  # a public address; nothing connects to it in these tests


@pytest.fixture
def production(settings):
    """The policy as a team deployment has it by default: nothing but public addresses."""
    settings.CULPRIT_OUTBOUND_ALLOW = []
    settings.CULPRIT_OUTBOUND_ALLOW_LOOPBACK = False
    return settings


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/x",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.0.1/hook",
        "http://100.100.100.200/meta",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/x",
        "http://[fd00:ec2::254]/x",
        "http://224.0.0.1/x",
        "http://0.0.0.0:8000/x",
    ],
)
def test_loopback_private_link_local_metadata_and_multicast_addresses_are_refused_in_production(
    production, url
):
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_url(url)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://x/", "http:///nohost"]
)
def test_only_http_and_https_urls_pass(production, url):
    with pytest.raises(outbound.OutboundRefused, match="only http"):
        outbound.check_url(url)


def test_a_public_address_passes(production):
    outbound.check_url(f"https://{PUBLIC}/v1")


@pytest.mark.parametrize(
    ("allow", "url", "allowed"),
    [
        (["10.0.0.0/8"], "http://10.1.2.3/hook", True),
        (["10.0.0.0/8"], "http://192.168.0.1/hook", False),
        (["127.0.0.1:11434"], "http://127.0.0.1:11434/v1", True),
        (["127.0.0.1:11434"], "http://127.0.0.1:6379/", False),
        (["localhost"], "http://localhost:9000/", True),
        (["[::1]:8080"], "http://[::1]:8080/", True),
        (["169.254.169.254"], "http://169.254.169.254/", True),
    ],
)
def test_the_deployment_allows_hosts_cidrs_and_host_ports_it_lists(production, allow, url, allowed):
    production.CULPRIT_OUTBOUND_ALLOW = allow
    if allowed:
        outbound.check_url(url)
    else:
        with pytest.raises(outbound.OutboundRefused):
            outbound.check_url(url)


def test_loopback_is_allowed_by_the_embedded_default_only_not_private_ranges(production):
    production.CULPRIT_OUTBOUND_ALLOW_LOOPBACK = True
    outbound.check_url("http://127.0.0.1:11434/v1")
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_url("http://10.0.0.1/v1")
    with pytest.raises(outbound.OutboundRefused):
        outbound.check_url("http://169.254.169.254/")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "", "CELERY_BROKER_URL": "", "REDIS_URL": ""}, "True"),  # embedded: make run
        ({}, "False"),  # PostgreSQL and Redis: a team deployment
    ],
)
def test_loopback_is_allowed_by_default_in_the_embedded_mode_and_never_in_a_team_deployment(
    tmp_path, env, expected
):
    env = process_env(CULPRIT_VAR_DIR=str(tmp_path), CULPRIT_OUTBOUND_ALLOW_LOOPBACK="", **env)
    if "DATABASE_URL" in env and not env["DATABASE_URL"]:
        env.pop("DATABASE_URL")
    code = "from django.conf import settings; print(settings.CULPRIT_OUTBOUND_ALLOW_LOOPBACK)"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip().splitlines()[-1] == expected, done.stderr


# --- the replay hook --------------------------------------------------------------------------------------------------


def test_a_hook_on_loopback_is_refused_in_production_before_any_request(production, trace):  # noqa: F811
    with serving(Hook()) as hook:
        with pytest.raises(ReplayError, match="refused by the outbound policy") as caught:
            HttpHookReplayer(hook.url, retries=2, backoff=0.01).replay(trace, {3: "correct"})
    assert hook.requests == []
    assert "gave up" not in str(caught.value)  # a refusal is not retried


def test_a_hook_on_loopback_is_allowed_when_the_deployment_lists_its_port(production, trace):  # noqa: F811
    with serving(Hook()) as hook:
        production.CULPRIT_OUTBOUND_ALLOW = [f"127.0.0.1:{httpx.URL(hook.url).port}"]
        result = HttpHookReplayer(hook.url, retries=0).replay(trace, {3: "correct"})
    assert result.outcome == "success" and len(hook.requests) == 1


def test_a_name_that_rebinds_to_loopback_after_the_check_is_refused_at_connect_time(
    production, trace, monkeypatch
):  # noqa: F811
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        lookups.append(
            host
        )  # public for the first lookup (the check), loopback for every later one (the connect)
        address = PUBLIC if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with serving(Hook()) as hook:
        url = hook.url.replace("127.0.0.1", "rebind.example")
        with pytest.raises(ReplayError, match="refused by the outbound policy.*loopback"):
            HttpHookReplayer(url, retries=0).replay(trace, {3: "correct"})
    assert len(lookups) == 2 and hook.requests == []


def test_a_redirect_to_a_refused_address_is_not_followed(production):
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    production.CULPRIT_OUTBOUND_ALLOW = [f"127.0.0.1:{server.server_address[1]}"]
    try:
        with outbound.guarded_client(follow_redirects=True, timeout=5) as client:
            with pytest.raises(outbound.OutboundRefused, match="link-local"):
                client.get(f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()


def test_a_hook_error_body_is_never_echoed(trace):  # noqa: F811
    with serving(Hook()) as hook:
        hook.script.append({"status": 500, "body": b"<h1>admin console</h1> db_password=hunter2"})
        with pytest.raises(ReplayError) as caught:
            HttpHookReplayer(hook.url, retries=0).replay(trace, {3: "correct"})
    assert "the hook answered HTTP 500" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "admin console" not in str(caught.value)


# --- the settings form ------------------------------------------------------------------------------------------------


def _form(**fields: str) -> LlmSettingsForm:
    data = {
        "model": "openai/gpt-4o-mini",
        "api_base": "",
        "temperature": "0",
        "timeout_seconds": "30",
        "max_retries": "1",
        "spending_cap_usd": "",
        "replay_hook_url": "",
    } | fields
    return LlmSettingsForm(data=data)


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("replay_hook_url", "ftp://hooks.example.com/replay"),
        ("replay_hook_url", "http://169.254.169.254/latest/meta-data/"),
        ("replay_hook_url", "http://127.0.0.1:6379/"),
        ("api_base", "http://10.0.0.7:11434"),
        ("api_base", "http://[::1]:8000/v1"),
    ],
)
def test_the_settings_form_refuses_urls_the_policy_refuses(production, field, url):
    form = _form(**{field: url})
    assert not form.is_valid() and field in form.errors


def test_the_settings_form_takes_a_public_endpoint(production):
    form = _form(api_base=f"https://{PUBLIC}/v1", replay_hook_url=f"https://{PUBLIC}/replay")
    assert form.is_valid(), form.errors


# --- provider keys ----------------------------------------------------------------------------------------------------


class _Listener(BaseHTTPRequestHandler):
    """An attacker's endpoint posing as OpenAI and Anthropic: it keeps every request's headers."""

    seen: list[dict[str, str]]

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(dict(self.headers))
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": '{"ok": true}'},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _SecretPage(BaseHTTPRequestHandler):
    """An internal admin page an api_base was pointed at: it answers 500 with something secret."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": {"message": "db_password=hunter2 on the internal admin page"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_an_api_base_error_body_is_never_echoed_into_the_error_or_the_call_log(project):
    from attribution.models import LlmCall

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SecretPage)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        llm = LlmClient(
            model="openai/gpt-4o-mini",
            api_base=f"http://127.0.0.1:{server.server_address[1]}/v1",
            num_retries=0,
            project=project,
            method="test",
        )
        with pytest.raises(MethodError) as caught:
            llm.complete_json(system="s", user="u", purpose="probe", validate=lambda answer: None)
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTP 500" in str(caught.value) and "hunter2" not in str(caught.value)
    assert "hunter2" not in json.dumps(
        list(LlmCall.objects.filter(project=project).values_list("error", flat=True))
    )


@pytest.fixture
def listener():
    seen: list[dict[str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Listener,), {"seen": seen}))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


CANARIES = {
    "OPENAI_API_KEY": "sk-canary-openai-0001",
    "ANTHROPIC_API_KEY": "sk-ant-canary-0002",
    "AZURE_API_KEY": "canary-azure-0003",
    "GROQ_API_KEY": "gsk-canary-0004",
}


@pytest.mark.parametrize(
    "model",
    [
        "openai/gpt-4o-mini",
        "anthropic/claude-3-5-sonnet-latest",
        "hosted_vllm/llama",
        "groq/llama-3.1-8b-instant",
    ],
)
def test_server_keys_never_reach_a_projects_api_base_even_when_the_deployment_opts_in(
    project, settings, monkeypatch, listener, model
):
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    settings.CULPRIT_SERVER_KEYS_FOR = frozenset({"openai", "anthropic", "azure", "groq", "hosted_vllm"})
    base, seen = listener
    ProjectLlmSettings.objects.create(project=project, model=model, api_base=f"{base}/v1", max_retries=0)
    llm = LlmClient.for_project(project, method="test")
    try:
        llm.complete_json(system="s", user="u", purpose="probe", validate=lambda answer: None)
    except MethodError:
        pass  # an Anthropic-shaped client may not like the answer; what was sent is what counts
    assert seen, "the listener received no request"
    sent = json.dumps(seen)
    for value in CANARIES.values():
        assert value not in sent
    assert NO_KEY in sent


def test_a_projects_own_key_goes_to_its_api_base(project, monkeypatch, listener):
    monkeypatch.setenv("OPENAI_API_KEY", CANARIES["OPENAI_API_KEY"])
    base, seen = listener
    ProjectLlmSettings.objects.create(
        project=project,
        model="openai/gpt-4o-mini",
        api_base=f"{base}/v1",
        api_key_encrypted=crypto.encrypt("sk-project-own"),
        max_retries=0,
    )
    LlmClient.for_project(project, method="test").complete_json(
        system="s", user="u", purpose="probe", validate=lambda answer: None
    )
    assert {k.lower(): v for k, v in seen[0].items()}["authorization"] == "Bearer sk-project-own"
    assert CANARIES["OPENAI_API_KEY"] not in json.dumps(seen)


def test_the_server_key_is_used_only_for_opted_in_providers_without_an_api_base(settings, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-server")
    settings.CULPRIT_SERVER_KEYS_FOR = frozenset({"openai"})
    assert provider_key(model="openai/gpt-4o-mini", api_base="", project_key="") == "sk-server"
    assert provider_key(model="openai/gpt-4o-mini", api_base="http://x.example/v1", project_key="") == NO_KEY
    assert provider_key(model="anthropic/claude-3-5-sonnet-latest", api_base="", project_key="") == NO_KEY
    assert provider_key(model="openai/gpt-4o-mini", api_base="", project_key="sk-own") == "sk-own"
    settings.CULPRIT_SERVER_KEYS_FOR = frozenset()
    assert provider_key(model="openai/gpt-4o-mini", api_base="", project_key="") == NO_KEY


@pytest.mark.parametrize(
    "model", ["bedrock/anthropic.claude-3-haiku-20240307-v1:0", "vertex_ai/gemini-1.5-pro"]
)
def test_cloud_credential_providers_need_the_opt_in_and_never_take_an_api_base(settings, model):
    settings.CULPRIT_SERVER_KEYS_FOR = frozenset()
    with pytest.raises(MethodError, match="cloud credentials"):
        provider_key(model=model, api_base="", project_key="")
    settings.CULPRIT_SERVER_KEYS_FOR = frozenset({"bedrock", "vertex_ai"})
    with pytest.raises(MethodError, match="cloud credentials"):
        provider_key(model=model, api_base="https://attacker.example/", project_key="k")


def test_an_api_base_on_a_refused_address_fails_the_client_before_any_request(production, project):
    ProjectLlmSettings.objects.create(
        project=project, model="openai/gpt-4o-mini", api_base="http://10.0.0.9/v1"
    )
    with pytest.raises(MethodError, match="outbound policy"):
        LlmClient.for_project(project, method="test")


@pytest.mark.parametrize(
    "model",
    [
        "openai/gpt-4o-mini",
        "hosted_vllm/llama",
        "anthropic/claude-3-5-sonnet-latest",
        "ollama/llama3.1",
        "ollama_chat/llama3.1",
    ],
)
def test_litellm_connections_are_checked_at_connect_time(production, project, listener, model):
    """A provider call whose endpoint passed the client's check but is refused when litellm connects: the guard in
    litellm's own HTTP clients (OpenAI SDK, litellm's handler, its module-level client) stops it."""
    base, seen = listener
    production.CULPRIT_OUTBOUND_ALLOW = [base.removeprefix("http://")]
    llm = LlmClient(
        model=model,
        api_base=base if model.startswith("ollama") else f"{base}/v1",
        num_retries=0,
        method="test",
    )
    production.CULPRIT_OUTBOUND_ALLOW = []
    with pytest.raises(MethodError, match="loopback address .* does not allow it"):
        llm.complete_json(system="s", user="u", purpose="probe", validate=lambda answer: None)
    assert seen == []


@pytest.mark.parametrize(
    "model", ["ollama/llama-3-8b", "replicate/meta/llama-2-70b-chat", "cohere/command-r"]
)
def test_counting_tokens_never_fetches_a_tokenizer(project, monkeypatch, model):
    """litellm would download a llama / Command R tokenizer from Hugging Face with its own client, past the policy;
    it counts with the tiktoken encoding it ships instead, and opens no connection."""
    from attribution.llm import LlmClient
    from attribution.llm_provider import litellm

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a connection was opened: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    client = LlmClient(model=model)
    assert client.count_tokens("the agent searched the web " * 20) > 20
    assert litellm.disable_hf_tokenizer_download is True
