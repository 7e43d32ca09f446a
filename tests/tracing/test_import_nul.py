"""NUL characters (PostgreSQL text refuses them) in a run's names, question, answer or system prompts: stored as
U+FFFD, as in step content, and the gold label still finds its agent; the small and the streamed paths agree."""

from __future__ import annotations

import json

import pytest

from tests.conftest import import_now, incoming_bytes
from tracing.models import Agent, GoldLabel, JobStatus, Trace

pytestmark = pytest.mark.django_db

NUL = "\x00"


def _whowhen() -> bytes:
    return json.dumps(
        {
            "question": f"What is{NUL}the answer?",
            "ground_truth": f"4{NUL}2",
            "history": [
                {"role": "human", "content": "start"},
                {"role": f"Plan{NUL}ner", "content": "a plan"},
                {"role": "Coder", "content": f"code{NUL}here"},
            ],
            "mistake_agent": f"Plan{NUL}ner",
            "mistake_step": "1",
            "mistake_reason": "the plan was wrong",
        }
    ).encode()


@pytest.mark.parametrize("streamed", [False, True])
def test_nul_in_names_and_header_is_stored_as_a_replacement_character(project, monkeypatch, streamed):
    if streamed:  # a file above the threshold goes through the streaming reader
        from tracing.formats import whowhen

        monkeypatch.setattr(whowhen, "STREAM_ABOVE", 1)
    (job,) = import_now(project, incoming_bytes("nul.json", _whowhen()))
    assert job.status == JobStatus.SUCCEEDED, job.error
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert trace.question == "What is\ufffdthe answer?"
    assert trace.ground_truth == "4\ufffd2"
    assert "Plan\ufffdner" in set(Agent.objects.filter(trace=trace).values_list("name", flat=True))
    label = GoldLabel.objects.get(trace=trace)
    assert (label.agent_name, label.step_index) == ("Plan\ufffdner", 1)
