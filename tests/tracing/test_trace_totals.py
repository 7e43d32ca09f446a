"""A trace's totals are stored when its steps are written (issue 16): they equal the aggregate over the stored steps,
the page reads them without summing the steps, and a trace written before the column heals on its first view."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.models import Count, Max, Min, Q, Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.conftest import ROOT, SHARED, import_now, incoming_path
from tests.tracing.test_otlp_incremental import SpanTree, in_batches, send
from tracing import services, waterfall
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import Step, StepKind, Trace

pytestmark = pytest.mark.django_db

TRAIL = SHARED / "traces" / "trail" / "gaia" / "3215fc75e81bdb73706a4fb37b66427f.trace.json"
LANGFUSE = ROOT / "tests" / "fixtures" / "langfuse" / "langgraph-python-2025-08-22.trace.json"
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def aggregate_before_issue_16(trace: Trace) -> dict:
    """The totals as ``waterfall.trace_totals`` computed them before they were stored: two queries over the steps."""
    steps = Step.objects.filter(trace=trace).order_by()
    agg = steps.aggregate(
        started=Min("started_at"),
        ended=Max("ended_at"),
        last_start=Max("started_at"),
        llm=Count("id", filter=Q(kind=StepKind.LLM_CALL)),
        tin=Sum("input_tokens"),
        tout=Sum("output_tokens"),
        failed=Count("id", filter=waterfall.ERROR_STATUS),
    )
    ended = max(filter(None, [agg["ended"], agg["last_start"]]), default=None)
    return {
        "steps": trace.step_count,
        "started": agg["started"].isoformat() if agg["started"] else None,
        "ended": ended.isoformat() if ended else None,
        "llm_calls": agg["llm"],
        "input_tokens": agg["tin"] or 0,
        "output_tokens": agg["tout"] or 0,
        "cost": waterfall.llm_costs(steps).get(trace.pk),
        "failed": agg["failed"],
    }


def _import(project, path) -> Trace:
    (job,) = import_now(project, incoming_path(path))
    assert job.trace_ids, job.error
    return Trace.objects.get(pk=job.trace_ids[0])


def _sums_steps(queries) -> list[str]:
    return [q["sql"] for q in queries if "SUM(" in q["sql"].upper() and '"tracing_step"' in q["sql"]]


def test_a_who_and_when_import_stores_the_totals_of_its_steps(imported_trace):
    assert imported_trace.totals == aggregate_before_issue_16(imported_trace)
    assert imported_trace.totals["steps"] == imported_trace.step_count > 0


def test_a_trail_import_stores_tokens_and_times_equal_to_the_aggregate(project):
    trace = _import(project, TRAIL)
    assert trace.totals == aggregate_before_issue_16(trace)
    assert trace.totals["input_tokens"] > 0 and trace.totals["llm_calls"] > 0 and trace.totals["started"]


def test_a_langfuse_import_stores_the_summed_cost_of_its_llm_calls(project):
    trace = _import(project, LANGFUSE)
    assert trace.totals == aggregate_before_issue_16(trace)
    assert trace.totals["cost"] is not None


def test_costs_of_every_shape_are_summed_as_the_database_sums_them(project):
    raws = [
        {"totalCost": 0.1},
        {"totalCost": "0.2"},
        {"totalCost": "3e-2"},
        {"totalCost": None, "calculatedTotalCost": 0.4},  # JSON null: the next key counts
        {"totalCost": True, "calculatedTotalCost": 9},  # true is not a number and stops the search
        {"totalCost": "n/a"},
        {"totalCost": "1\n"},
        {"totalCost": float("nan")},
        {"totalCost": {"usd": 1}},
        {"metadata": {"attributes": {"operation.cost": 5}}},
        {"totalCost": 7, "status_code": "ERROR"},
        {"level": "ERROR"},
        {"status_code": ["ERROR"]},
        {"status": {"code": 2, "message": "boom"}},  # an OTLP span that ended with status ERROR
        {"status": {"code": "STATUS_CODE_ERROR"}},
        {"status": {"code": 1}},  # OK
        {"status": {"code": True}},
        {"status": "ERROR"},
        ["not", "an", "object"],
        None,
    ]
    steps = [
        ParsedStep(
            speaker="A",
            agent="A",
            kind="llm_call" if i % 7 else "message",  # a message's cost is never counted
            content=f"step {i}",
            started_at=T0 + dt.timedelta(seconds=i) if i % 3 else None,
            ended_at=T0 + dt.timedelta(seconds=i, milliseconds=1) if i % 4 else None,
            input_tokens=i,
            output_tokens=2 * i if i % 2 else None,
            raw=raw,
        )
        for i, raw in enumerate(raws)
    ]
    parsed = ParsedTrace(name="costs", source_format="langfuse", steps=steps)
    trace = services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)
    trace.refresh_from_db()
    assert trace.totals == aggregate_before_issue_16(trace) == waterfall.totals_aggregate(trace=trace)
    assert trace.totals["failed"] == 4

    trace.totals = {}
    rows = (
        Step.objects.filter(trace=trace)
        .order_by("index")
        .values("kind", "started_at", "ended_at", "input_tokens", "output_tokens", "raw")
    )
    services.trace_totals_store(trace=trace, steps=rows)
    trace.refresh_from_db()
    assert trace.totals == aggregate_before_issue_16(trace)


def test_an_otlp_trace_built_in_two_batches_stores_the_totals_of_all_its_steps(project):
    tree = SpanTree(agents=3, calls=5)
    first, second = in_batches(tree.by_end(), len(tree.spans) // 2 + 1)
    partial = send(project, first)
    assert partial.totals == aggregate_before_issue_16(partial)
    trace = send(project, second)
    assert trace.totals == aggregate_before_issue_16(trace)
    assert trace.totals["steps"] == Step.objects.filter(trace=trace).count() > partial.totals["steps"]
    assert trace.totals["input_tokens"] > partial.totals["input_tokens"] > 0


@pytest.mark.parametrize("order", ["by_start", "by_end"])
def test_otlp_totals_stay_exact_through_appends_and_adoptions(project, order):
    """A build adds its rows to the stored totals and takes out those of the steps it replaced (children that
    waited for a parent are derived again when it comes, as an SDK exporting spans as they end makes happen
    all the time), without an aggregate over the trace; when a replaced step held a bound, it aggregates. Either
    way the stored totals are the aggregate of the steps."""
    tree = SpanTree(agents=3, calls=6, seed=4)
    for batch in in_batches(getattr(tree, order)(), 5):
        trace = send(project, batch)
        assert trace.totals == aggregate_before_issue_16(trace)


def test_the_trace_page_does_not_sum_the_steps_when_totals_are_stored(owner_client, project):
    trace = _import(project, TRAIL)
    with CaptureQueriesContext(connection) as queries:
        response = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk]))
    assert response.status_code == 200
    assert _sums_steps(queries) == []
    assert f"{trace.totals['llm_calls']}</strong>" in response.content.decode()


def test_an_old_trace_without_totals_heals_on_its_first_view(owner_client, project):
    trace = _import(project, TRAIL)
    expected = trace.totals
    Trace.objects.filter(pk=trace.pk).update(totals={})  # as written before the column existed
    url = reverse("tracing:trace_detail", args=[trace.pk])
    with CaptureQueriesContext(connection) as first:
        assert owner_client.get(url).status_code == 200
    assert _sums_steps(first.captured_queries)  # the fallback aggregated
    trace.refresh_from_db()
    assert trace.totals == expected == aggregate_before_issue_16(trace)
    with CaptureQueriesContext(connection) as second:
        assert owner_client.get(url).status_code == 200
    assert _sums_steps(second.captured_queries) == []


def test_totals_of_another_step_count_are_not_trusted(project, imported_trace):
    Trace.objects.filter(pk=imported_trace.pk).update(
        totals={**imported_trace.totals, "steps": 1, "llm_calls": 99}
    )
    trace = Trace.objects.get(pk=imported_trace.pk)
    totals = waterfall.trace_totals(trace=trace)
    assert totals.llm_calls == aggregate_before_issue_16(trace)["llm_calls"]
    assert totals.steps == trace.step_count


def test_an_otlp_trace_built_at_once_sums_its_totals_and_agent_counts_in_memory(project):
    """A trace's first build counts its totals and its agents' steps from the rows it writes (no aggregate query);
    they equal what the database counts."""
    from django.db.models import Count as DbCount

    from tracing.models import Agent

    trace = send(project, SpanTree(agents=4, calls=8, seed=3).by_end())
    assert trace.totals == aggregate_before_issue_16(trace)
    assert trace.totals["failed"] > 0 and trace.totals["input_tokens"] > 0
    counted = dict(
        Step.objects.filter(trace=trace, agent__isnull=False)
        .values_list("agent__name")
        .annotate(n=DbCount("id"))
        .values_list("agent__name", "n")
    )
    stored = dict(Agent.objects.filter(trace=trace).values_list("name", "step_count"))
    assert stored == {name: counted.get(name, 0) for name in stored} and sum(stored.values()) > 0
    assert trace.agent_count == sum(1 for n in stored.values() if n)
