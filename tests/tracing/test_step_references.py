"""A step's trace and agent stay real without per-row foreign-key constraints (migration 0023).

The constraints on ``Step.trace`` and ``Step.agent`` became triggers that check once per statement (issue 19: the
per-step check and row lock were a third of the server's time importing small traces). These pin that the
guarantees held: no step of a missing trace or agent can be written, by COPY, INSERT or UPDATE, and no trace or
agent can be deleted from under its steps; Django's cascade still deletes what it did.
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from tracing.models import Agent, Step, Trace
from tracing.services.writer import rows_insert

pytestmark = pytest.mark.django_db


def _missing_id(model) -> int:
    return (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000


def _sql(statement: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_a_step_of_a_trace_that_does_not_exist_is_refused(imported_trace):
    with pytest.raises(IntegrityError, match="trace that does not exist"), transaction.atomic():
        Step.objects.create(trace_id=_missing_id(Trace), index=0, content="orphan")
    with pytest.raises(IntegrityError, match="trace that does not exist"), transaction.atomic():
        rows_insert([Step(trace_id=_missing_id(Trace), index=0, content="orphan")])  # the writer's COPY
    assert not Step.objects.filter(content="orphan").exists()


def test_a_step_of_an_agent_that_does_not_exist_is_refused(imported_trace):
    last = imported_trace.steps.order_by("-index").first()
    with pytest.raises(IntegrityError, match="agent that does not exist"), transaction.atomic():
        Step.objects.create(trace=imported_trace, index=last.index + 1, agent_id=_missing_id(Agent))
    step = imported_trace.steps.exclude(agent=None).first()
    with pytest.raises(IntegrityError, match="agent that does not exist"), transaction.atomic():
        Step.objects.filter(pk=step.pk).update(agent_id=_missing_id(Agent))
    with pytest.raises(IntegrityError, match="trace that does not exist"), transaction.atomic():
        Step.objects.filter(pk=step.pk).update(trace_id=_missing_id(Trace))
    step.refresh_from_db()
    assert step.trace_id == imported_trace.pk and step.agent_id is not None


def test_steps_of_real_traces_and_agents_are_written(imported_trace):
    agent = imported_trace.agents.first()
    last = imported_trace.steps.order_by("-index").first()
    Step.objects.create(trace=imported_trace, index=last.index + 1, agent=agent, content="one more")
    Step.objects.filter(pk=last.pk).update(agent=None)  # emptying an agent needs no check
    assert imported_trace.steps.filter(content="one more", agent=agent).exists()


def test_a_trace_or_agent_with_steps_cannot_be_deleted_from_under_them(imported_trace):
    agent = imported_trace.steps.exclude(agent=None).first().agent
    with pytest.raises(IntegrityError, match="deleted trace still has steps"), transaction.atomic():
        _sql("DELETE FROM tracing_trace WHERE id = %s", [imported_trace.pk])
    with pytest.raises(IntegrityError, match="deleted agent still has steps"), transaction.atomic():
        _sql("DELETE FROM tracing_agent WHERE id = %s", [agent.pk])
    assert Trace.objects.filter(pk=imported_trace.pk).exists()


def test_django_s_cascade_deletes_as_before(imported_trace):
    agent = imported_trace.steps.exclude(agent=None).first().agent
    with_agent = set(agent.steps.values_list("pk", flat=True))
    agent.delete()
    assert with_agent and not Step.objects.filter(pk__in=with_agent, agent__isnull=False).exists()
    imported_trace.delete()
    assert not Step.objects.filter(trace_id=imported_trace.pk).exists()
