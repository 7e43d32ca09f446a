"""What the verdict column, the verdict filters and the blame strip cost (issue 16): a 100,000-step trace page
before and after it has a verdict storing 100,000 scores (only the shown window's slice is read), and the trace list
of N traces, each with a verdict, shown and filtered by "has verdict" and "verdict ≠ gold". Full Django request
cycle; prints p50/p95 in ms. ``python bench/viewer_blame_speed.py [--steps N --traces N]``."""

from __future__ import annotations

import argparse
import json
import random
import time

import _django

_django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from viewer_waterfall_speed import _small, _span_tree, _time  # noqa: E402

from attribution.models import AttributionRun, Verdict  # noqa: E402
from tracing import services  # noqa: E402
from tracing.models import Project, Role  # noqa: E402


def _verdicts(project: Project) -> None:
    rng = random.Random(7)
    traces = list(project.traces.values_list("id", "step_count"))
    run = AttributionRun.objects.create(
        project=project, method="heuristic", status="succeeded", trace_ids=[pk for pk, _ in traces]
    )
    Verdict.objects.bulk_create(
        [
            Verdict(
                run=run,
                trace_id=pk,
                method="heuristic",
                agent_name=f"A{rng.randrange(3)}",
                step_index=rng.randrange(n),
                scores=[round(rng.random(), 4) for _ in range(n)],
            )
            for pk, n in traces
        ],
        batch_size=200,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--traces", type=int, default=2_000)
    args = parser.parse_args()
    Project.objects.filter(name="bench-blame").delete()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    project = services.project_create(name="bench-blame")
    services.membership_set(project=project, user=user, role=Role.OWNER)
    trace = _span_tree(project, args.steps)
    for i in range(args.traces - 1):
        _small(project, i)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tracing_step; ANALYZE tracing_trace; ANALYZE tracing_agent")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    cache.clear()
    client.get(f"/traces/{trace.pk}/")  # computes and caches the trace totals
    jump = f"/traces/{trace.pk}/?step={args.steps * 3 // 4}"
    before = {"first_page": _time(client, f"/traces/{trace.pk}/"), "jump": _time(client, jump)}
    started = time.perf_counter()
    _verdicts(project)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE attribution_verdict")
    slug = project.slug
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "steps": args.steps,
                "traces": args.traces,
                "verdicts_seconds": round(time.perf_counter() - started, 1),
                f"trace_{args.steps}_without_verdict": before,
                f"trace_{args.steps}_with_blame_strip": {
                    "first_page": _time(client, f"/traces/{trace.pk}/"),
                    "jump": _time(client, jump),
                },
                f"trace_list_{args.traces}_with_verdict_column": _time(client, f"/projects/{slug}/"),
                f"trace_list_{args.traces}_has_verdict": _time(client, f"/projects/{slug}/?has_verdict=yes"),
                f"trace_list_{args.traces}_verdict_differs_from_gold": _time(
                    client, f"/projects/{slug}/?verdict_vs_gold=differs"
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
