"""The search indexer (tracing.services.search_index): documents are written after the steps commit, one per step,
in batches, under row locks, with their lexemes in the trace's document; searches are exact before, during and
after; documents follow renumbered steps and go with replaced ones; a real worker indexes an upload."""

from __future__ import annotations

import re
import threading

import pytest
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections, transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import sample_file, wait_for, wait_for_jobs
from tests.tracing.test_otlp_incremental import SpanTree, early_leaf, send
from tracing import search, services
from tracing.formats import ParsedStep, ParsedTrace
from tracing.models import IngestJob, Step, StepSearch, Trace, TraceSearch
from tracing.services import search_index
from tracing.services.search_index import QUEUED_KEY

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="search documents exist on PostgreSQL only"
)


WORD = re.compile(r"\b[A-Za-z]{3,}\b")


def _trace(project, name: str, contents: list[str]) -> Trace:
    steps = [ParsedStep(speaker="Planner", agent="Planner", kind="message", content=c) for c in contents]
    parsed = ParsedTrace(name=name, source_format="whowhen", question="q", steps=steps)
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _lexemes(sql: str, trace: Trace) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(sql, [trace.pk])
        return {lexeme for (lexeme,) in cursor.fetchall()}


def _trace_document_exact(trace: Trace) -> bool:
    """The trace's document (TraceSearch) holds exactly the lexemes of its step documents, and says so."""
    steps = _lexemes(
        "SELECT u.lexeme FROM tracing_stepsearch, unnest(document) AS u WHERE trace_id = %s", trace
    )
    row = TraceSearch.objects.filter(trace=trace).first()
    if row is None:
        return not steps
    return row.exact and steps == _lexemes(
        "SELECT u.lexeme FROM tracing_tracesearch, unnest(document) AS u WHERE trace_id = %s", trace
    )


def _indexed_exactly(trace: Trace) -> bool:
    """One document per step, the trace's document their lexemes, the trace no longer marked, and its watermark
    at its last step."""
    trace.refresh_from_db()
    steps = set(Step.objects.filter(trace=trace).values_list("pk", flat=True))
    documents = set(StepSearch.objects.filter(trace=trace).values_list("step_id", flat=True))
    last = Step.objects.filter(trace=trace).aggregate(last=Max("pk"))["last"] or 0
    return (
        not trace.search_pending
        and documents == steps
        and trace.search_through == last
        and _trace_document_exact(trace)
    )


@pytest.mark.django_db
def test_new_traces_start_marked_and_the_indexer_writes_one_document_per_step(project):
    traces = [_trace(project, f"t{i}", [f"word{i} alpha", "beta gamma", f"delta{i}"]) for i in range(5)]
    assert all(t.search_pending for t in Trace.objects.filter(pk__in=[t.pk for t in traces]))
    assert StepSearch.objects.count() == 0
    # before the indexer: read from the steps' text
    assert search.find("word3", project_id=project.pk).trace_ids == [traces[3].pk]
    assert search.first_hits("word3", [t.pk for t in traces]) == {traces[3].pk: 0}
    assert services.search_index_pending(batch_steps=4, batch_traces=2) == 15  # batches cut inside traces
    assert all(_indexed_exactly(t) for t in traces)
    # after: from the documents
    assert search.find("word3", project_id=project.pk).trace_ids == [traces[3].pk]
    assert search.first_hits("word3", [t.pk for t in traces]) == {traces[3].pk: 0}
    assert services.search_index_pending() == 0  # nothing left: a second run is free


@pytest.mark.django_db
def test_the_indexer_gives_way_to_a_trace_build_waiting_in_the_queue(project, monkeypatch):
    """The indexer looks for a build waiting (an OTLP build's mark): the traces users wait to see come first. One
    waiting as it starts gets a small batch only; one that comes during a run stops it after its batch. Either way
    the next run is queued a few seconds later."""
    from tracing.models import OtlpPendingBuild
    from tracing.services import search_index

    traces = [_trace(project, f"t{i}", [f"word{i} alpha", "beta gamma", f"delta{i}"]) for i in range(4)]
    monkeypatch.setattr(search_index, "BATCH_STEPS", 3)
    monkeypatch.setattr(search_index, "GIVING_WAY_STEPS", 2)
    OtlpPendingBuild.objects.create(project=project, trace_id="ab" * 16, queued_at=timezone.now())
    cache.delete(QUEUED_KEY)
    assert services.search_index_run() == 2  # waiting as it starts: a small batch, then the build's turn
    assert StepSearch.objects.count() == 2
    assert cache.get(QUEUED_KEY), "the next run is queued"

    OtlpPendingBuild.objects.all().delete()  # the build started
    cache.delete(QUEUED_KEY)
    batches = []
    real_batch = search_index._index_batch

    def batch_then_a_build_arrives(*args):
        batches.append(args)
        if len(batches) == 1:
            OtlpPendingBuild.objects.create(project=project, trace_id="cd" * 16, queued_at=timezone.now())
        return real_batch(*args)

    monkeypatch.setattr(search_index, "_index_batch", batch_then_a_build_arrives)
    assert services.search_index_run() == 3  # one whole batch, then the build that came meanwhile
    assert cache.get(QUEUED_KEY)

    OtlpPendingBuild.objects.all().delete()
    cache.delete(QUEUED_KEY)
    assert services.search_index_run() == 7
    assert all(_indexed_exactly(t) for t in traces)


@pytest.mark.django_db
def test_steps_added_to_a_known_trace_are_found_before_and_after_they_are_indexed(project):
    tree = SpanTree(agents=2, calls=3, seed=4)
    spans = tree.by_start()
    trace = send(project, spans[:5])
    services.search_index_pending()
    assert _indexed_exactly(trace)
    trace = send(project, spans[5:])  # an OTLP build appends steps: the trace is marked again
    trace.refresh_from_db()
    assert trace.search_pending
    new_steps = Step.objects.filter(trace=trace, pk__gt=trace.search_through)
    assert new_steps.exists()
    word = "agent"  # in the appended agents' spans
    before = search.find(word, project_id=project.pk).trace_ids, search.first_hits(word, [trace.pk])
    assert before[1]
    services.search_index_pending()
    assert _indexed_exactly(trace)
    assert (search.find(word, project_id=project.pk).trace_ids, search.first_hits(word, [trace.pk])) == before


@pytest.mark.django_db
def test_a_renumbered_step_keeps_its_document_and_the_first_hit_follows_it(project):
    tree = SpanTree(agents=3, calls=4, seed=5)
    spans = tree.by_start()
    late = early_leaf(spans)
    trace = send(project, [s for s in spans if s is not late])
    services.search_index_pending()
    documents = set(StepSearch.objects.filter(trace=trace).values_list("step_id", flat=True))
    trace = send(project, [late])  # sorts before existing steps: they move, their rows stay
    assert documents <= set(Step.objects.filter(trace=trace).values_list("pk", flat=True))
    services.search_index_pending()
    assert _indexed_exactly(trace)
    words = {
        w
        for text in Step.objects.filter(trace=trace).values_list("content", flat=True)
        for w in WORD.findall(text)
    }
    assert words
    for word in sorted(
        words
    ):  # the hit as the old expression index defined it: to_tsvector of the step's text
        text_hits = (
            Step.objects.filter(trace=trace)
            .annotate(fts=SearchVector("content", config=search.CONFIG))
            .filter(fts=SearchQuery(word, config=search.CONFIG, search_type="websearch"))
            .order_by("index")
            .values_list("index", flat=True)
        )
        expected = {trace.pk: text_hits[0]} if text_hits else {}
        assert search.first_hits(word, [trace.pk]) == expected, word


@pytest.mark.django_db
def test_a_replaced_trace_drops_its_old_documents(project):
    trace = _trace(project, "t", ["old words here", "more old words"])
    services.search_index_pending()
    parsed = ParsedTrace(
        name="t",
        source_format="whowhen",
        question="q",
        steps=[ParsedStep(speaker="P", agent="P", kind="message", content="brand new text")],
    )
    services.trace_replace_from_parsed(trace=trace, parsed=parsed)
    trace.refresh_from_db()
    assert trace.search_pending  # writing steps marks the trace, whoever writes them
    assert not StepSearch.objects.filter(trace=trace).exists()
    assert search.find("old", project_id=project.pk).trace_ids == []
    assert search.first_hits("brand", [trace.pk]) == {trace.pk: 0}
    services.search_index_pending()
    assert _indexed_exactly(trace)
    assert search.find("old", project_id=project.pk).trace_ids == []
    assert search.first_hits("brand", [trace.pk]) == {trace.pk: 0}


def _with_output(span: trace_pb2.Span, text: str) -> trace_pb2.Span:
    changed = trace_pb2.Span()
    changed.CopyFrom(span)
    changed.attributes.append(
        common_pb2.KeyValue(key="output.value", value=common_pb2.AnyValue(string_value=text))
    )
    return changed


@pytest.mark.django_db
def test_a_trace_document_that_lost_a_step_is_checked_on_its_steps_until_rebuilt(project):
    """An OTLP build replacing a span's step deletes the step's document: the trace's document may then hold a
    word no step has, so it is marked inexact and a search checks the trace's steps, until the indexer rebuilds it."""
    tree = SpanTree(agents=2, calls=3, seed=3)
    spans = tree.by_start()
    service, agent_span = spans[1]
    spans[1] = (service, _with_output(agent_span, "zebracorn answer"))
    trace = send(project, spans)
    services.search_index_pending()
    assert _indexed_exactly(trace)
    assert search.find("zebracorn", project_id=project.pk).trace_ids == [trace.pk]
    send(project, [(service, _with_output(agent_span, "agent 0 quagga answer"))])  # replaces the step
    assert TraceSearch.objects.get(trace=trace).exact is False
    assert "zebracorn" in _lexemes(
        "SELECT u.lexeme FROM tracing_tracesearch, unnest(document) AS u WHERE trace_id = %s", trace
    )
    for q in ["zebracorn", "zebracorn or nothing", "zebracorn answer"]:
        assert search.find(q, project_id=project.pk).trace_ids == [], q
    assert search.find("quagga", project_id=project.pk).trace_ids == [trace.pk]  # not indexed yet: its text
    assert search.find("answer", project_id=project.pk).trace_ids == [trace.pk]
    services.search_index_pending()
    assert _indexed_exactly(trace)  # rebuilt: exact again, without the lost word
    assert search.find("zebracorn", project_id=project.pk).trace_ids == []
    assert search.find("quagga", project_id=project.pk).trace_ids == [trace.pk]


@pytest.mark.django_db
def test_a_trace_whose_lexemes_outgrow_a_document_is_searched_through_its_steps(project, monkeypatch):
    monkeypatch.setattr(search_index, "TRACE_LEXEME_BYTES", 12)
    small = _trace(project, "small", ["tiny"])
    large = _trace(project, "large", ["alpha beta", "gamma delta"])
    services.search_index_pending(batch_steps=1)  # the large trace grows past the limit in its second batch
    rows = {row.trace_id: row for row in TraceSearch.objects.all()}
    assert rows[small.pk].exact and rows[small.pk].document is not None
    assert not rows[large.pk].exact and rows[large.pk].document is None
    for q, expected in [
        ("gamma", [large.pk]),
        ("tiny", [small.pk]),
        ("alpha delta", []),
        ("alpha beta", [large.pk]),
    ]:
        assert search.find(q, project_id=project.pk).trace_ids == expected, q


@pytest.mark.django_db(transaction=True)
def test_a_trace_another_transaction_holds_is_left_for_the_next_run(project):
    held, other = _trace(project, "held", ["aaa"]), _trace(project, "other", ["bbb"])
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        """A build adding steps to "held": it marks the trace and holds its row until it commits."""
        try:
            with transaction.atomic():
                Trace.objects.select_for_update().filter(pk=held.pk).update(search_pending=True)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert locked.wait(30)
        services.search_index_pending()
        assert thread.is_alive()  # the writer still holds "held": the indexer skipped it instead of waiting
        # (a session's live worker may have indexed "other" itself, on the commit of its creation)
        assert wait_for(lambda: _indexed_exactly(other), timeout=30)
    finally:
        release.set()
        thread.join(30)
    held.refresh_from_db()
    assert held.search_pending or _indexed_exactly(held)  # the writer's mark survived the indexer's run
    services.search_index_pending()
    assert wait_for(lambda: _indexed_exactly(held), timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_locked_table_makes_the_indexer_give_up_its_batch_not_wait(project):
    """A migration or a TRUNCATE holding the step table: the run returns at once, rolled back, the trace still
    marked (a TRUNCATE and a waiting indexer used to deadlock)."""
    trace = _trace(project, "t", ["some text"])
    locked, release = threading.Event(), threading.Event()

    def migration() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("LOCK TABLE tracing_step IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=migration)
    thread.start()
    try:
        assert locked.wait(30)
        assert services.search_index_run() == 0
        assert thread.is_alive()  # it did not wait for the lock to go
        trace.refresh_from_db()
        assert trace.search_pending or _indexed_exactly(
            trace
        )  # (or a live worker indexed it before the lock)
    finally:
        release.set()
        thread.join(30)
    services.search_index_run()
    assert wait_for(lambda: _indexed_exactly(trace), timeout=30)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_indexes_an_upload_after_it_commits(celery_worker, owner_client, project):
    cache.delete(QUEUED_KEY)  # a request left waiting by an earlier test's run without a worker
    good = sample_file("Algorithm-Generated")
    response = owner_client.post(
        reverse("tracing:upload", args=[project.slug]),
        {"files": [SimpleUploadedFile(good.name, good.read_bytes())]},
    )
    assert response.status_code == 302
    (job,) = wait_for_jobs(list(IngestJob.objects.filter(project=project)))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert wait_for(lambda: _indexed_exactly(trace))
    word = Step.objects.filter(trace=trace).exclude(content="").first().content.split()[0]
    assert trace.pk in search.find(word, project_id=project.pk).trace_ids
