"""The trace list: full-text search over step content, filters, sorting, URL state, and the same on GET /api/traces."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.urls import reverse

from tests.conftest import SHARED, import_now, incoming_path
from tests.plans import explain
from tracing import services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Trace

pytestmark = pytest.mark.django_db

TRAIL = SHARED / "traces" / "trail" / "gaia" / "3215fc75e81bdb73706a4fb37b66427f.trace.json"
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def _trace(
    project,
    name: str,
    *,
    agents: list[str],
    words: str = "",
    seconds: int = 10,
    start=T0,
    outcome: str = "failed",
    gold: bool = False,
    tokens: int = 0,
) -> Trace:
    steps = [
        ParsedStep(
            speaker=a,
            agent=a,
            kind="message",
            content=f"{a} says {words}",
            started_at=start + dt.timedelta(seconds=i * seconds // len(agents)),
            ended_at=start + dt.timedelta(seconds=(i + 1) * seconds // len(agents)),
            input_tokens=tokens or None,
            output_tokens=tokens or None,
        )
        for i, a in enumerate(agents)
    ]
    parsed = ParsedTrace(
        name=name,
        source_format="whowhen",
        question="q",
        steps=steps,
        outcome=outcome,
        gold=[ParsedGold(agent=agents[0], step=0)] if gold else [],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _names(response) -> list[str]:
    return [t.name for t in response.context["page"].object_list]


@pytest.fixture
def three(project):
    return [
        _trace(
            project,
            "alpha",
            agents=["Planner", "WebSurfer"],
            words="opened the page",
            seconds=30,
            gold=True,
            tokens=5,
        ),
        _trace(
            project,
            "beta",
            agents=["Coder", "Executor"],
            words="ran the tests",
            seconds=5,
            start=T0 + dt.timedelta(days=3),
            outcome="succeeded",
            tokens=500,
        ),
        _trace(
            project,
            "gamma",
            agents=["Planner", "Coder"],
            words="wrote a plan",
            seconds=90,
            start=T0 + dt.timedelta(days=6),
        ),
    ]


def test_search_finds_words_inside_step_content(owner_client, project, three):
    url = reverse("tracing:trace_list", args=[project.slug])
    response = owner_client.get(url, {"q": "websurfer"})
    assert _names(response) == ["alpha"]
    assert "match in step 1" in response.content.decode()
    assert _names(owner_client.get(url, {"q": "tests"})) == ["beta"]
    assert _names(owner_client.get(url, {"q": "nothing-like-this"})) == []


def test_the_search_is_served_by_the_gin_index_on_postgresql(three):
    if connection.vendor != "postgresql":
        pytest.skip("the GIN index exists on PostgreSQL only")
    from tracing.search import trace_matches

    assert "stepsearch_document" in explain(Trace.objects.filter(trace_matches("WebSurfer")).values("pk"))


def test_filters_combine_and_live_in_the_url(owner_client, project, three):
    url = reverse("tracing:trace_list", args=[project.slug])
    assert _names(owner_client.get(url, {"agent": "planner", "ordering": "name"})) == ["alpha", "gamma"]
    assert _names(owner_client.get(url, {"agent": "Planner", "has_gold": "yes"})) == ["alpha"]
    assert _names(owner_client.get(url, {"outcome": "succeeded"})) == ["beta"]
    assert _names(owner_client.get(url, {"from": "2025-03-03", "to": "2025-03-05"})) == ["beta"]
    assert _names(owner_client.get(url, {"from": "2025-03-03", "ordering": "started"})) == ["beta", "gamma"]


def test_columns_sort_both_ways(owner_client, project, three):
    url = reverse("tracing:trace_list", args=[project.slug])
    assert _names(owner_client.get(url, {"ordering": "-duration"})) == ["gamma", "alpha", "beta"]
    assert _names(owner_client.get(url, {"ordering": "duration"})) == ["beta", "alpha", "gamma"]
    assert _names(owner_client.get(url, {"ordering": "-tokens"})) == ["beta", "alpha", "gamma"]
    assert _names(owner_client.get(url, {"ordering": "-started"})) == ["gamma", "beta", "alpha"]
    html = owner_client.get(url, {"ordering": "-duration", "agent": "Coder"}).content.decode()
    # The heading of the sorted column flips the direction and keeps the filters.
    assert 'href="?agent=Coder&amp;ordering=duration" class="active">Duration ↓' in html


def test_rows_show_run_times_tokens_agents_and_gold(owner_client, project, three):
    html = owner_client.get(
        reverse("tracing:trace_list", args=[project.slug]), {"q": "alpha"}
    ).content.decode()
    assert "2025-03-01 12:00" in html and "30.0 s" in html
    text = re.sub(r"<[^>]+>", "", html)  # agent names carry <wbr> wrap points; the badge puts "@ 0" in a span
    assert "Planner, WebSurfer" in text
    assert "Planner @ 0" in text
    assert ">20<" in html  # 2 steps x (5 in + 5 out)


def test_a_bad_filter_is_reported_and_the_others_still_apply(owner_client, project, three):
    response = owner_client.get(
        reverse("tracing:trace_list", args=[project.slug]), {"from": "yesterday", "outcome": "succeeded"}
    )
    assert response.status_code == 200
    assert "from: Enter a valid date." in response.content.decode()
    assert _names(response) == ["beta"]


def test_the_list_costs_the_same_number_of_queries_for_many_traces(
    owner_client, project, django_assert_max_num_queries
):
    for i in range(60):
        _trace(project, f"t{i}", agents=["A", "B", "C"], words="x", gold=i % 2 == 0)
    url = reverse("tracing:trace_list", args=[project.slug])
    # (3 of them: the search's savepoint and planner setting, tracing.search._matching_traces; 2 the live banner's)
    with django_assert_max_num_queries(21):
        response = owner_client.get(url, {"q": "says", "ordering": "-duration"})
    assert len(response.context["page"].object_list) == 50


def test_a_real_trail_trace_gets_duration_and_tokens_in_the_list(owner_client, project):
    (job,) = import_now(project, incoming_path(TRAIL))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    html = owner_client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    assert trace.name in html and "1 m 2" in html


# --- the API -----------------------------------------------------------------------------------------------------


@pytest.fixture
def token(project, owner) -> dict[str, str]:
    return {
        "HTTP_AUTHORIZATION": f"Bearer {services.api_token_create(project=project, name='ci', user=owner)[1]}"
    }


def test_the_api_takes_the_same_filters_and_ordering(client, token, three):
    def names(**params) -> list[str]:
        response = client.get("/api/traces", params, **token)
        assert response.status_code == 200, response.content
        return [t["name"] for t in response.json()["items"]]

    assert names(q="WebSurfer") == ["alpha"]
    assert names(agent="coder", ordering="-duration") == ["gamma", "beta"]
    assert names(has_gold="no", outcome="failed") == ["gamma"]
    assert names(**{"from": "2025-03-02", "to": "2025-03-04"}) == ["beta"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "march"}, "from: Enter a valid date."),
        (
            {"from": "2025-03-05", "to": "2025-03-01"},
            "to: The end of the date range must not be before its start.",
        ),
        ({"ordering": "cost"}, "ordering: Select a valid choice."),
        ({"outcome": "exploded"}, "outcome: Select a valid choice."),
        ({"has_gold": "maybe"}, "has_gold: Select a valid choice."),
        ({"q": "x" * 201}, "q: Ensure this value has at most 200 characters"),
    ],
)
def test_the_api_refuses_bad_filters_with_a_400_naming_them(client, token, params, message):
    response = client.get("/api/traces", params, **token)
    assert response.status_code == 400
    assert message in response.json()["detail"]
