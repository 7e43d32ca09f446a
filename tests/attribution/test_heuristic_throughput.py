"""Heuristic throughput (issue 19): a batch of an offline run reads its traces in a fixed number of queries and
copies its verdicts in one statement, with exactly the verdicts one trace at a time writes; the loop detector's
shortcuts keep its answers. Query counts and answers, not timings (bench/scale.py prints those)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from attribution import services
from attribution.methods.base import StepView, TraceView
from attribution.methods.heuristic import analyse
from attribution.models import AttributionRun, Verdict
from attribution.selectors import trace_views
from attribution.services.runs import _insert_verdicts
from tests.conftest import import_now, incoming_path, whowhen_files
from tracing.models import Agent, JobStatus, Step, Trace

pytestmark = pytest.mark.django_db

# What a verdict says; its id, run and time differ between two runs of the same traces.
ANSWER_FIELDS = (
    "method",
    "status",
    "agent_name",
    "step_index",
    "confidence",
    "reason",
    "category",
    "scores",
    "details",
    "calls",
    "input_tokens",
    "output_tokens",
    "cost",
    "error",
)


def _import_mixed(project, n: int) -> list[Trace]:
    """``n`` Who&When runs taken from both subsets (Magentic-One's with system prompts, AG2's without)."""
    files = whowhen_files()
    hand = [f for f in files if f.parent.name == "Hand-Crafted"]
    algo = [f for f in files if f.parent.name != "Hand-Crafted"]
    picked = [p for pair in zip(hand, algo) for p in pair][:n]
    for path in picked:
        (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
        assert job.status == JobStatus.SUCCEEDED, job.error
    return list(Trace.objects.filter(project=project).order_by("pk"))


def test_views_read_together_are_the_views_read_one_by_one(project):
    traces = _import_mixed(project, 6)
    together = trace_views(traces)
    for trace in traces:
        alone = trace_views([trace])[trace.pk]
        assert together[trace.pk] == alone
        assert len(alone.steps) == Step.objects.filter(trace=trace).count() > 0
        assert alone.system_prompts == {
            a.name: a.system_prompt for a in Agent.objects.filter(trace=trace).exclude(system_prompt="")
        }
    assert any(view.system_prompts for view in together.values())  # both kinds of run were read


def test_a_batch_reads_and_writes_in_the_same_number_of_queries_whatever_its_size(project):
    traces = _import_mixed(project, 8)
    ids = [t.pk for t in traces]
    counts = []
    services.run_execute_inline(  # warms the per-process caches (the shared system prompts' tokens)
        run=services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    )
    for batch in (ids[:2], ids[2:]):
        run = services.run_create(project=project, method="heuristic", trace_ids=batch, enqueue=False)
        services.run_claim(run_id=run.pk)
        with CaptureQueriesContext(connection) as queries:
            assert services.run_traces(run_id=run.pk, trace_ids=batch) == len(batch)
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]


def test_a_batched_verdict_is_the_verdict_written_one_trace_at_a_time(project):
    ids = [t.pk for t in _import_mixed(project, 6)]
    batched = services.run_execute_inline(
        run=services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    )
    single = services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    services.run_claim(run_id=single.pk)
    for trace_id in ids:
        services.run_trace(run_id=single.pk, trace_id=trace_id)
    assert batched.status == "succeeded" and batched.done == len(ids)

    def answers(run: AttributionRun) -> dict:
        return {v["trace_id"]: v for v in Verdict.objects.filter(run=run).values("trace_id", *ANSWER_FIELDS)}

    assert answers(batched) == answers(single)
    assert all(v.created_at is not None for v in Verdict.objects.filter(run=batched))


def test_copying_a_verdict_a_second_time_raises_the_integrity_error_bulk_create_would(project):
    ids = [t.pk for t in _import_mixed(project, 2)]
    run = services.run_execute_inline(
        run=services.run_create(project=project, method="heuristic", trace_ids=ids, enqueue=False)
    )
    again = [Verdict(run=run, trace_id=ids[0], method="heuristic", agent_name="x", step_index=0)]
    with pytest.raises(IntegrityError), transaction.atomic():
        _insert_verdicts(again)
    assert Verdict.objects.filter(run=run).count() == 2


def _repeating(words: int) -> TraceView:
    """An agent that says the same ``words``-word message twice, with another agent between."""
    text = " ".join(f"w{i}" for i in range(words))
    steps = (
        StepView(index=0, agent="user", kind="human", content="Solve it."),
        StepView(index=1, agent="Expert", kind="message", content=text),
        StepView(index=2, agent="Checker", kind="message", content="Looks fine to me, go on."),
        StepView(index=3, agent="Expert", kind="message", content=text.upper() + "!"),
    )
    return TraceView(
        trace_id=0, name="", question="Solve it.", ground_truth="", outcome="failed", steps=steps, agents=()
    )


@pytest.mark.parametrize(("words", "fires"), [(21, False), (22, True), (300, True)])
def test_a_message_repeated_word_for_word_is_a_loop_from_twenty_word_triples(words, fires):
    # 22 words make 20 triples, the fewest the detector compares; 21 make 19.
    loops = [s for s in analyse(_repeating(words)).signals if s.signal == "loop"]
    assert [(s.step, "repeats step 1" in s.text) for s in loops] == ([(3, True)] if fires else [])


def test_a_batch_of_long_traces_is_read_a_few_traces_at_a_time(monkeypatch):
    """``run_traces`` reads a batch's views in groups bounded by their step count, in the batch's order."""
    from types import SimpleNamespace

    from attribution.services import runs

    read: list[list[int]] = []
    monkeypatch.setattr(runs, "VIEW_STEPS_PER_READ", 100)
    monkeypatch.setattr(
        runs, "trace_views", lambda group: read.append([t.pk for t in group]) or {t.pk: t.pk for t in group}
    )
    traces = [SimpleNamespace(pk=k, step_count=n) for k, n in enumerate([30, 30, 30, 30, 250, 10, 95])]
    pairs = list(runs._views_in_groups(traces))
    assert [t.pk for t, _ in pairs] == [0, 1, 2, 3, 4, 5, 6] and all(t.pk == v for t, v in pairs)
    assert read == [[0, 1, 2], [3], [4], [5], [6]]
