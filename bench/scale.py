"""Team scale (issue 19): a project of N traces made by varying the real Who&When runs, then the figures that grow
with it. Prints one JSON object.

    python bench/scale.py [--traces 20000] [--requests 20] [--reuse]

1. import: the N traces as one Who&When JSON Lines bundle through ``import_traces`` (traces/s, steps/s), then the
   same bundle again (every trace a duplicate of the first import);
2. ``evaluate --method heuristic`` over every labelled trace, in a child process (traces/s and its peak RSS);
3. two more finished runs (copies of the first, so the page has three to choose from);
4. the evaluation page, the export builder and its htmx preview, and the trace list: p50/p95 over ``--requests``
   requests each, as the project's owner, after one warm-up request.

Uses its own database (``culprit_scale_bench`` unless DATABASE_URL says otherwise). ``--reuse`` keeps a project
already built by an earlier run and times the pages only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/culprit_scale_bench")

import _django  # noqa: E402

PROJECT = "bench-scale"
WHO_AND_WHEN = _django.ROOT.parent / "shared" / "data" / "who_and_when"


def write_bundle(n: int, path: Path) -> int:
    """N Who&When records, cycling through the real runs; each copy gets its own name and question so no two
    traces are the same. Returns the number of steps written."""
    sources = sorted(WHO_AND_WHEN.rglob("*.json")) or sorted(
        (_django.ROOT / "tracing" / "demo_data").rglob("*.json")
    )
    documents = [json.loads(p.read_text()) for p in sources]
    steps = 0
    with path.open("w") as out:
        for i in range(n):
            doc = dict(documents[i % len(documents)])
            doc["trace_name"] = f"scale-{i:06d}"
            doc["question"] = f"{doc.get('question', '')} (variant {i // len(documents)})"
            steps += len(doc.get("history") or [])
            out.write(json.dumps(doc) + "\n")
    return steps


def import_bundle(path: Path) -> dict[str, float]:
    from django.core.management import call_command

    from tracing.models import Step, Trace

    before_traces, before_steps = Trace.objects.count(), Step.objects.count()
    start = time.perf_counter()
    call_command(
        "import_traces",
        str(path),
        project=PROJECT,
        format="whowhen-jsonl",
        json=True,
        stdout=open(os.devnull, "w"),
    )
    seconds = time.perf_counter() - start
    traces, steps = Trace.objects.count() - before_traces, Step.objects.count() - before_steps
    return {
        "seconds": round(seconds, 2),
        "traces": traces,
        "steps": steps,
        "traces_per_s": round(traces / seconds, 1),
        "steps_per_s": round(steps / seconds, 1),
    }


def evaluate_heuristic(n: int) -> dict[str, float]:
    """``evaluate`` in a child process, so its peak RSS is its own."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "evaluate", "--project", PROJECT, "--method", "heuristic", "--json"],
        cwd=_django.ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": round(seconds, 2), "traces_per_s": round(n / seconds, 1), "peak_rss_mb": round(rss_mb)}


def copy_runs(count: int) -> None:
    """Finished copies of the newest heuristic run, so the evaluation page has several runs to choose among."""
    from attribution.models import AttributionRun, Verdict

    run = AttributionRun.objects.filter(project__name=PROJECT, method="heuristic").order_by("-id").first()
    for _ in range(count):
        copy = AttributionRun.objects.get(pk=run.pk)
        copy.pk = None
        copy.save()
        verdicts = list(Verdict.objects.filter(run=run))
        for v in verdicts:
            v.pk, v.run = None, copy
        Verdict.objects.bulk_create(verdicts, batch_size=2000)


def time_pages(requests: int) -> dict[str, dict[str, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from tracing import services
    from tracing.models import LabelSource, Project

    project = Project.objects.get(name=PROJECT)
    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    services.membership_set(project=project, user=owner, role="owner")
    client = Client(HTTP_HOST="localhost")  # the settings allow 127.0.0.1 and localhost, not "testserver"
    client.force_login(owner)
    pages = {
        "evaluation": (reverse("attribution:evaluation", args=[project.slug]), {"method": "heuristic"}, {}),
        "export_builder": (f"/annotations/projects/{project.slug}/exports/", {}, {}),
        "export_preview": (
            f"/annotations/projects/{project.slug}/exports/preview/",
            {"format": "csv", "sources": list(LabelSource.values), "seed": "0", "test_percent": "20"},
            {"HTTP_HX_REQUEST": "true"},
        ),
        "trace_list": (reverse("tracing:trace_list", args=[project.slug]), {}, {}),
    }
    out = {}
    for name, (url, params, headers) in pages.items():
        start = time.perf_counter()
        response = client.get(url, params, **headers)  # the first request, with cold caches
        assert response.status_code == 200 and b"Fix the filters" not in response.content, name
        first_ms = (time.perf_counter() - start) * 1000
        timings = []
        for _ in range(requests):
            start = time.perf_counter()
            response = client.get(url, params, **headers)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, name
        out[name] = {
            "first_ms": round(first_ms, 1),
            "p50_ms": round(_django.percentile(timings, 50), 1),
            "p95_ms": round(_django.percentile(timings, 95), 1),
        }
    return out


def _progress(phase: str, figures: dict[str, float]) -> dict[str, float]:
    print(phase, json.dumps(figures), file=sys.stderr, flush=True)  # a long run shows its figures as it goes
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the project an earlier run built; time pages only"
    )
    args = parser.parse_args()
    _django.setup()
    from tracing.models import Project

    figures: dict[str, object] = {
        "machine": _django.machine(),
        "database": os.environ["DATABASE_URL"].split("@")[-1],
    }
    if not (args.reuse and Project.objects.filter(name=PROJECT).exists()):
        Project.objects.filter(name=PROJECT).delete()
        with tempfile.TemporaryDirectory() as folder:
            bundle = Path(folder) / "scale.jsonl"
            figures["bundle_steps"] = write_bundle(args.traces, bundle)
            figures["import"] = _progress("import", import_bundle(bundle))
            figures["reimport_same_bundle"] = _progress("reimport", import_bundle(bundle))
        figures["evaluate_heuristic"] = _progress("evaluate", evaluate_heuristic(args.traces))
        copy_runs(2)
    from tracing.models import Step, Trace

    figures["traces"] = Trace.objects.filter(project__name=PROJECT).count()
    figures["steps"] = Step.objects.filter(trace__project__name=PROJECT).count()
    figures["pages"] = time_pages(args.requests)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
