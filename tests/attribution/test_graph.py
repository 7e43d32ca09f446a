"""The dependency graph of a trace: order, parent and uses edges, ancestors, and the agent hand-over graph."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from attribution.graph import agent_graph, ancestors, build_graph, canonical_number, explain_use, tokens_of
from attribution.methods.base import StepView, TraceView
from attribution.selectors import trace_view
from tests.conftest import ROOT, SHARED, import_now, incoming_path, whowhen_files
from tracing.models import JobStatus, Trace

TRAIL_DIR = SHARED / "traces" / "trail" if SHARED.exists() else ROOT / "tests" / "fixtures" / "trail"
TRAIL_FILES = sorted(TRAIL_DIR.rglob("*.trace.json"))


def _trace(*steps: StepView, question: str = "", prompts: dict[str, str] | None = None) -> TraceView:
    agents = tuple(dict.fromkeys(s.agent for s in steps if s.agent))
    return TraceView(
        trace_id=1,
        name="hand-made",
        question=question,
        ground_truth="",
        outcome="failed",
        steps=steps,
        agents=agents,
        system_prompts=prompts or {},
    )


def _step(index: int, agent: str, content: str, kind: str = "message", **extra) -> StepView:
    return StepView(index=index, agent=agent, kind=kind, content=content, **extra)


# Planner asks, coder writes code, the terminal runs it, the checker quotes the printed value, the planner answers.
HAND_MADE = _trace(
    _step(0, "planner", "Find the population of Oslo in 2020.", recipient="coder"),
    _step(1, "coder", "```python\nresult = fetch_population('Oslo')\nprint(result)\n```"),
    _step(2, "terminal", "exitcode: 0 (execution succeeded)\nCode output: 693494", kind="tool_result"),
    _step(3, "checker", "The population is 693494 according to the output."),
    _step(4, "planner", "Noted, thank you."),
    _step(5, "planner", "FINAL ANSWER: 693494", parent=3),
    question="What was the population of Oslo in 2020?",
)


def _kinds(graph, source: int, target: int) -> tuple[str, ...]:
    return graph.edges[source, target]["kinds"]


def test_consecutive_steps_are_linked_in_order():
    graph = build_graph(HAND_MADE)
    assert sorted(graph.nodes) == list(range(6))
    for i in range(1, 6):
        assert "order" in _kinds(graph, i - 1, i)
    assert graph.edges[3, 4]["kind"] == "order"  # nothing else links them


def test_a_tool_result_hangs_from_the_action_that_produced_it_and_a_span_from_its_parent():
    graph = build_graph(HAND_MADE)
    assert graph.edges[1, 2]["kind"] == "parent"  # the terminal's output comes from the coder's code
    assert graph.edges[3, 5]["kind"] == "parent"  # StepView.parent
    assert set(_kinds(graph, 1, 2)) == {"parent", "order"}


def test_a_later_step_that_repeats_a_distinctive_token_uses_the_step_that_first_produced_it():
    graph = build_graph(HAND_MADE)
    assert graph.edges[2, 3]["via"] == "693494"
    assert "uses" in _kinds(graph, 2, 3)
    assert graph.edges[2, 5]["kind"] == "uses" and graph.edges[2, 5]["via"] == "693494"
    assert not graph.has_edge(3, 5) or "uses" not in _kinds(
        graph, 3, 5
    )  # only the first appearance is a source
    # 'Oslo' and 2020 are in the question: given, not produced by any step, so they link nothing.
    assert not any(d.get("via") in ("Oslo", "2020") for _, _, d in graph.edges(data=True))


def test_ancestors_follow_parent_and_uses_edges_but_not_plain_order():
    graph = build_graph(HAND_MADE)
    assert ancestors(graph, 5) == {1, 2, 3}
    assert ancestors(graph, 4) == set()  # it only follows step 3 in time
    assert ancestors(graph, 0) == set()


def test_the_explanation_names_the_token_and_the_step_it_came_from():
    graph = build_graph(HAND_MADE)
    assert explain_use(graph, 3) == ["step 3 uses '693494' from step 2"]
    assert explain_use(graph, 5) == ["step 5 uses '693494' from step 2"]
    assert explain_use(graph, 4) == []


def test_distinctive_tokens_are_numbers_urls_quotes_files_and_code_like_names():
    text = (
        'He said "hello world", it\'s 5,200,000 or 3.14 (not 7). See https://x.org/a_b. '
        "Open data.csv with my_var and camelCase; plain words like because stay out, so does 2020."
    )
    assert list(tokens_of(text)) == [
        "hello world",
        "5200000",
        "3.14",
        "https://x.org/a_b",
        "data.csv",
        "my_var",
        "camelCase",
        "2020",
    ]


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("1,814,443", "1814443"),
        ("1814443.0", "1814443"),
        ("1,814,443.00", "1814443"),
        ("2.50", "2.5"),
        ("10.05", "10.05"),
        ("1.2.0", "1.2.0"),  # a version, not a number with a decimal part
        ("1,2", "1,2"),  # a list, not thousands
    ],
)
def test_a_number_is_read_as_the_value_it_states(written, value):
    assert canonical_number(written) == value


def test_an_answer_restating_a_tools_number_in_another_notation_uses_the_tool():
    # A LangGraph tool returns floats; the agent writes the same value with separators. Read as different tokens,
    # the answer's number would look like one nobody produced.
    trace = _trace(
        _step(0, "math", 'add({"a": 1796317, "b": 18126})', kind="tool_call"),
        _step(1, "math", "1814443.0", kind="tool_result", parent=0),
        _step(2, "math", "The combined headcount is 1,814,443 employees."),
    )
    graph = build_graph(trace)
    assert graph.edges[1, 2]["via"] == "1814443" and "uses" in _kinds(graph, 1, 2)


def test_a_token_in_a_system_prompt_links_nothing():
    trace = _trace(
        _step(0, "a", "use tool_alpha now"),
        _step(1, "b", "tool_alpha done"),
        prompts={"a": "You may call tool_alpha."},
    )
    assert not build_graph(trace).has_edge(0, 1) or "uses" not in _kinds(build_graph(trace), 0, 1)


def test_a_token_repeated_in_most_of_a_long_trace_is_background_and_links_nothing():
    steps = [_step(i, "a" if i % 2 else "b", f"status ledger_key_{'x' * 3} step {i}") for i in range(40)]
    graph = build_graph(_trace(*steps))
    assert not any(d.get("via") == "ledger_key_xxx" for _, _, d in graph.edges(data=True))


def test_the_agent_graph_counts_steps_hand_overs_and_addressed_messages():
    drawn = agent_graph(HAND_MADE)
    assert drawn["nodes"] == [
        {"agent": "planner", "steps": 3},
        {"agent": "coder", "steps": 1},
        {"agent": "terminal", "steps": 1},
        {"agent": "checker", "steps": 1},
    ]
    edges = {(e["source"], e["target"]): e for e in drawn["edges"]}
    assert edges["planner", "coder"] == {
        "source": "planner",
        "target": "coder",
        "handovers": 1,
        "addressed": 1,
        "count": 2,
    }
    assert edges["checker", "planner"]["handovers"] == 1
    assert set(edges) == {
        ("planner", "coder"),
        ("coder", "terminal"),
        ("terminal", "checker"),
        ("checker", "planner"),
    }


def _import(project, path: Path, name: str) -> TraceView:
    (job,) = import_now(project, incoming_path(path, name))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return trace_view(Trace.objects.get(pk=job.trace_ids[0]))


@pytest.mark.django_db
@pytest.mark.parametrize("subset", ["Hand-Crafted", "Algorithm-Generated"])
def test_the_graph_of_an_imported_who_and_when_run_links_terminal_output_and_reused_values(project, subset):
    # The longest file of the subset: Magentic-One runs reach 130 steps and ~300k characters.
    path = max((p for p in whowhen_files() if p.parent.name == subset), key=lambda p: p.stat().st_size)
    trace = _import(project, path, f"{subset}/{path.name}")
    started = time.monotonic()
    graph = build_graph(trace)
    assert (
        time.monotonic() - started < 2.0
    )  # tokens are indexed once: a long run takes a fraction of a second
    assert graph.number_of_nodes() == len(trace.steps)
    kinds = {k for _, _, d in graph.edges(data=True) for k in d["kinds"]}
    assert {"order", "uses"} <= kinds
    for source, target, data in graph.edges(data=True):
        assert source < target
        if data["kind"] == "uses":
            assert data["via"] in set(tokens_of(trace.steps[target].content))
            assert data["via"] in set(tokens_of(trace.steps[source].content))
    for result in (s for s in trace.steps if s.kind == "tool_result" and s.index > 0):
        producers = [
            j for j in graph.predecessors(result.index) if "parent" in graph.edges[j, result.index]["kinds"]
        ]
        assert producers and trace.steps[producers[0]].kind != "tool_result"
    last = len(trace.steps) - 1
    assert all(i < last for i in ancestors(graph, last))
    drawn = agent_graph(trace)
    assert {n["agent"] for n in drawn["nodes"]} >= set(trace.agents)
    assert sum(n["steps"] for n in drawn["nodes"]) == sum(1 for s in trace.steps if s.agent)


@pytest.mark.django_db
@pytest.mark.parametrize("path", TRAIL_FILES, ids=lambda p: p.name.split(".")[0])
def test_the_graph_of_an_imported_trail_trace_follows_its_span_tree(project, path):
    trace = _import(project, path, f"{path.parent.name}/{path.name}")
    graph = build_graph(trace)
    children = [s for s in trace.steps if s.parent is not None]
    assert children
    for step in children:
        assert "parent" in graph.edges[step.parent, step.index]["kinds"]
        assert step.parent in ancestors(graph, step.index)
    deepest = max(children, key=lambda s: len(ancestors(graph, s.index)))
    chain, node = set(), deepest.index
    while trace.steps[node].parent is not None:
        node = trace.steps[node].parent
        chain.add(node)
    assert chain <= ancestors(graph, deepest.index)  # every span above a step is one of its ancestors
