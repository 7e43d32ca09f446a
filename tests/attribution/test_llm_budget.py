"""Budgets that hold under concurrency (reserve before sending), failed attempts counted as the server read them,
the ``estimated`` flag and the usage table that shows it.

Real PostgreSQL, Redis and HTTP: the provider is the stdlib OpenAI-compatible server of ``tests/llm_server.py``.
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from attribution import llm_budget
from attribution.llm import BudgetExceeded, LlmClient, ResponseCache
from attribution.llm_budget import Limit
from attribution.models import AttributionRun, LlmCall
from tests.llm_server import count_text, fake_llm_server

MODEL = "openai/self-hosted-test-model"  # unknown to litellm: no context, no price
ANSWER = '{"a": 1}'
MESSAGES = {"system": "You answer with JSON.", "user": "word " * 300}


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.CULPRIT_OUTBOUND_ALLOW_LOOPBACK = True
    settings.CULPRIT_LLM_CACHE_URL = "off"


def _run(project) -> AttributionRun:
    return AttributionRun.objects.create(project=project, method="all_at_once", trace_ids=[])


def _ask(llm: LlmClient, purpose: str = "p") -> dict[str, Any]:
    return llm.complete_json(
        system=MESSAGES["system"], user=MESSAGES["user"], purpose=purpose, validate=lambda a: None
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_send_exactly_the_requests_a_token_budget_allows(project):
    workers, allowed, answer_tokens = 6, 2, 20
    run = _run(project)
    with fake_llm_server(context=8192) as server:

        def slow(messages: list[dict[str, Any]]) -> str:
            # Every worker has checked the budget before the first answer comes back: without a reservation each
            # would have seen nothing spent and sent its request.
            threading.Event().wait(0.5)
            return ANSWER

        server.respond = slow
        probe = LlmClient(model=MODEL, api_base=server.url)
        prompt = probe.count_message_tokens(
            [{"role": "system", "content": MESSAGES["system"]}, {"role": "user", "content": MESSAGES["user"]}]
        )
        # Room for exactly ``allowed`` reservations; once they settle (a short answer, far below its maximum), what
        # is left is still less than one more reservation.
        budget = allowed * (prompt + answer_tokens)
        assert allowed * (prompt + count_text(ANSWER)) + prompt + answer_tokens > budget
        clients = [
            LlmClient(
                model=MODEL,
                api_base=server.url,
                project=project,
                run=run,
                method="all_at_once",
                num_retries=0,
                max_output_tokens=answer_tokens,
                limits=[Limit("run budget", {"run_id": run.pk}, max_tokens=budget)],
            )
            for _ in range(workers)
        ]
        start = threading.Barrier(workers)
        outcomes: list[str] = []

        def work(llm: LlmClient) -> None:
            try:
                start.wait()
                _ask(llm)
                outcomes.append("answered")
            except BudgetExceeded:
                outcomes.append("refused")
            finally:
                connection.close()

        threads = [threading.Thread(target=work, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(outcomes) == ["answered"] * allowed + ["refused"] * (workers - allowed)
    assert len(server.received) == allowed
    rows = LlmCall.objects.filter(run=run)
    assert rows.filter(reserved_until__isnull=False).count() == 0  # every reservation settled
    recorded = {
        "requests": rows.count(),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
    }
    assert recorded == server.received_totals()
    assert recorded["input_tokens"] + recorded["output_tokens"] <= budget


@pytest.mark.django_db(transaction=True)
def test_a_request_in_flight_holds_its_prompt_and_maximum_answer_as_a_reservation(project):
    seen: list[tuple[int, int, bool]] = []
    with fake_llm_server(context=8192) as server:

        def look(messages: list[dict[str, Any]]) -> str:
            try:  # the server's thread reads what the client committed before sending
                seen.extend(
                    (i, o, until is None)
                    for i, o, until in LlmCall.objects.filter(project=project).values_list(
                        "input_tokens", "output_tokens", "reserved_until"
                    )
                )
            finally:
                connection.close()
            return ANSWER

        server.respond = look
        llm = LlmClient(
            model=MODEL, api_base=server.url, project=project, num_retries=0, max_output_tokens=40
        )
        _ask(llm)
    (sent,) = server.received
    assert seen == [
        (sent.prompt_tokens, 40, False)
    ]  # reserved: the counted prompt and the most it may answer
    row = LlmCall.objects.get(project=project)
    assert (row.input_tokens, row.output_tokens, row.reserved_until, row.ok, row.estimated) == (
        sent.prompt_tokens,
        sent.completion_tokens,
        None,
        True,
        False,
    )


@pytest.mark.parametrize("failure", [("429", 0), ("500",)], ids=["429-then-200", "500-then-200"])
@pytest.mark.django_db
def test_failed_attempts_before_a_successful_retry_count_so_totals_equal_what_the_server_read(
    project, failure
):
    with fake_llm_server(context=8192) as server:
        server.script = [failure, ANSWER]
        llm = LlmClient(
            model=MODEL, api_base=server.url, project=project, num_retries=1, method="all_at_once"
        )
        assert _ask(llm) == {"a": 1}
    failed, answered = server.received
    assert (failed.status, answered.status) == (int(failure[0]), 200)
    rows = list(LlmCall.objects.filter(project=project).order_by("id"))
    assert [(r.ok, r.estimated) for r in rows] == [(False, True), (True, False)]
    assert rows[0].input_tokens == failed.prompt_tokens and rows[0].error.endswith("(retried)")
    read = server.received_totals()
    assert (
        sum(r.input_tokens for r in rows)
        == read["input_tokens"]
        == failed.prompt_tokens + answered.prompt_tokens
    )
    assert sum(r.output_tokens for r in rows) == read["output_tokens"]
    assert (llm.calls, llm.input_tokens, llm.output_tokens) == (
        2,
        read["input_tokens"],
        read["output_tokens"],
    )


@pytest.mark.django_db
def test_a_retry_reserves_again_and_stops_at_the_budget(project):
    run = _run(project)
    with fake_llm_server(context=8192) as server:
        server.script = [("500",), ANSWER]
        probe = LlmClient(model=MODEL, api_base=server.url, max_output_tokens=20)
        prompt = probe.count_message_tokens(
            [{"role": "system", "content": MESSAGES["system"]}, {"role": "user", "content": MESSAGES["user"]}]
        )
        # One attempt fits; after it failed having been read, its prompt is spent and a second one does not fit.
        llm = LlmClient(
            model=MODEL,
            api_base=server.url,
            project=project,
            run=run,
            num_retries=2,
            max_output_tokens=20,
            limits=[Limit("run budget", {"run_id": run.pk}, max_tokens=prompt + 30)],
        )
        with pytest.raises(BudgetExceeded, match="run budget"):
            _ask(llm)
    assert [r.status for r in server.received] == [500]
    (row,) = LlmCall.objects.filter(run=run)
    assert (row.estimated, row.input_tokens, row.reserved_until) == (
        True,
        server.received[0].prompt_tokens,
        None,
    )


@pytest.mark.django_db
def test_a_reservation_counts_until_it_expires_then_only_its_prompt_counts_as_an_estimate(project):
    run = _run(project)
    row = LlmCall.objects.create(
        project=project,
        run=run,
        model=MODEL,
        ok=False,
        input_tokens=100,
        output_tokens=50,
        cost=Decimal("0.5"),
        reserved_until=timezone.now() + timedelta(seconds=60),
    )
    limit = Limit("run budget", {"run_id": run.pk}, max_tokens=200, max_cost=Decimal(1))
    assert llm_budget.spent(limit.rows) == (150, Decimal("0.5"))
    with pytest.raises(BudgetExceeded, match="150 used or reserved"):
        llm_budget.reserve(limits=[limit], need_tokens=60, need_cost=None, timeout=30, row=None)
    # The worker was killed mid-request: once its reservation expired, the next reservation settles it.
    LlmCall.objects.filter(pk=row.pk).update(reserved_until=timezone.now() - timedelta(seconds=1))
    assert llm_budget.reserve(limits=[limit], need_tokens=60, need_cost=None, timeout=30, row=None) is None
    row.refresh_from_db()
    assert (row.reserved_until, row.ok, row.estimated, row.input_tokens, row.output_tokens, row.cost) == (
        None,
        False,
        True,
        100,
        0,
        0,
    )
    assert row.error == llm_budget.ABANDONED
    assert llm_budget.reservation_seconds(30) == 2 * 30 + llm_budget.RESERVATION_SLACK_SECONDS


@pytest.mark.django_db
def test_a_cache_hit_reserves_nothing_and_is_answered_when_the_budget_is_spent(project):
    cache = ResponseCache(os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/7"))
    run = _run(project)
    with fake_llm_server(context=8192, respond=ANSWER) as server:
        first = LlmClient(
            model=MODEL, api_base=server.url, project=project, run=run, num_retries=0, cache=cache
        )
        _ask(first)
        spent, _ = llm_budget.spent({"run_id": run.pk})
        broke = LlmClient(
            model=MODEL,
            api_base=server.url,
            project=project,
            run=run,
            num_retries=0,
            cache=cache,
            limits=[Limit("run budget", {"run_id": run.pk}, max_tokens=spent)],
        )
        assert _ask(broke) == {"a": 1}
        with pytest.raises(BudgetExceeded):  # the same budget refuses a question the cache cannot answer
            broke.complete_json(system="other", user="u", purpose="p", validate=lambda a: None)
    assert len(server.received) == 1
    hit = LlmCall.objects.get(run=run, cached=True)
    assert (hit.input_tokens, hit.output_tokens, hit.reserved_until, hit.estimated) == (0, 0, None, False)


@pytest.mark.django_db
def test_the_usage_tables_show_estimated_tokens_apart(owner_client, project):
    run = _run(project)
    common = {"project": project, "run": run, "model": MODEL, "method": "all_at_once"}
    LlmCall.objects.create(
        **common,
        purpose="window 1/2",
        input_tokens=700,
        output_tokens=0,
        ok=False,
        estimated=True,
        error="RateLimitError (HTTP 429) (retried)",
    )
    LlmCall.objects.create(
        **common, purpose="window 1/2", input_tokens=1000, output_tokens=30, cost=Decimal("0.01")
    )
    LlmCall.objects.create(
        **common,
        purpose="window 2/2",
        input_tokens=900,
        output_tokens=1500,
        cost=Decimal("0.2"),
        ok=False,
        reserved_until=timezone.now() + timedelta(seconds=60),
    )
    for url in (
        reverse("attribution:run_detail", args=[run.pk]),
        reverse("attribution:llm_settings", args=[project.slug]),
    ):
        page = owner_client.get(url).content.decode()
        assert "2 calls" in page and "1030 tokens reported by the provider" in page
        assert "700 tokens estimated" in page and '700 <span class="tag">estimated</span>' in page
        assert "1 request in flight" in page and "in flight (reserved)" in page
        assert "$0.2100" not in page  # the reservation's maximum cost is not spent
