"""The agent graph on the trace page's verdict panel: names fit (wrapped or abbreviated, full name as tooltip), the
drawing grows with the number of agents, and the blamed and gold agents are marked and named in a legend."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from attribution import services as attribution_services
from attribution.graph import agent_graph_layout, label_lines
from attribution.models import Verdict
from tests.conftest import SHARED, import_now, incoming_path
from tracing import services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import Trace

TRAIL_TWO_AGENTS = SHARED / "traces" / "trail" / "gaia" / "3215fc75e81bdb73706a4fb37b66427f.trace.json"


def _graph(n: int) -> dict:
    names = [f"Chief Technology Officer {i}" for i in range(n)]
    return {
        "nodes": [{"agent": a, "steps": 3} for a in names],
        "edges": [
            {"source": names[i], "target": names[(i + 1) % n], "handovers": 1, "addressed": 0, "count": 1}
            for i in range(n)
        ]
        + [{"source": names[1], "target": names[0], "handovers": 2, "addressed": 0, "count": 2}],
    }


def test_long_names_wrap_onto_two_lines_or_are_abbreviated():
    assert label_lines("Chief Technology Officer") == ["Chief Technology", "Officer"]
    assert label_lines("MagenticOneOrchestrator") == ["MagenticOne", "Orchestrator"]
    assert label_lines("WebSurfer") == ["WebSurfer"]
    lines = label_lines("171105b7-59dd-49c0-9677-0b95395aa46a")
    assert len(lines) == 2 and lines[-1].endswith("…") and all(len(line) <= 16 for line in lines)


def test_the_drawing_grows_with_the_agents_and_keeps_opposite_arrows_apart():
    small, large = agent_graph_layout(_graph(3)), agent_graph_layout(_graph(12))
    assert large["width"] > small["width"] and large["height"] > small["height"]
    nodes = large["nodes"]
    closest = min(
        ((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5 for a in nodes for b in nodes if a is not b
    )
    assert closest >= 80  # room for two 16-character label lines between neighbours
    forth = next(e for e in large["edges"] if e["source"].endswith(" 0") and e["target"].endswith(" 1"))
    back = next(e for e in large["edges"] if e["source"].endswith(" 1") and e["target"].endswith(" 0"))
    control = lambda e: re.search(r"Q(-?\d+),(-?\d+)", e["path"]).groups()  # noqa: E731
    assert control(forth) != control(back)
    assert agent_graph_layout({"nodes": [{"agent": "alone", "steps": 4}], "edges": []}) == {}


@pytest.mark.django_db
def test_a_two_agent_trail_trace_gets_a_graph_with_gold_and_blamed_agents_in_a_legend(owner_client, project):
    labels = TRAIL_TWO_AGENTS.with_name(TRAIL_TWO_AGENTS.name.replace(".trace.", ".labels."))
    job, _ = import_now(project, incoming_path(TRAIL_TWO_AGENTS), incoming_path(labels))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    run = attribution_services.run_create(
        project=project, method="heuristic", trace_ids=[trace.pk], enqueue=False
    )
    attribution_services.run_execute_inline(run=run)
    verdict = Verdict.objects.get(run=run)
    body = owner_client.get(reverse("attribution:trace_panel", args=[trace.pk])).content.decode()
    assert 'class="agent-graph-svg"' in body
    assert "gold label: search_agent" in body
    assert f"blamed by the latest verdict: {verdict.agent_name}" in body
    assert re.search(r'<g class="ag-node[^"]*gold[^"]*"><title>search_agent: 9 steps', body)


@pytest.mark.django_db
def test_a_long_agent_name_is_whole_in_the_tooltip_and_wrapped_on_the_node(owner_client, project):
    name = "Chief Technology Officer of the Startup"
    steps = [
        ParsedStep(speaker=a, agent=a, kind="message", content=f"{a} speaks") for a in [name, "Coder", name]
    ]
    trace = services.trace_create_from_parsed(
        project=project,
        upload=None,
        ordinal=0,
        parsed=ParsedTrace(
            name="ceo", source_format="whowhen", steps=steps, gold=[ParsedGold(agent="Coder", step=1)]
        ),
    )
    body = owner_client.get(reverse("attribution:trace_panel", args=[trace.pk])).content.decode()
    assert f"<title>{name}: 2 steps" in body
    assert ">Chief Technology</text>" in body and ">Officer of the…</text>" in body
