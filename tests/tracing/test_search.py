"""The trace list's search, run once per request: the same traces and first hits as the plain SQL condition, one
pass over the matching steps, and gold badges whose agent names wrap at sensible points."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tracing import search, selectors, services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Trace
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


@pytest.fixture
def traces(project, make_project):
    other = make_project("Other")
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
    assert found.first_hits == search.first_hits(q, expected_ids)


def test_the_first_hit_is_the_earliest_matching_step_and_a_name_match_has_none(project, traces):
    found = search.find("websurfer", project_id=project.pk)
    assert found.first_hits[traces["early"].pk] == 0
    assert found.first_hits[traces["late"].pk] == 2
    assert traces["named"].pk in found.trace_ids and traces["named"].pk not in found.first_hits
    assert traces["elsewhere"].pk not in found.trace_ids


def test_the_list_reads_the_matching_steps_once_for_its_count_page_and_hits(owner_client, project, traces):
    url = reverse("tracing:trace_list", args=[project.slug])
    with CaptureQueriesContext(connection) as ctx:
        response = owner_client.get(url, {"q": "websurfer"})
    assert [t.name for t in response.context["page"].object_list] == ["websurfer-run", "late", "early"]
    assert response.context["page"].paginator.count == 3
    html = re.sub(r"<[^>]+>", "", response.content.decode())
    assert "match in step 2" in html and "match in step 0" in html
    marker = "websearch_to_tsquery" if connection.vendor == "postgresql" else '"content" LIKE'
    step_searches = [q["sql"] for q in ctx.captured_queries if marker in q["sql"]]
    assert len(step_searches) == 1, step_searches  # not three: count, page and first hits


def test_the_api_filters_and_counts_with_one_search(project, traces):
    found = selectors.trace_search(project=project, q="websurfer")
    filters = selectors.TraceFilters(q="websurfer")
    with CaptureQueriesContext(connection) as ctx:
        traces_found = selectors.trace_list(project=project, filters=filters, found=found)
        assert traces_found.count() == 3
        assert [t.name for t in traces_found] == ["websurfer-run", "late", "early"]
    assert not any("tracing_step" in q["sql"] for q in ctx.captured_queries)  # the ids carry the search
    assert selectors.trace_search(project=project, q="") is None


def test_the_search_of_steps_is_served_by_the_gin_index_on_postgresql(project, traces):
    if connection.vendor != "postgresql":
        pytest.skip("the GIN index exists on PostgreSQL only")
    with CaptureQueriesContext(connection) as ctx:
        search.find("WebSurfer", project_id=project.pk)
    (sql,) = [q["sql"] for q in ctx.captured_queries if "websearch_to_tsquery" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "step_content_fts" in plan


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
