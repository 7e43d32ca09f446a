"""Indexes that skip rows no query reads through them (migration 0024, issue 19), and the queries that still use them.

``step_trace_span`` holds only steps that have a span id (most imported steps have none), and the trace search's
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
from tracing.services.otlp_build import _STEPS_BY_SPAN

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("partial indexes of PostgreSQL")


def test_steps_are_found_by_span_id_through_the_partial_index(imported_trace):
    by_label = Step.objects.filter(trace=imported_trace, span_id="a1b2").order_by()  # a label file's span
    by_build = Step.objects.filter(pk__in=RawSQL(_STEPS_BY_SPAN, [["a1b2", "c3d4"], imported_trace.pk]))  # noqa: S611
    for queryset in (by_label, by_build):
        assert "step_trace_span" in explain(queryset.values("pk"))


def test_a_new_trace_is_found_by_its_task_before_and_after_the_indexer_ran(imported_trace):
    word = imported_trace.question.split()[2]
    assert Trace.objects.get(pk=imported_trace.pk).search_pending
    assert imported_trace.pk in search.find(word, project_id=imported_trace.project_id).trace_ids
    services.search_index_pending()
    assert not Trace.objects.get(pk=imported_trace.pk).search_pending
    assert imported_trace.pk in search.find(word, project_id=imported_trace.project_id).trace_ids
    plan = explain(Trace.objects.filter(search._named(word)).order_by().values("pk"))
    assert "trace_question_trigrams" in plan and "trace_search_pending" in plan
