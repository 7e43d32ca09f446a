"""The builds of one OTLP request, together: new traces written in one transaction must be exactly what building
them one by one writes (steps, agents, header, totals, span placements), later spans must still append to them
incrementally, and a trace the batch cannot take (known already, or locked by another build) is built singly."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.tracing.test_otlp_incremental import SpanTree, in_batches, parser_steps, request, steps_of
from tracing.models import Agent, OtlpSpan, PendingLabel, Trace
from tracing.services.otlp import otlp_spans_store_protobuf, otlp_trace_rebuild, otlp_traces_rebuild

pytestmark = pytest.mark.django_db

TRACES = [bytes([k]) * 16 for k in range(1, 6)]


def trees() -> list[SpanTree]:
    return [SpanTree(agents=1 + k % 3, calls=2 + k, trace_id=t, seed=k) for k, t in enumerate(TRACES)]


def store(project, spans) -> list[str]:
    touched, rejected = otlp_spans_store_protobuf(project=project, message=request(spans))
    assert rejected == 0
    return sorted(touched)


def everything(project) -> list[tuple]:
    """What a build wrote, per trace in trace id order, without database ids."""
    out = []
    for trace in Trace.objects.filter(project=project).order_by("external_id"):
        agents = [
            (a.name, a.position, a.step_count, a.system_prompt)
            for a in Agent.objects.filter(trace=trace).order_by("position")
        ]
        spans = [
            (s.span_id, bytes(s.path), s.agent, s.step_span, s.service, s.step_count, s.shown_leaf, s.built)
            for s in OtlpSpan.objects.filter(project=project, trace_id=trace.external_id).order_by("span_id")
        ]
        header = (
            trace.name,
            trace.source_format,
            trace.question,
            trace.outcome,
            trace.provenance,
            trace.ordinal,
            trace.upload_id,
            trace.content_hash,
            trace.step_count,
            trace.agent_count,
            trace.metadata,
            trace.totals,
            trace.search_pending,
        )
        out.append((trace.external_id, header, agents, steps_of(trace), spans))
    return out


def test_new_traces_built_together_are_what_building_them_one_by_one_writes(make_project, owner):
    together, single = make_project("Together", {}), make_project("Single", {})
    spans = [item for tree in trees() for item in tree.by_end()]  # children first, as an SDK exports them
    for project in (together, single):
        store(project, spans)
    counter = _Counter()
    with connection.execute_wrapper(counter):
        otlp_traces_rebuild(project_id=together.pk, trace_ids=[t.hex() for t in TRACES])
    for trace_id in TRACES:
        otlp_trace_rebuild(project_id=single.pk, trace_id=trace_id.hex())

    assert everything(together) == everything(single)
    for tree in trees():
        trace = Trace.objects.get(project=together, external_id=tree.trace_id.hex())
        assert steps_of(trace) == parser_steps(tree)
    assert counter.statements <= 20, "five new traces: a fixed number of statements, not ~11 per trace"


def test_spans_that_arrive_after_a_batched_first_build_append_as_usual(project):
    tree = trees()[2]
    halves = in_batches(tree.by_start(), len(tree.spans) // 2 + 1)
    otlp_traces_rebuild(project_id=project.pk, trace_ids=store(project, halves[0]))
    otlp_traces_rebuild(project_id=project.pk, trace_ids=store(project, halves[1]))
    trace = Trace.objects.get(project=project, external_id=tree.trace_id.hex())
    assert steps_of(trace) == parser_steps(tree)
    assert trace.step_count == len(parser_steps(tree)) and trace.metadata["span_count"] == len(tree.spans)


def test_a_known_trace_and_a_locked_trace_are_built_one_by_one(project, monkeypatch):
    import tracing.services.otlp_build_many as many

    known, locked, rootless, fresh = trees()[:4]  # rootless: its root span has not come yet
    store(project, known.by_start()[:3])
    otlp_trace_rebuild(project_id=project.pk, trace_id=known.trace_id.hex())
    store(project, known.by_start()[3:] + locked.by_start() + fresh.by_start())
    store(project, rootless.by_start()[1:])
    built_singly = []
    original, try_locks = many.otlp_trace_build, many._try_locks

    def single(*, project_id, trace_id):
        built_singly.append(trace_id)
        return original(project_id=project_id, trace_id=trace_id)

    def held_elsewhere(project_id, trace_ids):
        # Another build holds ``locked``: the batch's try-lock fails, as it would against a second worker.
        return [t for t in try_locks(project_id, trace_ids) if t != locked.trace_id.hex()]

    monkeypatch.setattr(many, "otlp_trace_build", single)
    monkeypatch.setattr(many, "_try_locks", held_elsewhere)
    otlp_traces_rebuild(
        project_id=project.pk, trace_ids=[t.trace_id.hex() for t in (known, locked, rootless, fresh)]
    )
    assert sorted(built_singly) == sorted(t.trace_id.hex() for t in (known, locked))
    for tree in (known, locked, fresh):
        assert steps_of(Trace.objects.get(project=project, external_id=tree.trace_id.hex())) == parser_steps(
            tree
        )
    # Its sub-agents' spans wait as roots; the batch builds them as a single build would, and the root moves them
    # under it when it comes.
    otlp_traces_rebuild(project_id=project.pk, trace_ids=store(project, rootless.by_start()[:1]))
    assert steps_of(Trace.objects.get(project=project, external_id=rootless.trace_id.hex())) == parser_steps(
        rootless
    )


def test_a_label_file_that_came_first_attaches_to_its_batched_trace(project):
    tree = trees()[0]
    PendingLabel.objects.create(
        project=project,
        target_external_id=tree.trace_id.hex(),
        source_format="whowhen",
        labels=[{"agent": "Agent0", "step": 1, "reason": "wrong figure"}],
    )
    otlp_traces_rebuild(project_id=project.pk, trace_ids=store(project, tree.by_end()))
    trace = Trace.objects.get(project=project, external_id=tree.trace_id.hex())
    gold = trace.gold_labels.get()
    assert (gold.agent_name, gold.step_index, gold.reason) == ("Agent0", 1, "wrong figure")
    assert not PendingLabel.objects.filter(project=project).exists()


class _Counter:
    def __init__(self) -> None:
        self.statements = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __call__(self, execute, sql, params, many, context):
        self.statements += 1
        return execute(sql, params, many, context)


def test_a_new_trace_missing_a_parent_waits_for_it_and_is_then_built_whole(project):
    """An SDK exports children first: a request holding a trace's sub-agents but not its root leaves the trace
    unbuilt (its build would be moved entirely by the root), and the request that brings the root builds it whole,
    as new, in the batch."""
    split, complete = trees()[1], trees()[2]
    order = split.by_end()  # the root ends last
    first = store(project, order[:-1] + complete.by_end())
    waiting = otlp_traces_rebuild(project_id=project.pk, trace_ids=first, wait_for_parents=True)

    assert waiting == [split.trace_id.hex()]
    assert not Trace.objects.filter(project=project, external_id=split.trace_id.hex()).exists()
    assert not OtlpSpan.objects.filter(project=project, trace_id=split.trace_id.hex(), built=True).exists()
    built = Trace.objects.get(project=project, external_id=complete.trace_id.hex())
    assert steps_of(built) == parser_steps(complete)

    again = otlp_traces_rebuild(
        project_id=project.pk, trace_ids=store(project, order[-1:]), wait_for_parents=True
    )
    assert again == []
    trace = Trace.objects.get(project=project, external_id=split.trace_id.hex())
    assert steps_of(trace) == parser_steps(split)
    assert not OtlpSpan.objects.filter(project=project, trace_id=split.trace_id.hex(), built=False).exists()


def test_a_trace_whose_parent_never_comes_is_built_by_the_later_build(project, monkeypatch):
    """The task sends the waiting traces again, ``PARENT_WAIT`` seconds later and without waiting: what has arrived
    by then is built, spans without their parent shown as roots (and moved under it if it comes after all)."""
    from tracing import tasks
    from tracing.services.otlp_build_many import PARENT_WAIT

    tree = trees()[3]
    sent = []

    def capture(task, *args, countdown=None):
        sent.append((task.name, args, countdown))
        return True

    monkeypatch.setattr(tasks.broker, "send", capture)
    tasks.build_otlp_traces_task.run(project.pk, store(project, tree.by_end()[:-1]))
    assert sent == [("tracing.build_otlp_traces", (project.pk, [tree.trace_id.hex()], False), PARENT_WAIT)]
    assert not Trace.objects.filter(project=project, external_id=tree.trace_id.hex()).exists()

    tasks.build_otlp_traces_task.run(*sent[0][1])  # what the worker runs PARENT_WAIT seconds later
    trace = Trace.objects.get(project=project, external_id=tree.trace_id.hex())
    assert trace.metadata["span_count"] == len(tree.spans) - 1
    assert not OtlpSpan.objects.filter(project=project, trace_id=tree.trace_id.hex(), built=False).exists()

    otlp_traces_rebuild(
        project_id=project.pk, trace_ids=store(project, tree.by_end()[-1:]), wait_for_parents=True
    )
    assert steps_of(Trace.objects.get(pk=trace.pk)) == parser_steps(tree)


def test_a_trace_waits_for_its_parent_once_so_a_long_run_is_built_as_it_goes(project):
    """A long run's root ends last, many requests later: the trace waits for the next request once, and from its
    second request on it is built as its spans come (steps under a root that has not come yet move under it)."""
    tree = trees()[4]
    order = tree.by_end()
    parts = in_batches(order[:-1], len(order) // 3)
    assert otlp_traces_rebuild(
        project_id=project.pk, trace_ids=store(project, parts[0]), wait_for_parents=True
    )
    assert not Trace.objects.filter(project=project, external_id=tree.trace_id.hex()).exists()

    for part in parts[1:]:
        assert not otlp_traces_rebuild(
            project_id=project.pk, trace_ids=store(project, part), wait_for_parents=True
        )
        assert not OtlpSpan.objects.filter(
            project=project, trace_id=tree.trace_id.hex(), built=False
        ).exists()
    otlp_traces_rebuild(project_id=project.pk, trace_ids=store(project, order[-1:]), wait_for_parents=True)
    assert steps_of(Trace.objects.get(project=project, external_id=tree.trace_id.hex())) == parser_steps(tree)
