"""The evaluation page: which run stands for a method, how methods are ranked, the baselines and the chart."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from attribution import selectors
from attribution.evaluation import wilson
from attribution.models import AttributionRun, Verdict
from tracing.models import Agent, GoldLabel, Step, Trace

pytestmark = pytest.mark.django_db

BASELINE_WORDS = [
    "most blamed agent / commonest step (fitted on other traces)",
    "first agent action",
    "last agent action",
    "random acting agent",
    "random among ever-blamed agents",
]


def make_traces(project, n: int, *, start: int = 0, gold_agent: str = "Coder") -> list[Trace]:
    """Labelled five-step traces: Planner acts at steps 0, 2 and 4, Coder at 1 and 3. Two in three are blamed on
    Coder at step 3, the rest on Planner at step 4 (so the last-action baseline is right on a third)."""
    traces = []
    for i in range(start, start + n):
        trace = Trace.objects.create(
            project=project,
            name=f"task-{i}",
            source_format="who_and_when",
            external_id=f"task-{i}",
            step_count=5,
            agent_count=2,
        )
        planner = Agent.objects.create(trace=trace, name="Planner", position=0, step_count=3)
        coder = Agent.objects.create(trace=trace, name=gold_agent, position=1, step_count=2)
        Step.objects.bulk_create(
            [
                Step(trace=trace, index=j, agent=coder if j % 2 else planner, content=f"step {j}")
                for j in range(5)
            ]
        )
        blamed = (gold_agent, 3) if i % 3 else ("Planner", 4)
        GoldLabel.objects.create(trace=trace, agent_name=blamed[0], step_index=blamed[1])
        traces.append(trace)
    return traces


def make_run(
    project, method: str, traces: list[Trace], *, right: int, status: str = "succeeded"
) -> AttributionRun:
    """A finished run whose verdicts match the gold label (agent and step) on its first ``right`` traces."""
    run = AttributionRun.objects.create(
        project=project,
        method=method,
        status=status,
        total=len(traces),
        done=len(traces),
        trace_ids=[t.pk for t in traces],
    )
    verdicts = []
    for i, trace in enumerate(traces):
        gold = trace.gold_labels.get()
        agent, step = (gold.agent_name, gold.step_index) if i < right else ("Nobody", 0)
        verdicts.append(Verdict(run=run, trace=trace, method=method, agent_name=agent, step_index=step))
    Verdict.objects.bulk_create(verdicts)
    return run


def page(client, project, **params: str) -> str:
    response = client.get(reverse("attribution:evaluation", args=[project.slug]), params)
    assert response.status_code == 200
    return response.content.decode()


def chart_of(body: str) -> str:
    return body.split('<figure class="accuracy-chart">', 1)[1].split("</figure>", 1)[0]


def test_the_chart_draws_each_figure_with_its_95_percent_interval(owner_client, project):
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=9)
    body = page(owner_client, project, method="heuristic")
    lo, hi = wilson(9, 12)
    chart = chart_of(body)
    assert 'role="img"' in chart and '<title id="evaluation-chart-title">' in chart
    assert 'aria-labelledby="evaluation-chart-title evaluation-chart-desc"' in chart
    assert f'75.0% <tspan class="chart-interval">({100 * lo:.1f}–{100 * hi:.1f}%)</tspan>' in chart
    assert f"heuristic: agent accuracy 75.0% (95% interval {100 * lo:.1f}–{100 * hi:.1f}%), n=12" in chart
    assert all(f">{tick}</text>" in chart for tick in ("0%", "50%", "100%"))
    assert "best trivial baseline" in chart and 'class="chart-baseline"' in chart
    # The table carries the same interval, for the agent, step and joint figures.
    assert body.count(f"{100 * lo:.1f}%–{100 * hi:.1f}%") >= 3


def test_all_five_baselines_appear_in_plain_words_with_intervals(owner_client, project):
    make_run(project, "heuristic", make_traces(project, 12), right=6)
    body = page(owner_client, project, method="heuristic")
    for words in BASELINE_WORDS:
        assert f"baseline: {words}" in body
    # Leave-one-out, every trace's most blamed agent is Coder (8 of 12), and the last action is right on the other 4.
    lo, hi = wilson(8, 12)
    assert (
        f'66.7%</strong><span class="ci" title="Wilson 95% interval">{100 * lo:.1f}%–{100 * hi:.1f}%' in body
    )
    assert "most blamed agent 66.7%" in chart_of(body)  # the strongest agent baseline, drawn as a dashed line
    assert "majority baseline" not in body


def test_a_one_trace_run_after_a_twelve_trace_run_does_not_replace_the_score(owner_client, project):
    traces = make_traces(project, 12)
    big = make_run(project, "heuristic", traces, right=6)
    click = make_run(project, "heuristic", traces[:1], right=1)  # someone clicked "Attribute" on one trace
    make_run(project, "heuristic", traces, right=12, status="failed")  # unfinished runs never count either
    assert click.pk > big.pk
    assert selectors.latest_evaluation_run(project=project, method="heuristic") == big
    body = page(owner_client, project, method="heuristic")
    assert f"run #{big.pk}, n=12" in body and f"run #{click.pk}" not in body
    assert "<strong>50.0%</strong>" in body and "Single-trace runs" not in body


def test_a_newer_run_of_ten_or_more_traces_does_replace_it(owner_client, project):
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=6)
    newer = make_run(project, "heuristic", traces[:10], right=10)
    assert selectors.latest_evaluation_run(project=project, method="heuristic") == newer
    assert f"run #{newer.pk}, n=10" in page(owner_client, project, method="heuristic")


def test_without_a_ten_trace_run_the_largest_is_listed_apart_and_is_never_the_score(owner_client, project):
    traces = make_traces(project, 3)
    largest = make_run(project, "heuristic", traces, right=1)
    make_run(project, "heuristic", traces[:1], right=1)
    assert selectors.latest_evaluation_run(project=project, method="heuristic") == largest
    body = page(owner_client, project, method="heuristic")
    main, single = body.split('<h2 id="single-trace-runs">Single-trace runs</h2>', 1)
    assert "only a single-trace run (n=3" in main and f"run #{largest.pk}" not in main
    assert "accuracy-chart" not in main and "confusion-matrix" not in main  # no chart, no score
    assert f"run #{largest.pk}</a>" in single and '<td class="num">3</td>' in single


def test_a_three_trace_run_is_listed_apart_from_a_twelve_trace_run_with_lower_accuracy(owner_client, project):
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=3)  # 25%
    make_run(project, "schema_guided", traces[:3], right=3)  # 100%, but over three traces
    comparison = selectors.evaluation_comparison(project=project, split="all")
    assert [(r["method"], r["ranked"]) for r in comparison] == [("heuristic", True), ("schema_guided", False)]
    context = selectors.evaluation_page(project=project, method="schema_guided", split="all")
    assert context["result"] is None and context["selected_single"]["method"] == "schema_guided"
    assert [r["method"] for r in context["comparison"]] == ["heuristic"]
    assert [r["method"] for r in context["single_runs"]] == ["schema_guided"]
    body = page(owner_client, project, method="heuristic")
    main, single = body.split("Single-trace runs</h2>", 1)
    assert ">schema_guided" not in main and "schema_guided" in single
    assert ">heuristic</text>" in chart_of(body) and "schema_guided" not in chart_of(body)
    # Selecting the small method shows no figure of it as the project's score.
    body = page(owner_client, project, method="schema_guided")
    assert "100.0%" not in body.split("Single-trace runs</h2>", 1)[0]


def test_ranked_methods_go_by_step_accuracy_then_agent(owner_client, project):
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=4)
    make_run(project, "hybrid", traces, right=8)
    make_run(project, "schema_guided", traces, right=6)
    assert [r["method"] for r in selectors.evaluation_comparison(project=project, split="all")] == [
        "hybrid",
        "schema_guided",
        "heuristic",
    ]


def test_hostile_method_and_agent_names_are_escaped(owner_client, project):
    hostile = "<script>alert('m')</script>"
    traces = make_traces(project, 12, gold_agent="<img src=x onerror=alert(1)>")
    make_run(project, hostile, traces, right=5)
    make_run(project, "heuristic", traces, right=2)
    body = page(owner_client, project, method="heuristic")
    assert hostile not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(&#x27;m&#x27;)&lt;/script&gt;" in chart_of(body)
    assert "?method=%3Cscript%3Ealert%28%27m%27%29%3C/script%3E" in body


def test_the_page_costs_the_same_queries_whatever_the_number_of_runs(
    owner_client, project, django_assert_max_num_queries
):
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=6)
    make_run(project, "hybrid", traces, right=3)
    url = reverse("attribution:evaluation", args=[project.slug])
    with CaptureQueriesContext(connection) as few:
        owner_client.get(url, {"method": "heuristic"})
    for i in range(8):  # old big runs, new small clicks: none adds a query
        make_run(project, "heuristic", traces if i % 2 else traces[:1], right=i)
        make_run(project, "hybrid", traces[:2], right=1)
    with django_assert_max_num_queries(len(few)) as many:
        assert owner_client.get(url, {"method": "heuristic"}).status_code == 200
    # The wide trace_ids JSON of the runs is never read, and no run is scanned with SELECT DISTINCT.
    assert not any("trace_ids" in q["sql"] or "DISTINCT" in q["sql"] for q in many.captured_queries)


def test_a_method_without_labelled_verdicts_in_the_split_shows_nothing_to_score(owner_client, project):
    body = page(owner_client, project, method="heuristic")
    assert "No finished heuristic run over labelled traces in this split yet." in body
    assert "accuracy-chart" not in body


def test_the_labelled_count_matches_the_labelled_traces_of_each_split(project):
    make_traces(project, 12)
    Trace.objects.create(project=project, name="unlabelled", source_format="who_and_when")
    for split in ("all", "dev", "heldout"):
        expected = len(selectors.labelled_trace_ids(project=project, split=split))
        assert selectors.labelled_count(project=project, split=split) == expected
    assert selectors.labelled_count(project=project) == 12


def test_the_confusion_matrix_counts_gold_against_predicted_agents(owner_client, project):
    traces = make_traces(project, 12)  # 8 blamed on Coder at step 3, 4 on Planner at step 4
    make_run(project, "heuristic", traces, right=6)  # the other 6 say "Nobody" at step 0
    body = page(owner_client, project, method="heuristic")
    matrix = body.split('<figure class="eval-chart confusion-matrix">', 1)[1].split("</figure>", 1)[0]
    # Traces 0..5 are right: i=0 and i=3 are Planner's, the other four Coder's; 6..11 go to Nobody (not a gold
    # agent, so pooled as "other").
    assert "<title>gold Coder, predicted Coder: 4 of 8 (50.0%)</title>" in matrix
    assert "<title>gold Planner, predicted Planner: 2 of 4 (50.0%)</title>" in matrix
    assert "<title>gold Coder, predicted (other): 4 of 8 (50.0%)</title>" in matrix
    assert "6 of 12 traces on the diagonal" in matrix
    assert 'fill-opacity="0.54"' in matrix and "style=" not in matrix  # shade as an attribute: the CSP holds


def test_the_step_error_histogram_bins_predicted_minus_gold(owner_client, project):
    traces = make_traces(project, 12)
    run = make_run(
        project, "heuristic", traces, right=6
    )  # wrong ones say step 0: -3 (Coder's) or -4 (Planner's)
    Verdict.objects.filter(run=run, trace=traces[11]).update(status="failed", step_index=None, agent_name="")
    body = page(owner_client, project, method="heuristic")
    histogram = body.split('<figure class="eval-chart step-histogram">', 1)[1].split("</figure>", 1)[0]
    assert "predicted − gold = 0: 6 verdicts" in histogram
    # i=6..10 wrong: 6 and 9 are Planner's (4 → 0), 7, 8, 10 Coder's (3 → 0); i=11 gave no verdict.
    assert (
        "predicted − gold = -3: 3 verdicts" in histogram and "predicted − gold = -4: 2 verdicts" in histogram
    )
    assert "1 without a step" in histogram


def test_hostile_agent_names_in_the_error_pictures_are_escaped(owner_client, project):
    traces = make_traces(project, 12, gold_agent="<b onmouseover=alert(1)>x</b>")
    make_run(project, "heuristic", traces, right=12)
    body = page(owner_client, project, method="heuristic")
    matrix = body.split('<figure class="eval-chart confusion-matrix">', 1)[1].split("</figure>", 1)[0]
    assert "<b onmouseover" not in body and "&lt;b onmouseover=alert(1)&gt;x&lt;/b&gt;" in matrix


def test_the_page_costs_the_same_queries_with_ten_times_the_traces(
    owner_client, project, django_assert_max_num_queries
):
    traces = make_traces(project, 12)
    make_run(project, "heuristic", traces, right=6)
    make_run(project, "hybrid", traces[:1], right=1)
    url = reverse("attribution:evaluation", args=[project.slug])
    with CaptureQueriesContext(connection) as few:
        owner_client.get(url, {"method": "heuristic"})
    more = traces + make_traces(project, 108, start=12)
    make_run(project, "heuristic", more, right=60)
    make_run(project, "hybrid", more, right=30)
    with django_assert_max_num_queries(len(few)) as many:
        body = owner_client.get(url, {"method": "heuristic"}).content.decode()
    assert "n=120" in body
    assert not any("trace_ids" in q["sql"] or "DISTINCT" in q["sql"] for q in many.captured_queries)


def test_a_changed_gold_label_changes_the_score_shown(owner_client, project):
    traces = make_traces(project, 12)
    run = make_run(project, "heuristic", traces, right=6)
    assert "<strong>50.0%</strong>" in page(owner_client, project, method="heuristic")
    # An adjudication replaces a label (delete and create): the verdict on trace 11 ("Nobody" at step 0) is now right.
    GoldLabel.objects.filter(trace=traces[11]).delete()
    GoldLabel.objects.create(trace=traces[11], agent_name="Nobody", step_index=0, source="adjudicated")
    body = page(owner_client, project, method="heuristic")
    assert "<strong>58.3%</strong>" in body and f"run #{run.pk}, n=12" in body
