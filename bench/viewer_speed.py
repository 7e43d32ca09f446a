"""Trace viewer latency on a 10,000-step trace: the first page, a jump deep into the trace, and the trace list,
rendered through Django's full request cycle. Prints p50/p95 in ms. Usage: python bench/viewer_speed.py"""

from __future__ import annotations

import json
import time

import _django

_django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import Client  # noqa: E402

from tracing import services  # noqa: E402
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace  # noqa: E402
from tracing.models import Project, Role  # noqa: E402

ROUNDS = 30


def _trace(project: Project, steps: int):
    parsed = ParsedTrace(
        name=f"bench-{steps}",
        source_format="whowhen",
        question="bench",
        steps=[
            ParsedStep(
                speaker=f"Agent{i % 4}",
                agent=f"Agent{i % 4}",
                kind="message",
                content=f"step {i} " + "lorem ipsum " * (10 + i % 200),
            )
            for i in range(steps)
        ],
        gold=[ParsedGold(agent="Agent1", step=steps * 3 // 4)],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def _time(client: Client, url: str, rounds: int = ROUNDS) -> dict[str, float]:
    """p50 and p95 server time of ``rounds`` GETs of ``url`` through Django's full request cycle, in ms."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return {
        "p50_ms": round(_django.percentile(samples, 50), 1),
        "p95_ms": round(_django.percentile(samples, 95), 1),
    }


def main() -> None:
    Project.objects.filter(name="bench-viewer").delete()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    project = services.project_create(name="bench-viewer")
    services.membership_set(project=project, user=user, role=Role.OWNER)
    trace = _trace(project, 10_000)
    for _ in range(200):
        _trace(project, 20)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "rounds": ROUNDS,
                "trace_10000_first_page": _time(client, f"/traces/{trace.pk}/"),
                "trace_10000_jump_to_step_7500": _time(client, f"/traces/{trace.pk}/?step=7500"),
                "trace_list_201_traces": _time(client, f"/projects/{project.slug}/"),
                "trace_list_search": _time(client, f"/projects/{project.slug}/?q=bench-10000"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
