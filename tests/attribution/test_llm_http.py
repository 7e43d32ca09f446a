"""Every LLM path against a self-hosted model over real HTTP: a stdlib OpenAI-compatible server on 127.0.0.1
(``tests/llm_server.py``) that enforces its context window, counts what it receives and can answer 429 with
Retry-After, 500, slowly, fenced or malformed.

What must hold: no method ever sends a prompt over the context (8k and 32k, on the longest Who&When trace); budgets
in tokens stop a run before the request that would pass them; what the call log, the verdicts and the run record
equals what the server received; Retry-After is honoured; no key means a placeholder key, never the server's own.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from attribution.llm import LlmClient, PromptTooLong, retry_wait
from attribution.methods import get_method
from attribution.methods.base import MethodError, StepView
from attribution.models import AttributionRun, LlmCall, ProjectLlmSettings, Verdict
from attribution.selectors import trace_view
from attribution.services import run_create, run_execute_inline
from tests.conftest import ROOT, import_now, incoming_path, process_env
from tests.llm_server import fake_llm_server
from tracing.models import JobStatus, Trace

DATA = ROOT.parent / "shared" / "data" / "who_and_when" / "Hand-Crafted"
# The longest Who&When trace (Hand-Crafted 56.json: 129 steps, 169k characters), else the demo copies' longest.
LONGEST = DATA / "56.json"
MODEL = "openai/self-hosted-test-model"  # unknown to litellm: no context, no price

_STEP = re.compile(r'<step index="(\d+)"')
_STEP_AGENT = re.compile(r'<step index="(\d+)" agent="([^"]*)"')


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.CULPRIT_OUTBOUND_ALLOW_LOOPBACK = True
    settings.CULPRIT_LLM_CACHE_URL = "off"


def _import(project, path: Path) -> Trace:
    (job,) = import_now(project, incoming_path(path, f"Hand-Crafted/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return Trace.objects.get(pk=job.trace_ids[0])


def _sources(count: int) -> list[Path]:
    if DATA.exists():
        return sorted(DATA.glob("*.json"), key=lambda p: -p.stat().st_size)[:count]
    demo = ROOT / "tracing" / "demo_data"
    return sorted(demo.glob("*.json"), key=lambda p: -p.stat().st_size)[:count]


def judge(agents: tuple[str, ...], *, decisive_from: int = 0):
    """A model that always answers in the requested shape: the first step it is shown and the first agent;
    step checks are decisive from step ``decisive_from`` on."""

    def answer(messages: list[dict[str, Any]]) -> str:
        text = messages[-1]["content"] if messages[-1]["role"] == "user" else messages[1]["content"]
        shown = [int(i) for i in _STEP.findall(text)] or [0]
        if '"decisive_error"' in text:
            judged = (
                int(m.group(1)) if (m := re.search(r"step (\d+)", text.split("</trace>")[-1])) else max(shown)
            )
            return json.dumps(
                {"decisive_error": judged >= decisive_from, "suspicion": 0.7, "reason": "checked"}
            )
        named = re.search(r'one of: (".*?")\.\n', text)
        offered = json.loads(f"[{named.group(1)}]") if named else list(agents)
        # the first step shown that an offered agent wrote (never the task or a tool's output), with its agent
        acting = sorted((int(i), a) for i, a in _STEP_AGENT.findall(text) if a in offered)
        step, agent = acting[0] if acting else (min(shown), offered[0])
        return json.dumps(
            {"agent": agent, "step": step, "half": "first", "confidence": 0.6, "reason": "it went wrong here"}
        )

    return answer


@pytest.fixture
def longest(project) -> Trace:
    return _import(project, _sources(1)[0] if not LONGEST.exists() else LONGEST)


@pytest.mark.parametrize("context", [8192, 32768])
@pytest.mark.parametrize(
    "method", ["all_at_once", "binary_search", "step_by_step", "hybrid", "schema_guided"]
)
@pytest.mark.django_db
def test_every_method_fits_the_context_on_the_longest_who_and_when_trace(project, longest, context, method):
    view = trace_view(longest)
    with fake_llm_server(context=context, respond=judge(view.agents, decisive_from=40)) as server:
        llm = LlmClient(
            model=MODEL,
            api_base=server.url,
            context_tokens=context,
            project=project,
            trace=longest,
            method=method,
            num_retries=0,
        )
        result = get_method(method).run(view, llm=llm)
    assert server.overflowed() == [], (
        f"{len(server.overflowed())} requests went over the {context}-token context"
    )
    assert all(r.prompt_tokens + (r.max_tokens or 0) <= context for r in server.received)
    assert 0 <= result.step < len(view.steps) and result.agent in view.agents
    if method == "binary_search":  # the search still halves to one step, whatever it had to leave out
        assert len(result.details["rounds"]) == math.ceil(math.log2(len(view.steps)))
    if method == "step_by_step":  # it walked to the first step the model calls decisive
        assert result.details["stopped_at"] >= 40
    # What the method says it spent is what the server answered.
    assert (result.calls, result.input_tokens, result.output_tokens) == tuple(server.totals().values())


class _Schemas:
    """Five trusted schemas as ``SchemaSource.retrieve`` hands them to the method (already left-one-out)."""

    from_cache = False

    def retrieve(self, query: Any) -> list[Any]:
        from attribution.schemas.selectors import Retrieved

        return [
            Retrieved(
                id=n,
                title=f"Pattern {n}: a figure copied from the wrong row",
                category="reasoning",
                context="A web surfer reads a table and the orchestrator trusts the number it reports.",
                detection={},
                detection_text="Find the first step that states a figure no source shows.",
                similarity=0.9,
                cases=3,
                left_out=False,
            )
            for n in range(1, 6)
        ]


@pytest.mark.django_db
def test_schema_guided_keeps_its_hints_in_every_window_at_8k_on_the_longest_who_and_when_trace(
    project, longest
):
    view = trace_view(longest)
    with fake_llm_server(context=8192, respond=judge(view.agents)) as server:
        llm = LlmClient(
            model=MODEL,
            api_base=server.url,
            context_tokens=8192,
            project=project,
            trace=longest,
            method="schema_guided",
            num_retries=0,
        )
        result = get_method("schema_guided").run(view, llm=llm, schemas=_Schemas())
    assert server.overflowed() == [] and all(r.status == 200 for r in server.received)
    windows = result.details["windows"]
    assert len(windows) > 1 and result.details["hinted"] is True
    hinted = [r for r in server.received if "<patterns>" in r.messages[1]["content"]]
    final = [
        r for r in server.received if "each part's most suspicious step is listed" in r.messages[1]["content"]
    ]
    # every window and the final choice among their picks carried the five hints
    assert len(final) == 1 and len(hinted) == len(windows) + 1 == len(server.received)
    assert all(r.messages[1]["content"].count("Pattern ") == 5 for r in hinted)
    assert (result.calls, result.input_tokens, result.output_tokens) == tuple(server.totals().values())


def test_fit_steps_never_returns_a_rendering_over_its_room():
    steps = tuple(StepView(index=i, agent="A", kind="message", content="word " * 400) for i in range(300))
    llm = LlmClient(model=MODEL, context_tokens=8192)
    for room in (300, 1200, 4000):
        rendered, cut = llm.fit_steps(steps, room)
        assert cut and llm.count_tokens("\n".join(rendered)) <= room
        assert any("are not shown" in r for r in rendered)
    with pytest.raises(PromptTooLong):
        llm.fit_steps(steps, 5)


@pytest.mark.django_db
def test_a_prompt_over_the_context_is_never_sent(project):
    with fake_llm_server(context=2000, respond="{}") as server:
        llm = LlmClient(model=MODEL, api_base=server.url, context_tokens=2000, project=project, num_retries=0)
        with pytest.raises(PromptTooLong, match="does not fit the context"):
            llm.complete_json(system="s", user="word " * 3000, purpose="probe", validate=lambda a: None)
    assert server.received == []


# --- accounting and budgets -------------------------------------------------------------------------------------------


def _configure(project, server, **fields: Any) -> ProjectLlmSettings:
    row, _ = ProjectLlmSettings.objects.get_or_create(project=project)
    for name, value in {
        "model": MODEL,
        "api_base": server.url,
        "max_retries": 0,
        "context_tokens": 32768,
        **fields,
    }.items():
        setattr(row, name, value)
    row.save()
    return row


@pytest.mark.django_db
def test_recorded_totals_equal_what_the_server_received_failed_verdicts_included(project):
    traces = [_import(project, path) for path in _sources(3)]
    views = [
        trace_view(t) for t in traces
    ]  # read here: the server's thread has no view of this test's transaction
    bad = traces[1].pk
    with fake_llm_server(context=32768) as server:

        def respond(messages: list[dict[str, Any]]) -> str:
            text = messages[1]["content"]
            # The second trace's answers are malformed, twice: a failed verdict that still cost two requests.
            if f'name="{views[1].name}"' in text:
                return "{not json"
            return judge(views[0].agents)(messages)  # the agents are read from the request itself

        server.respond = respond
        _configure(project, server)
        run = run_execute_inline(
            run=run_create(
                project=project, method="all_at_once", trace_ids=[t.pk for t in traces], enqueue=False
            )
        )
    failed = Verdict.objects.get(run=run, trace_id=bad)
    assert failed.status == "failed" and failed.calls == 2 and failed.input_tokens > 0
    totals = server.totals()
    calls = LlmCall.objects.filter(run=run, cached=False, ok=True) | LlmCall.objects.filter(
        run=run, cached=False, error__startswith="invalid"
    )
    assert (run.calls, run.input_tokens, run.output_tokens) == (
        totals["calls"],
        totals["input_tokens"],
        totals["output_tokens"],
    )
    assert sum(c.input_tokens for c in calls) == totals["input_tokens"]
    assert sum(v.calls for v in Verdict.objects.filter(run=run)) == totals["calls"]


@pytest.mark.django_db
def test_a_token_budget_stops_a_run_of_an_unpriced_model_before_the_request_that_would_pass_it(project):
    traces = [_import(project, path) for path in _sources(3)]
    with fake_llm_server(context=32768) as server:
        server.respond = judge(trace_view(traces[0]).agents, decisive_from=60)  # a long walk: prompts grow
        _configure(project, server, run_max_tokens=40_000)
        run = run_execute_inline(
            run=run_create(
                project=project, method="step_by_step", trace_ids=[t.pk for t in traces], enqueue=False
            )
        )
    totals = server.totals()
    assert totals["input_tokens"] + totals["output_tokens"] <= 40_000
    assert any("run budget of 40,000 tokens reached" in v.error for v in Verdict.objects.filter(run=run))
    assert (run.input_tokens, run.output_tokens, run.calls) == (
        totals["input_tokens"],
        totals["output_tokens"],
        totals["calls"],
    )


@pytest.mark.django_db
def test_a_money_cap_is_refused_on_the_form_for_a_model_nobody_can_price(owner_client, project):
    url = reverse("attribution:llm_settings", args=[project.slug])
    base = {"model": MODEL, "api_base": "", "temperature": "0", "timeout_seconds": "60", "max_retries": "1"}
    refused = owner_client.post(url, base | {"run_max_cost_usd": "1"})
    assert refused.status_code == 400 and b"No price is known for this model" in refused.content
    assert (
        owner_client.post(
            url,
            base | {"run_max_cost_usd": "1", "input_price_per_mtok": "0.5", "output_price_per_mtok": "1.5"},
        ).status_code
        == 302
    )
    page = owner_client.get(url).content.decode()
    assert "unknown" in page and "Context window" in page


@pytest.mark.django_db
def test_the_campaign_form_refuses_a_money_cap_for_an_unpriced_model_and_the_page_shows_the_writer_note(
    owner_client, project
):
    from attribution.models import InjectionCampaign
    from attribution.services import campaign_create, sandbox_clean_runs_generate

    sandbox_clean_runs_generate(project=project, runs=1, seed=5)
    ProjectLlmSettings.objects.create(project=project, model=MODEL)
    url = reverse("attribution:campaign_list", args=[project.slug])
    base = {"q": "", "format": "", "faults_per_trace": "1", "seed": "0", "writer": "perturb"}
    refused = owner_client.post(url, base | {"max_cost": "0.5"})
    assert refused.status_code == 400 and b"No price is known for the project&#x27;s model" in refused.content
    assert not InjectionCampaign.objects.filter(project=project).exists()
    # a token budget works for every model; with prices on the model page a money cap is enforceable
    assert owner_client.post(url, base | {"max_tokens": "5000"}).status_code == 302
    ProjectLlmSettings.objects.filter(project=project).update(input_price_per_mtok=1, output_price_per_mtok=2)
    assert owner_client.post(url, base | {"max_cost": "0.5"}).status_code == 302

    campaign = campaign_create(
        project=project,
        trace_ids=list(project.traces.values_list("pk", flat=True)),
        faults_per_trace=1,
        writer="llm",
        enqueue=False,
    )
    page = owner_client.get(reverse("attribution:campaign_detail", args=[campaign.pk])).content.decode()
    assert "Note: --writer llm is not used for the 1 sandbox run" in page


@pytest.mark.django_db
def test_prices_given_on_the_page_cost_the_calls_and_cap_the_money(project):
    with fake_llm_server(context=8192, respond='{"a": 1}') as server:
        llm = LlmClient(
            model=MODEL,
            api_base=server.url,
            project=project,
            num_retries=0,
            input_price_per_mtok=Decimal(1000),
            output_price_per_mtok=Decimal(2000),
            max_output_tokens=100,
            spending_cap=Decimal("0.23"),
        )
        llm.complete_json(system="s", user="u", purpose="p", validate=lambda a: None)
        (sent,) = server.answered()
        expected = sent.prompt_tokens * 0.001 + sent.completion_tokens * 0.002
        assert float(LlmCall.objects.get(project=project).cost) == pytest.approx(expected, abs=1e-6)
        # The first request could cost at most ~$0.213 (13 prompt tokens, 100 of answer); the second, with ~$0.03
        # spent, would pass the $0.23 cap if it answered in full: it is not made.
        with pytest.raises(Exception, match="spending cap"):
            llm.complete_json(system="s", user="u2", purpose="p", validate=lambda a: None)
    assert len(server.received) == 1


# --- retries, keys, test connection -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_retry_waits_for_the_servers_retry_after(project):
    with fake_llm_server(context=8192) as server:
        server.script = [("429", 1), ("500",), '```json\n{"a": 1}\n```']
        llm = LlmClient(model=MODEL, api_base=server.url, project=project, num_retries=2)
        assert llm.complete_json(system="s", user="u", purpose="p", validate=lambda a: None) == {"a": 1}
    first, second, third = server.received
    assert (first.status, second.status, third.status) == (429, 500, 200)
    assert second.at - first.at >= 1.0  # it waited as the server asked, not litellm's 0.7 s


@pytest.mark.django_db
def test_a_timeout_is_retried_and_a_server_smaller_than_the_setting_fails_clearly_without_retry(project):
    with fake_llm_server(context=4000) as server:
        server.script = [("sleep", 6), '{"a": 1}']  # the retry (after 1 s + 1 s) comes while it sleeps
        llm = LlmClient(model=MODEL, api_base=server.url, project=project, num_retries=1, timeout=1)
        assert llm.complete_json(system="s", user="u", purpose="p", validate=lambda a: None) == {"a": 1}
        assert [r.status for r in server.received[-1:]] == [200] and len(server.received) == 2
        # The page says 32k, the server holds 4k: the server's refusal is the error, and it is not retried.
        big = LlmClient(
            model=MODEL, api_base=server.url, project=project, num_retries=2, context_tokens=32768
        )
        with pytest.raises(MethodError, match=r"ContextWindowExceededError \(HTTP 400\)"):
            big.complete_json(system="s", user="word " * 5000, purpose="p", validate=lambda a: None)
    assert len(server.overflowed()) == 1
    assert LlmCall.objects.filter(project=project, error__contains="ContextWindowExceeded").count() == 1


@pytest.mark.django_db
def test_a_request_that_fails_at_the_provider_records_the_prompt_tokens_it_sent_as_an_estimate(project):
    with fake_llm_server(context=8192) as server:
        server.script = [("500",), ("500",)]  # the first try and its one retry both fail
        llm = LlmClient(
            model=MODEL, api_base=server.url, project=project, num_retries=1, method="all_at_once"
        )
        with pytest.raises(MethodError, match=r"InternalServerError \(HTTP 500\)"):
            llm.complete_json(system="s", user="word " * 300, purpose="p", validate=lambda a: None)
    first, second = server.received
    assert (first.status, second.status) == (500, 500)
    rows = list(LlmCall.objects.filter(project=project).order_by("id"))
    # what the server read, counted on this side: the same prompt, once per attempt, each an estimate
    assert [r.input_tokens for r in rows] == [first.prompt_tokens, second.prompt_tokens] and rows[
        0
    ].input_tokens > 300
    assert all(
        (r.ok, r.estimated, r.output_tokens, r.cost, r.reserved_until) == (False, True, 0, 0, None)
        for r in rows
    )
    assert rows[0].error.endswith("(retried)") and "estimated" not in rows[1].error
    assert (llm.calls, llm.input_tokens) == (
        2,
        server.received_totals()["input_tokens"],
    )  # the method's totals too


@pytest.mark.django_db
def test_a_connection_that_never_reached_a_server_records_no_tokens(project):
    with fake_llm_server(context=8192) as server:
        url = server.url
    llm = LlmClient(model=MODEL, api_base=url, project=project, num_retries=0)  # the server is gone
    with pytest.raises(MethodError):
        llm.complete_json(system="s", user="u", purpose="p", validate=lambda a: None)
    row = LlmCall.objects.get(project=project)
    assert (row.ok, row.input_tokens, row.estimated, row.reserved_until) == (False, 0, False, None)


def test_retry_after_is_honoured_up_to_the_limit_and_backs_off_beyond(settings):
    class Limited(Exception):
        def __init__(self, value: str) -> None:
            self.litellm_response_headers = {"retry-after": value}

    settings.CULPRIT_LLM_MAX_RETRY_AFTER = 300
    assert retry_wait(Limited("120"), attempt=0) == 120
    assert retry_wait(Limited("3600"), attempt=2) == 4  # over the limit: exponential backoff instead
    assert retry_wait(Exception("no header"), attempt=1) == 2


@pytest.mark.django_db
def test_a_custom_api_base_without_a_key_gets_a_placeholder_never_the_servers_key(project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-canary-0001")
    with fake_llm_server(context=8192, respond='{"a": 1}') as server:
        LlmClient(model=MODEL, api_base=server.url, project=project, num_retries=0).complete_json(
            system="s", user="u", purpose="p", validate=lambda a: None
        )
    assert [r.authorization for r in server.received] == ["Bearer culprit-no-key"]


@pytest.mark.django_db
def test_test_connection_shows_the_answer_escaped_and_the_error(owner_client, project):
    url = reverse("attribution:llm_test_connection", args=[project.slug])
    with fake_llm_server(context=8192) as server:
        _configure(project, server)
        server.script = ["<b>ready</b>", ("500",)]
        ok = owner_client.post(url, HTTP_HX_REQUEST="true").content.decode()
        failed = owner_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Connected in" in ok and "&lt;b&gt;ready&lt;/b&gt;" in ok and "<b>ready" not in ok
    assert "The connection failed" in failed and "InternalServerError (HTTP 500)" in failed
    assert server.received[0].max_tokens == 8
    assert LlmCall.objects.filter(project=project, purpose="test connection").count() == 2


# --- clean JSON -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_attribute_evaluate_and_inject_faults_print_pure_json_on_stdout(project):
    from attribution.services import sandbox_clean_runs_generate

    traces = [_import(project, path) for path in _sources(2)]
    sandbox_clean_runs_generate(project=project, runs=1, seed=7)
    with fake_llm_server(context=32768) as server:
        server.respond = judge(trace_view(traces[0]).agents)
        _configure(project, server)
        env = process_env(
            CULPRIT_OUTBOUND_ALLOW_LOOPBACK="true", CULPRIT_LLM_CACHE_URL="off", LOG_LEVEL="INFO"
        )
        outputs = []
        for args in (
            ["attribute", "--trace", str(traces[0].pk), "--method", "all_at_once", "--json"],
            ["evaluate", "--project", project.name, "--method", "all_at_once", "--json"],
            [
                "inject_faults",
                "--project",
                project.name,
                "--writer",
                "llm",
                "--faults-per-trace",
                "1",
                "--json",
            ],
        ):
            done = subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            outputs.append(json.loads(done.stdout))  # nothing but JSON
            if args[0] != "inject_faults":  # the model was called, and its log lines went to stderr
                assert "llm call" in done.stderr and "llm call" not in done.stdout
    assert AttributionRun.objects.filter(project=project).count() >= 2
    # --writer llm on a sandbox run is not silently ignored: the output says so.
    assert any("--writer llm is not used for the 1 sandbox run" in note for note in outputs[2]["notes"])


# --- campaigns: the fault writer and the simulated replayer over HTTP ------------------------------------------------


def _simulated(messages: list[dict[str, Any]]) -> str:
    """The model for a campaign: writes a wrong step, ends the replay at once with a wrong answer, judges it failed."""
    system = messages[0]["content"]
    if "You help build a benchmark" in system:
        return json.dumps(
            {"content": "The figure I found is 0, so the answer is 0.", "explanation": "a wrong figure"}
        )
    if "You moderate the replay" in system:
        return json.dumps({"next": ""})
    if "You judge whether" in system:
        return json.dumps({"verdict": "failure", "final_answer": "0", "reason": "wrong"})
    return json.dumps({"content": "FINAL ANSWER: 0", "final_answer": "0", "next": ""})


def _succeeded_trace(project) -> Trace:
    smallest = min(
        (DATA if DATA.exists() else ROOT / "tracing" / "demo_data").glob("*.json"),
        key=lambda p: p.stat().st_size,
    )
    trace = _import(project, smallest)
    Trace.objects.filter(pk=trace.pk).update(outcome="succeeded")  # a run to break on purpose
    return trace


@pytest.mark.parametrize("max_tokens", [None, 9000])
@pytest.mark.django_db
def test_a_campaigns_recorded_tokens_equal_what_the_server_received_writer_included(project, max_tokens):
    from attribution.models import InjectionCampaign
    from attribution.services import campaign_create, campaign_execute_inline

    trace = _succeeded_trace(project)
    with fake_llm_server(context=32768, respond=_simulated) as server:
        _configure(project, server)
        campaign = campaign_execute_inline(
            campaign=campaign_create(
                project=project,
                trace_ids=[trace.pk],
                faults_per_trace=3,
                writer="llm",
                max_tokens=max_tokens,
                enqueue=False,
            )
        )
    campaign = InjectionCampaign.objects.get(pk=campaign.pk)
    totals = server.totals()
    assert totals["calls"] > 0 and server.overflowed() == []
    rows = LlmCall.objects.filter(campaign=campaign, cached=False)
    assert (
        sum(r.input_tokens + r.output_tokens for r in rows)
        == totals["input_tokens"] + totals["output_tokens"]
    )
    assert {r.method for r in rows} == {"fault_writer", "inject_replay"}
    assert campaign.tokens == totals["input_tokens"] + totals["output_tokens"]  # failed injections included
    if max_tokens is None:
        assert campaign.kept >= 1
    else:  # stopped by its budget before the request that would pass it
        assert totals["input_tokens"] + totals["output_tokens"] <= max_tokens
        assert campaign.status == "stopped" and "campaign budget of 9,000 tokens" in campaign.stop_reason


# --- candidates and embeddings ----------------------------------------------------------------------------------------


def _who_when(agents_and_kinds: list[tuple[str, str]]):
    from attribution.methods.base import TraceView

    steps = tuple(
        StepView(index=i, agent=a, kind=k, content=f"step {i} of {a}")
        for i, (a, k) in enumerate(agents_and_kinds)
    )
    return TraceView(
        trace_id=0,
        name="ww",
        question="the task",
        ground_truth="42",
        outcome="failed",
        steps=steps,
        agents=tuple(dict.fromkeys(a for a, _ in agents_and_kinds)),
    )


@pytest.mark.django_db
def test_judges_are_offered_only_acting_agents_and_never_the_task_as_a_step(project):
    view = _who_when(
        [
            ("human", "human"),
            ("Orchestrator", "thought"),
            ("WebSurfer", "tool_call"),
            ("Computer_terminal", "tool_result"),
            ("Orchestrator", "message"),
        ]
    )
    assert view.candidates() == ("Orchestrator", "WebSurfer")
    with fake_llm_server(context=8192) as server:
        server.respond = judge(
            view.candidates(), decisive_from=99
        )  # nothing decisive: every candidate is asked
        llm = LlmClient(model=MODEL, api_base=server.url, project=project, num_retries=0)
        get_method("all_at_once").run(view, llm=llm)
        asked = server.received[-1].messages[1]["content"]
        get_method("step_by_step").run(view, llm=llm)
    assert 'one of: "Orchestrator", "WebSurfer".' in asked and '"human"' not in asked.split("one of:")[1]
    judged = [
        int(re.search(r"The most recent step \(step (\d+)\)", r.messages[1]["content"])[1])
        for r in server.received[1:]
    ]
    assert judged == [1, 2, 4]  # not the task (step 0), not the terminal's output (step 3)


@pytest.mark.django_db
def test_embeddings_go_to_the_projects_endpoint_with_a_placeholder_key(project, monkeypatch):
    from attribution.schemas import index

    monkeypatch.setenv("CULPRIT_SCHEMA_EMBEDDING_MODEL", "openai/local-embedder")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-server-canary-0002")
    with fake_llm_server() as server:
        _configure(project, server)
        vectors = index.embed(["wrong figure copied", "tool misread"], project_id=project.pk)
    assert vectors is not None and len(vectors) == 2 and len(vectors[0]) == 16
    (request,) = server.embeddings
    assert request["input"] == ["wrong figure copied", "tool misread"]
    assert request["authorization"] == "Bearer culprit-no-key"


# --- a run through a real worker --------------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_run_on_a_self_hosted_model_stops_at_its_token_budget_and_its_totals_match_the_server(
    celery_worker, project
):
    from attribution.models import RunStatus
    from tests.conftest import wait_for

    traces = [_import(project, path) for path in _sources(3)]
    with fake_llm_server(context=32768) as server:
        server.respond = judge(trace_view(traces[0]).agents, decisive_from=60)
        _configure(project, server, run_max_tokens=40_000)
        run = run_create(project=project, method="step_by_step", trace_ids=[t.pk for t in traces])
        finished = wait_for(
            lambda: AttributionRun.objects.filter(pk=run.pk, status=RunStatus.SUCCEEDED).first(), timeout=240
        )
    totals = server.totals()
    assert 0 < totals["input_tokens"] + totals["output_tokens"] <= 40_000
    assert (finished.calls, finished.input_tokens, finished.output_tokens) == (
        totals["calls"],
        totals["input_tokens"],
        totals["output_tokens"],
    )
    assert Verdict.objects.filter(
        run=finished, error__contains="run budget of 40,000 tokens reached"
    ).exists()
