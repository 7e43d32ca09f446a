"""Trace page and trace list at the sizes issue 16 names: a 100,000-step span tree (parents, times, tokens, models:
the waterfall, chips and totals all have work to do) and a list of 5,000 traces, searched, filtered and sorted.
Full Django request cycle; prints p50/p95 in ms. ``python bench/viewer_waterfall_speed.py [--steps N --traces N]``.
The trace totals are stored when the trace is written (``Trace.totals``); ``first_view_ms`` is the big trace's
first request, with the cache cleared, after one request to a small trace warmed the process."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import _django

_django.setup()

import viewer_speed  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from tracing import services  # noqa: E402
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace  # noqa: E402
from tracing.models import Project, Role  # noqa: E402

ROUNDS = 20
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _span_tree(project: Project, steps: int):
    """A root, agent spans every 10 steps under it, LLM calls and tool calls under the agents."""
    parsed_steps = [
        ParsedStep(
            speaker="Orchestrator.run",
            agent="Orchestrator",
            kind="message",
            content="root",
            span_id="s0",
            started_at=T0,
            ended_at=T0 + dt.timedelta(seconds=steps),
        )
    ]
    for i in range(1, steps):
        agent = f"Agent{i % 5}"
        is_agent_span = i % 10 == 1
        parent = 0 if is_agent_span else i - (i - 1) % 10
        kind = "message" if is_agent_span else ("llm_call" if i % 2 else "tool_call")
        parsed_steps.append(
            ParsedStep(
                speaker=agent,
                agent=agent,
                kind=kind,
                content=f"step {i} WebSurfer " + "lorem ipsum " * (5 + i % 50),
                parent=parent,
                span_id=f"s{i}",
                started_at=T0 + dt.timedelta(seconds=i),
                ended_at=T0 + dt.timedelta(seconds=i + 0.5),
                input_tokens=100 if kind == "llm_call" else None,
                output_tokens=20 if kind == "llm_call" else None,
                raw={"model": "gpt-4o-mini", "totalCost": 0.0001, "type": "GENERATION"}
                if kind == "llm_call"
                else None,
            )
        )
    parsed = ParsedTrace(
        name=f"bench-tree-{steps}",
        source_format="langfuse",
        question="bench",
        steps=parsed_steps,
        gold=[ParsedGold(agent="Agent1", step=steps * 3 // 4)],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _small(project: Project, i: int) -> None:
    steps = [
        ParsedStep(
            speaker=f"A{j}",
            agent=f"A{j % 3}",
            kind="message",
            content=f"trace {i} step {j} planner",
            started_at=T0 + dt.timedelta(minutes=i, seconds=j),
            input_tokens=j,
            output_tokens=j,
        )
        for j in range(20)
    ]
    parsed = ParsedTrace(
        name=f"small-{i}",
        source_format="whowhen",
        question="bench",
        steps=steps,
        outcome="failed" if i % 3 else "succeeded",
        gold=[ParsedGold(agent="A1", step=4)] if i % 2 else [],
    )
    services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _time(client: Client, url: str) -> dict[str, float]:
    return viewer_speed._time(client, url, rounds=ROUNDS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--traces", type=int, default=5_000)
    args = parser.parse_args()
    Project.objects.filter(name="bench-waterfall").delete()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    project = services.project_create(name="bench-waterfall")
    services.membership_set(project=project, user=user, role=Role.OWNER)
    started = time.perf_counter()
    trace = _span_tree(project, args.steps)
    for i in range(args.traces - 1):
        _small(project, i)
    built_s = time.perf_counter() - started
    if connection.vendor == "postgresql":
        # What autovacuum does shortly after a bulk import; without statistics the planner guesses on fresh tables.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tracing_step; ANALYZE tracing_trace; ANALYZE tracing_agent")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    # Warm the process (imports, URLs, templates: ~1.3 s on 2 cores) on a small trace, so the first view measures
    # the big trace's own work.
    client.get(f"/traces/{project.traces.exclude(pk=trace.pk).first().pk}/")
    cache.clear()
    start = time.perf_counter()
    client.get(f"/traces/{trace.pk}/")
    first_view = (time.perf_counter() - start) * 1000
    slug = project.slug
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "rounds": ROUNDS,
                "steps": args.steps,
                "traces": args.traces,
                "build_seconds": round(built_s, 1),
                f"trace_{args.steps}_first_view_ms": round(first_view, 1),
                f"trace_{args.steps}_first_page": _time(client, f"/traces/{trace.pk}/"),
                f"trace_{args.steps}_jump_to_step_{args.steps * 3 // 4}": _time(
                    client, f"/traces/{trace.pk}/?step={args.steps * 3 // 4}"
                ),
                f"trace_list_{args.traces}": _time(client, f"/projects/{slug}/"),
                f"trace_list_{args.traces}_search_step_content": _time(
                    client, f"/projects/{slug}/?q=planner"
                ),
                f"trace_list_{args.traces}_sorted_by_duration": _time(
                    client, f"/projects/{slug}/?ordering=-duration"
                ),
                f"trace_list_{args.traces}_filtered": _time(
                    client,
                    f"/projects/{slug}/?agent=A1&has_gold=yes&from=2025-01-01&to=2025-01-02&ordering=-tokens",
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
