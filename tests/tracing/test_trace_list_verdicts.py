"""The trace list's "latest verdict" column and its filters (has a verdict, verdict ≠ gold), on the page and on
GET /api/traces. The verdicts come from attribution through tracing.extensions: tracing never imports attribution."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from attribution.models import AttributionRun, Verdict
from tracing import services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import GoldLabel, Trace

pytestmark = pytest.mark.django_db


def _trace(project, name: str, *, gold: tuple[str, int] | None = None) -> Trace:
    agents = ["Planner", "WebSurfer", "Coder"]
    steps = [ParsedStep(speaker=a, agent=a, kind="message", content=f"{a} speaks") for a in agents]
    parsed = ParsedTrace(
        name=name,
        source_format="whowhen",
        question="q",
        steps=steps,
        outcome="failed",
        gold=[ParsedGold(agent=gold[0], step=gold[1])] if gold else [],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _verdict(
    trace: Trace,
    agent: str,
    step: int | None,
    *,
    method: str = "heuristic",
    status: str = "ok",
    scores: list[float] | None = None,
) -> Verdict:
    run = AttributionRun.objects.create(
        project=trace.project, method=method, trace_ids=[trace.pk], status="succeeded"
    )
    return Verdict.objects.create(
        run=run,
        trace=trace,
        method=method,
        agent_name=agent,
        step_index=step,
        status=status,
        scores=scores or [],
    )


@pytest.fixture
def four(project):
    right = _trace(project, "right", gold=("WebSurfer", 1))
    _verdict(right, "Planner", 0, method="all_at_once")  # older, replaced by the next one
    _verdict(right, "WebSurfer", 1)
    wrong_step = _trace(project, "wrong-step", gold=("WebSurfer", 1))
    _verdict(wrong_step, "WebSurfer", 2, method="step_by_step")
    _verdict(wrong_step, "", None, status="failed")  # a failed call is never the latest verdict
    unlabelled = _trace(project, "unlabelled")
    _verdict(unlabelled, "Coder", 2)
    _trace(project, "untouched", gold=("Coder", 2))
    return project


def _names(response) -> list[str]:
    assert response.status_code == 200
    return sorted(t.name for t in response.context["page"].object_list)


def test_the_list_shows_the_latest_answered_verdict_with_its_method(owner_client, four):
    html = owner_client.get(reverse("tracing:trace_list", args=[four.slug])).content.decode()
    assert (
        '<th class="sortable col-verdict" aria-sort="none"><a href="?ordering=verdict">Latest verdict</a></th>'
        in html
    )
    right = Trace.objects.get(name="right")
    row = html[html.index(f'href="/traces/{right.pk}/"') :]
    row = row[: row.index("</tr>")]
    assert "WebSurfer @ 1</a>" in row and '<span class="tag">heuristic</span>' in row
    assert 'class="verdict agrees"' in row and "all_at_once" not in row
    wrong = Trace.objects.get(name="wrong-step")
    row = html[html.index(f'href="/traces/{wrong.pk}/"') :]
    row = row[: row.index("</tr>")]
    assert "WebSurfer @ 2</a>" in row and '<span class="tag">step_by_step</span>' in row
    assert 'class="verdict differs"' in row and "the gold label says WebSurfer at step 1" in row
    assert f'href="/traces/{wrong.pk}/?step=2#step-2"' in row


def test_it_filters_on_having_a_verdict_and_on_verdicts_that_differ_from_gold(owner_client, four):
    url = reverse("tracing:trace_list", args=[four.slug])
    assert _names(owner_client.get(url, {"has_verdict": "yes"})) == ["right", "unlabelled", "wrong-step"]
    assert _names(owner_client.get(url, {"has_verdict": "no"})) == ["untouched"]
    assert _names(owner_client.get(url, {"verdict_vs_gold": "differs"})) == ["wrong-step"]
    assert _names(owner_client.get(url, {"verdict_vs_gold": "agrees"})) == ["right"]
    # The URL keeps the filters: the select shows the chosen value when the page is opened from a bookmark.
    html = owner_client.get(url, {"verdict_vs_gold": "differs"}).content.decode()
    assert '<option value="differs" selected>' in html


def test_a_differing_agent_or_a_missing_step_counts_as_differing(owner_client, project):
    _verdict(_trace(project, "agent-off", gold=("WebSurfer", 1)), "Planner", 1)
    _verdict(_trace(project, "no-step", gold=("WebSurfer", 1)), "WebSurfer", None)  # blames an agent, no step
    url = reverse("tracing:trace_list", args=[project.slug])
    assert _names(owner_client.get(url, {"verdict_vs_gold": "differs"})) == ["agent-off", "no-step"]
    assert _names(owner_client.get(url, {"verdict_vs_gold": "agrees"})) == []


def test_the_adjudicated_gold_label_is_the_one_compared(owner_client, project):
    trace = _trace(project, "adjudicated", gold=("Planner", 0))
    GoldLabel.objects.create(trace=trace, agent_name="WebSurfer", step_index=1, source="adjudicated")
    _verdict(trace, "WebSurfer", 1)
    url = reverse("tracing:trace_list", args=[project.slug])
    assert _names(owner_client.get(url, {"verdict_vs_gold": "agrees"})) == ["adjudicated"]
    assert _names(owner_client.get(url, {"verdict_vs_gold": "differs"})) == []


def test_a_bad_verdict_filter_is_reported_on_the_page(owner_client, four):
    response = owner_client.get(reverse("tracing:trace_list", args=[four.slug]), {"has_verdict": "perhaps"})
    assert "has_verdict: Select a valid choice." in response.content.decode()
    assert len(_names(response)) == 4  # the bad filter is left out


def test_a_page_of_fifty_costs_the_same_queries_as_a_page_of_five(owner_client, project):
    url = reverse("tracing:trace_list", args=[project.slug])

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = owner_client.get(url, {"verdict_vs_gold": "differs"})
        assert response.status_code == 200
        return len(ctx.captured_queries)

    for i in range(5):
        _verdict(_trace(project, f"a{i}", gold=("Coder", 2)), "Planner", 0)
    few = queries()
    for i in range(60):
        _verdict(_trace(project, f"b{i}", gold=("Coder", 2)), "Planner", 0)
    assert queries() == few


def _ordered(response) -> list[str]:
    assert response.status_code == 200
    return [t.name for t in response.context["page"].object_list]


def test_the_verdict_column_sorts_by_agent_then_step_with_traces_without_a_verdict_last(
    owner_client, project
):
    _verdict(_trace(project, "web-2"), "WebSurfer", 2)
    _verdict(_trace(project, "coder-1"), "Coder", 1, method="all_at_once")
    _verdict(_trace(project, "web-1"), "WebSurfer", 1)
    _verdict(_trace(project, "web-none"), "WebSurfer", None)  # no step: after the agent's steps, both ways
    _trace(project, "unjudged")
    failed = _trace(project, "failed-only")
    _verdict(failed, "Aardvark", 0, status="failed")  # a failed call is no verdict: it must not sort first
    url = reverse("tracing:trace_list", args=[project.slug])
    assert _ordered(owner_client.get(url, {"ordering": "verdict"}))[:4] == [
        "coder-1",
        "web-1",
        "web-2",
        "web-none",
    ]
    assert _ordered(owner_client.get(url, {"ordering": "-verdict"}))[:4] == [
        "web-2",
        "web-1",
        "web-none",
        "coder-1",
    ]
    for ordering in ("verdict", "-verdict"):  # NULLs last both ways
        assert set(_ordered(owner_client.get(url, {"ordering": ordering}))[4:]) == {"unjudged", "failed-only"}
    html = owner_client.get(url, {"ordering": "verdict", "has_verdict": "yes"}).content.decode()
    # The heading shows the sort and flips it, keeping the filters; the Sort select offers it too.
    assert 'href="?has_verdict=yes&amp;ordering=-verdict" class="active">Latest verdict ↑' in html
    assert '<option value="-verdict">Verdict descending</option>' in html


def test_sorting_by_verdict_and_filtering_on_it_together(owner_client, four):
    url = reverse("tracing:trace_list", args=[four.slug])
    response = owner_client.get(
        url, {"ordering": "-verdict", "verdict_vs_gold": "differs", "has_verdict": "yes"}
    )
    assert _ordered(response) == ["wrong-step"]
    assert _ordered(owner_client.get(url, {"ordering": "verdict"})) == [
        "unlabelled",
        "right",
        "wrong-step",
        "untouched",
    ]


def test_sorting_by_verdict_costs_the_same_queries_for_any_page(owner_client, project):
    url = reverse("tracing:trace_list", args=[project.slug])

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert owner_client.get(url, {"ordering": "-verdict"}).status_code == 200
        return len(ctx.captured_queries)

    for i in range(3):
        _verdict(_trace(project, f"a{i}", gold=("Coder", 2)), "Planner", i)
    few = queries()
    for i in range(60):
        _verdict(_trace(project, f"b{i}"), "Coder", i)
    assert queries() == few


@pytest.fixture
def token(project, owner) -> dict[str, str]:
    return {
        "HTTP_AUTHORIZATION": f"Bearer {services.api_token_create(project=project, name='ci', user=owner)[1]}"
    }


def test_the_api_takes_the_verdict_filters(client, token, four):
    def names(**params) -> list[str]:
        response = client.get("/api/traces", params, **token)
        assert response.status_code == 200, response.content
        return sorted(t["name"] for t in response.json()["items"])

    assert names(has_verdict="no") == ["untouched"]
    assert names(verdict_vs_gold="differs") == ["wrong-step"]
    assert names(has_verdict="yes", verdict_vs_gold="agrees") == ["right"]


def test_the_api_sorts_by_verdict(client, token, four):
    def names(ordering: str) -> list[str]:
        response = client.get("/api/traces", {"ordering": ordering}, **token)
        assert response.status_code == 200, response.content
        return [t["name"] for t in response.json()["items"]]

    assert names("verdict") == ["unlabelled", "right", "wrong-step", "untouched"]
    assert names("-verdict") == ["wrong-step", "right", "unlabelled", "untouched"]


def test_each_api_item_carries_its_latest_verdict(client, token, four):
    response = client.get("/api/traces", {"ordering": "name"}, **token)
    assert response.status_code == 200, response.content
    items = {t["name"]: t for t in response.json()["items"]}
    right = Trace.objects.get(name="right")
    latest = Verdict.objects.get(trace=right, method="heuristic")
    assert items["right"]["verdict"] == {
        "agent": "WebSurfer",
        "step": 1,
        "method": "heuristic",
        "run": latest.run_id,
        "confidence": None,
        "created_at": items["right"]["verdict"]["created_at"],
        "correct": True,
    }
    assert (
        items["wrong-step"]["verdict"]["step"],
        items["wrong-step"]["verdict"]["method"],
        items["wrong-step"]["verdict"]["correct"],
    ) == (2, "step_by_step", False)
    assert items["unlabelled"]["verdict"]["correct"] is None  # no gold label to be right or wrong against
    assert items["untouched"]["verdict"] is None


def test_the_api_reads_the_verdicts_of_a_page_in_one_query(client, token, project):
    def queries(limit: int) -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get("/api/traces", {"limit": limit}, **token)
        assert response.status_code == 200 and len(response.json()["items"]) == limit
        return len(ctx.captured_queries)

    for i in range(40):
        _verdict(_trace(project, f"t{i}", gold=("Coder", 2)), "Coder", i % 3)
    queries(1)  # the token's last use is written at most once a minute: the first call pays for it
    assert queries(40) == queries(2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"has_verdict": "maybe"}, "has_verdict: Select a valid choice."),
        ({"verdict_vs_gold": "!="}, "verdict_vs_gold: Select a valid choice."),
    ],
)
def test_the_api_refuses_bad_verdict_filters_with_a_400(client, token, params, message):
    response = client.get("/api/traces", params, **token)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_the_openapi_schema_documents_the_verdict_filters_sort_and_item_field(client):
    schema = client.get("/api/openapi.json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/traces"]["get"]["parameters"]}
    assert {"has_verdict", "verdict_vs_gold", "has_gold", "q"} <= set(params)
    assert "verdict / -verdict" in params["ordering"]["description"]
    page = schema["paths"]["/api/traces"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    components = schema["components"]["schemas"]
    item = components[
        components[page["$ref"].rsplit("/", 1)[-1]]["properties"]["items"]["items"]["$ref"].rsplit("/", 1)[-1]
    ]
    assert "verdict" in item["required"]
    verdict = item["properties"]["verdict"]["anyOf"][0]
    assert {"agent", "step", "method", "run", "correct"} <= set(verdict["required"])


def test_tracing_does_not_import_attribution():
    root = Path(__file__).resolve().parents[2] / "tracing"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(m.split(".")[0] in ("attribution", "annotations") for m in modules), path


def test_hostile_verdict_and_category_text_is_escaped(owner_client, project):
    trace = _trace(project, "hostile", gold=("WebSurfer", 1))
    trace.gold_labels.update(category="<img src=x onerror=alert(1)>.x")
    _verdict(trace, "<script>alert(1)</script>", 1, method="<b>m</b>")
    listing = owner_client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    page = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    for html in (listing, page):
        assert "<script>alert(1)</script>" not in html and "<img src=x" not in html and "<b>m</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; @ 1" in listing
