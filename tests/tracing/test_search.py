"""The trace list's search, run once per request: the same traces and first hits as the plain SQL condition, one
pass over the matching steps, and gold badges whose agent names wrap at sensible points. Every search test runs on
traces whose search documents are not written yet (the state right after an import commits), on indexed ones, and
on a mix (tests/tracing/test_search_index.py covers the indexer itself)."""

from __future__ import annotations

import re

import pytest
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.plans import explain
from tracing import search, selectors, services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Step, Trace
from tracing.templatetags.trace_extras import wrappable

pytestmark = pytest.mark.django_db


def _trace(project, name: str, contents: list[str], *, question: str = "q", gold_agent: str = "") -> Trace:
    steps = [
        ParsedStep(speaker=gold_agent or "Planner", agent=gold_agent or "Planner", kind="message", content=c)
        for c in contents
    ]
    gold = [ParsedGold(agent=gold_agent, step=0)] if gold_agent else []
    parsed = ParsedTrace(name=name, source_format="whowhen", question=question, steps=steps, gold=gold)
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


@pytest.fixture(params=["unindexed", "indexed", "mixed"])
def traces(request, project, make_project):
    other = make_project("Other")
    made = _made(project, other)
    if request.param == "indexed":
        services.search_index_pending()
    elif request.param == "mixed":  # documents for some traces only, in small batches
        Trace.objects.filter(name__in=["late", "phrase"]).update(search_pending=False)
        services.search_index_pending(batch_steps=2)
        Trace.objects.filter(name__in=["late", "phrase"]).update(search_pending=True)
    return made


def _made(project, other) -> dict[str, Trace]:
    return {
        "early": _trace(project, "early", ["WebSurfer opened the page", "nothing", "WebSurfer again"]),
        "late": _trace(project, "late", ["a plan", "then", "the WebSurfer clicked"]),
        "named": _trace(project, "websurfer-run", ["no match in here"]),
        "asked": _trace(project, "asked", ["plain"], question="Which excel sheet?"),
        "phrase": _trace(project, "phrase", ["opened the page twice"]),
        "elsewhere": _trace(other, "elsewhere", ["WebSurfer in another project"]),
    }


QUERIES = [
    "websurfer",
    "WebSurfer -clicked",
    '"opened the page"',
    "excel",
    "plan or page",
    "websurfer page",  # both words in one step
    "clicked plan",  # both in trace "late", never in one step: not a match
    "nothing-like-this",
    "the",
]


@pytest.mark.parametrize("q", QUERIES)
def test_a_search_finds_the_same_traces_and_first_hits_as_the_sql_condition(project, traces, q):
    found = search.find(q, project_id=project.pk)
    in_project = Trace.objects.filter(project=project)
    expected_ids = sorted(in_project.filter(search.trace_matches(q)).values_list("pk", flat=True))
    assert found.trace_ids == expected_ids
    assert (
        sorted(in_project.filter(search.trace_matches(q, found)).values_list("pk", flat=True)) == expected_ids
    )
    hits = search.first_hits(
        q, expected_ids
    )  # as the old expression index defined a hit: to_tsvector of the text
    steps = Step.objects.filter(trace_id__in=expected_ids).order_by("index")
    if connection.vendor == "postgresql":
        steps = steps.annotate(fts=SearchVector("content", config=search.CONFIG)).filter(
            fts=SearchQuery(q, config=search.CONFIG, search_type="websearch")
        )
    else:
        steps = steps.filter(content__icontains=q)
    expected_hits: dict[int, int] = {}
    for trace_id, index in steps.values_list("trace_id", "index"):
        expected_hits.setdefault(trace_id, index)
    assert hits == expected_hits


def test_the_first_hit_is_the_earliest_matching_step_and_a_name_match_has_none(project, traces):
    found = search.find("websurfer", project_id=project.pk)
    hits = search.first_hits("websurfer", found.trace_ids)
    assert hits[traces["early"].pk] == 0
    assert hits[traces["late"].pk] == 2
    assert traces["named"].pk in found.trace_ids and traces["named"].pk not in hits
    assert traces["elsewhere"].pk not in found.trace_ids


def test_the_list_searches_once_for_its_count_and_page_and_once_for_the_pages_hits(
    owner_client, project, traces
):
    url = reverse("tracing:trace_list", args=[project.slug])
    with CaptureQueriesContext(connection) as ctx:
        response = owner_client.get(url, {"q": "websurfer"})
    assert [t.name for t in response.context["page"].object_list] == ["websurfer-run", "late", "early"]
    assert response.context["page"].paginator.count == 3
    html = re.sub(r"<[^>]+>", "", response.content.decode())
    assert "match in step 2" in html and "match in step 0" in html
    marker = "websearch_to_tsquery" if connection.vendor == "postgresql" else '"content" LIKE'
    # Reading the query's operators (search._shape: one function call, no table) is not a search.
    step_searches = [q["sql"] for q in ctx.captured_queries if marker in q["sql"] and " FROM " in q["sql"]]
    assert len(step_searches) == 2, (
        step_searches
    )  # the project's once (count and page), the page's first hits


def test_the_api_filters_and_counts_with_one_search(project, traces):
    found = selectors.trace_search(project=project, q="websurfer")
    filters = selectors.TraceFilters(q="websurfer")
    with CaptureQueriesContext(connection) as ctx:
        traces_found = selectors.trace_list(project=project, filters=filters, found=found)
        assert traces_found.count() == 3
        assert [t.name for t in traces_found] == ["websurfer-run", "late", "early"]
    assert not any("tracing_step" in q["sql"] for q in ctx.captured_queries)  # the ids carry the search
    assert selectors.trace_search(project=project, q="") is None


def test_a_plain_search_gives_the_list_its_count_and_a_filtered_one_counts_it(owner_client, project, traces):
    """The traces a search found are the list's when no other filter narrows it: no count query then."""
    url = reverse("tracing:trace_list", args=[project.slug])
    for params, counted in [({"q": "websurfer"}, False), ({"q": "websurfer", "has_gold": "no"}, True)]:
        with CaptureQueriesContext(connection) as ctx:
            response = owner_client.get(url, params)
        assert response.context["page"].paginator.count == 3, params
        counts = [
            q["sql"]
            for q in ctx.captured_queries
            if 'COUNT(*) AS "__count"' in q["sql"] and "ANY" in q["sql"]
        ]
        assert bool(counts) == counted, params
    response = owner_client.get(url, {"q": "websurfer", "format": "langfuse"})
    assert response.context["page"].paginator.count == 0


def test_a_word_in_every_trace_needs_no_name_match(project):
    """The list passes the project's trace count: when the steps matched every trace, the names cannot add one."""
    common = [_trace(project, name, [f"common {name}"]) for name in ("a", "b")]
    for indexed in (False, True):
        if indexed:
            services.search_index_pending()
        with CaptureQueriesContext(connection) as ctx:
            found = search.find("common", project_id=project.pk, traces=2)
        assert found.trace_ids == sorted(t.pk for t in common)
        assert not any("LIKE" in q["sql"] for q in ctx.captured_queries)
    named = _trace(project, "common-run", ["other"])
    found = search.find("common", project_id=project.pk, traces=3)
    assert found.trace_ids == sorted(t.pk for t in [*common, named])


def test_the_name_match_reads_the_trigram_indexes_on_postgresql(project, traces):
    if connection.vendor != "postgresql":
        pytest.skip("the trigram indexes exist on PostgreSQL only")
    # Without the project's filter: a test project's few traces are cheaper to read through its own index.
    sql, params = Trace.objects.filter(search._named("excel")).order_by().values("pk").query.sql_with_params()
    plan = explain(sql, params)
    assert all(f"trace_{key}_trigrams" in plan for key in ("name", "question", "external")), plan
    # The trigram indexes hold indexed traces only (migration 0024); the pending ones come through their own index.
    assert "trace_search_pending" in plan, plan


def test_the_search_reads_stored_documents_and_only_the_pending_steps_text_on_postgresql(project, traces):
    """A word is looked up in the trace documents' GIN index, a phrase in the step documents'; the text of unindexed
    steps is read only for traces still marked pending, found through their partial index -- never by computing
    to_tsvector over every step."""
    if connection.vendor != "postgresql":
        pytest.skip("the GIN indexes exist on PostgreSQL only")
    with CaptureQueriesContext(connection) as ctx:
        search.find("WebSurfer", project_id=project.pk)
    (sql,) = [
        q["sql"] for q in ctx.captured_queries if "websearch_to_tsquery" in q["sql"] and " FROM " in q["sql"]
    ]
    plan = explain(sql)
    assert "trace_search_pending" in plan and "tracesearch_document" in plan
    assert plan.count("to_tsvector") == 1  # the unindexed half only: the indexed half checks stored vectors
    documents, params = search._indexed('"opened the page"').values("pk").query.sql_with_params()
    assert "stepsearch_document" in explain(documents, params)  # a phrase: the step documents


def test_long_agent_names_wrap_between_words_never_inside_one():
    assert wrappable("DataAnalysis_Expert") == "Data<wbr>Analysis_<wbr>Expert"
    assert wrappable("Orchestrator (-> WebSurfer)") == "Orchestrator (-&gt; Web<wbr>Surfer)"
    assert wrappable("assistant") == "assistant"
    assert wrappable(None) == ""
    assert wrappable("<script>x_y</script>") == "&lt;script&gt;x_<wbr>y&lt;/<wbr>script&gt;"


def test_the_gold_badge_of_a_long_agent_name_carries_its_wrap_points(owner_client, project):
    _trace(project, "long", ["x"], gold_agent="HistoricalRecordsVerification_Expert")
    html = owner_client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    assert 'Historical<wbr>Records<wbr>Verification_<wbr>Expert <span class="at">@ 0</span>' in html


def test_the_search_leaves_the_planner_settings_of_the_request_as_they_were(project, traces):
    """The project search turns sequential scans off for its one query (the GIN index is faster than reading every
    document from TOAST); the rest of the request, inside the same transaction, plans as usual."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    search.find("websurfer", project_id=project.pk)
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == "on"
