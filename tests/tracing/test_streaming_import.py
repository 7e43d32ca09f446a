"""Big Who&When files are parsed as a stream; the result must equal the in-memory parse, and failures late in the
stream must still leave nothing behind."""

from __future__ import annotations

import json

import pytest

from tests.conftest import import_now, incoming_bytes, whowhen_files
from tracing.formats import whowhen
from tracing.models import Agent, GoldLabel, JobStatus, Step, Trace

pytestmark = pytest.mark.django_db

AG = next(p for p in whowhen_files() if p.parent.name == "Algorithm-Generated")


def _snapshot(trace: Trace) -> dict:
    return {
        "steps": list(
            Step.objects.filter(trace=trace)
            .order_by("index")
            .values_list("index", "agent__name", "speaker", "kind", "content", "recipient")
        ),
        "agents": sorted(
            Agent.objects.filter(trace=trace).values_list("name", "system_prompt", "step_count")
        ),
        "gold": list(GoldLabel.objects.filter(trace=trace).values_list("agent_name", "step_index", "reason")),
        "header": (trace.question, trace.ground_truth, trace.outcome, trace.external_id, trace.step_count),
    }


def test_a_streamed_file_imports_exactly_like_a_loaded_one(project, make_project, monkeypatch):
    data = AG.read_bytes()
    (loaded,) = import_now(project, incoming_bytes("x.json", data))
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    other = make_project("Streamed")
    (streamed,) = import_now(other, incoming_bytes("x.json", data))
    assert streamed.status == JobStatus.SUCCEEDED, streamed.error
    a, b = Trace.objects.get(pk=loaded.trace_ids[0]), Trace.objects.get(pk=streamed.trace_ids[0])
    assert b.metadata.get("streamed") is True
    assert _snapshot(a) == _snapshot(b)


def test_a_truncated_big_file_fails_and_writes_nothing(project, monkeypatch):
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    data = AG.read_bytes()
    (job,) = import_now(project, incoming_bytes("cut.json", data[: len(data) * 3 // 4]))
    assert job.status == JobStatus.FAILED
    assert "truncated" in job.error
    assert Trace.objects.count() == 0 and Step.objects.count() == 0


def test_a_bad_label_after_the_steps_rolls_the_streamed_trace_back(project, monkeypatch):
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    document = json.loads(AG.read_text())
    document["mistake_step"] = "9999"
    (job,) = import_now(project, incoming_bytes("bad.json", json.dumps(document).encode()))
    assert job.status == JobStatus.FAILED
    assert "outside the history" in job.error
    assert Trace.objects.count() == 0 and Step.objects.count() == 0
