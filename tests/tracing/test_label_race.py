"""A label file and the trace it labels, imported at the same moment by two jobs (two Celery workers, each with one file of an
upload): whichever commits second must see what the first wrote. Without a lock each looked for
the other before the other had committed -- the label file found no trace and waited as a ``PendingLabel``, the trace
found no waiting label -- and the labels waited for ever."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from tracing.formats import ParsedGold, ParsedLabels, ParsedStep, ParsedTrace
from tracing.models import GoldLabel, PendingLabel, Trace
from tracing.services import labels_attach, trace_create_from_parsed
from tracing.services.writer import trace_prepare, traces_create_prepared

pytestmark = pytest.mark.django_db(transaction=True)

EXTERNAL_ID = "traj-race"


def _parsed() -> ParsedTrace:
    steps = [
        ParsedStep(speaker=s, agent=s, kind="message", content=f"turn {i}")
        for i, s in enumerate(["Orchestrator", "WebSurfer", "Orchestrator", "WebSurfer"])
    ]
    return ParsedTrace(name="run", source_format="agentrx-magentic", steps=steps, external_id=EXTERNAL_ID)


def write_one(project) -> None:
    trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=_parsed())


def write_batch(project) -> None:  # the bulk import's path: a batch of prepared traces
    traces_create_prepared(project=project, upload=None, items=[(0, trace_prepare(_parsed()))])


def attach(project) -> None:
    labels = ParsedLabels(
        target_external_id=EXTERNAL_ID,
        labels=[ParsedGold(agent="WebSurfer", step=3)],
        source_format="agentrx-labels",
    )
    labels_attach(project=project, labels=labels, job_id=None)


def _in_thread(
    work: Callable[[], None],
    errors: list,
    *,
    hold: threading.Event | None = None,
    done: threading.Event | None = None,
) -> threading.Thread:
    """``work`` in a transaction on a connection of its own; with ``hold``, the transaction stays open (its writes
    unseen by others) after ``done`` is set, until ``hold`` is."""

    def run() -> None:
        try:
            with transaction.atomic():
                work()
                if done is not None:
                    done.set()
                if hold is not None:
                    hold.wait(10)
        except Exception as exc:  # noqa: BLE001 -- reported by the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("writer", [write_one, write_batch], ids=["one-trace", "batch"])
@pytest.mark.parametrize("first", ["trace", "labels"])
def test_a_label_file_and_its_trace_committing_at_once_meet(project, writer, first):
    errors: list[Exception] = []
    wrote, hold = threading.Event(), threading.Event()
    trace_side, labels_side = (lambda: writer(project)), (lambda: attach(project))
    early, late = (trace_side, labels_side) if first == "trace" else (labels_side, trace_side)
    a = _in_thread(early, errors, hold=hold, done=wrote)
    assert wrote.wait(10), errors
    b = _in_thread(late, errors)
    b.join(0.5)  # the late side looks for the early side's rows while they are still uncommitted
    hold.set()
    a.join(10)
    b.join(10)
    assert not errors and not a.is_alive() and not b.is_alive()
    trace = Trace.objects.get(project=project, external_id=EXTERNAL_ID)
    gold = GoldLabel.objects.get(trace=trace)
    assert (gold.agent_name, gold.step_index) == ("WebSurfer", 3)
    assert not PendingLabel.objects.filter(project=project).exists()
