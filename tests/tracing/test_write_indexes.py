"""Indexes that skip rows no query reads through them (migration 0024, issue 19), and the queries that still use them.

``step_span_trace`` holds only steps that have a span id (most imported steps have none), and the trace search's
trigram indexes only traces the search indexer has done (a new trace is pending, so importing it writes no trigrams).
Each query must still say, or imply, the index's condition, or PostgreSQL would read the whole table instead.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models.expressions import RawSQL

from tests.plans import explain
from tracing import search, services
from tracing.models import Step, Trace
from tracing.services.otlp_build import _SPANS_BY, _STEPS_BY_SPAN

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("partial indexes of PostgreSQL")


def test_steps_are_found_by_span_id_through_the_partial_index(imported_trace):
    by_label = Step.objects.filter(trace=imported_trace, span_id="a1b2").order_by()  # a label file's span
    by_build = Step.objects.filter(pk__in=RawSQL(_STEPS_BY_SPAN, [["a1b2", "c3d4"], imported_trace.pk]))  # noqa: S611
    for queryset in (by_label, by_build):
        assert "step_span_trace" in explain(queryset.values("pk"))


def test_the_otlp_builders_probes_have_one_index_they_can_use(project):
    """The builder's lookups by span id, parent id and a step's span id compare the project or trace as ``+ 0``: no
    index led by (project, trace) can serve them, so statistics that do not know a trace cannot send a probe through
    the path index (reading the whole trace once per probe, minutes for a 100,000-span trace; migration 0025)."""
    ids = ["a1b2c3d4e5f60718", "0102030405060708"]
    plans = {
        "otlpspan_unique_span": explain(_SPANS_BY["span_id"], [ids, project.pk, "ab" * 16]),
        "otlpspan_parent": explain(_SPANS_BY["parent_span_id"], [ids, project.pk, "ab" * 16]),
        "step_span_trace": explain(_STEPS_BY_SPAN, [ids, 1]),
    }
    for index, plan in plans.items():
        used = {line.split(" on ")[-1].split()[0] for line in plan.splitlines() if "Index Scan on" in line}
        assert used == {index}, plan


def test_a_new_trace_is_found_by_its_task_before_and_after_the_indexer_ran(imported_trace):
    word = imported_trace.question.split()[2]
    assert Trace.objects.get(pk=imported_trace.pk).search_pending
    assert imported_trace.pk in search.find(word, project_id=imported_trace.project_id).trace_ids
    services.search_index_pending()
    assert not Trace.objects.get(pk=imported_trace.pk).search_pending
    assert imported_trace.pk in search.find(word, project_id=imported_trace.project_id).trace_ids
    plan = explain(Trace.objects.filter(search._named(word)).order_by().values("pk"))
    assert "trace_question_trigrams" in plan and "trace_search_pending" in plan
