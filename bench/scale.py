"""Team scale (issue 19): a project of N traces made by varying the real Who&When runs, then the figures that grow
with it. Prints one JSON object.

    python bench/scale.py [--traces 20000] [--requests 20] [--reuse] [--import-only]

1. import: the N traces as one Who&When JSON Lines bundle through ``import_traces`` (traces/s, steps/s), then the
   search documents of the new steps (``search_index``: what the indexer task does after the import commits), then
   the same bundle again (every trace a duplicate of the first import), then ``VACUUM ANALYZE`` (what autovacuum
   does a few minutes later, done at once so the timings after it do not depend on when it runs);
2. ``evaluate --method heuristic`` over every labelled trace, in a child process (traces/s and its peak RSS), then
   the same run through 1 and 2 Celery worker processes (solo pool, ``--celery``; needs a Redis CELERY_BROKER_URL):
   traces/s from the enqueue to the run's success, after a warm-up run;
3. two more finished runs (copies of the first, so the page has three to choose from);
4. the evaluation page, the export builder and its htmx preview, the trace list and its content search (``SEARCHES``,
   a rare word to one in every trace): p50/p95 over ``--requests`` requests each, as the project's owner, after
   one warm-up request.

Uses its own database (``culprit_scale_bench`` unless DATABASE_URL says otherwise). ``--reuse`` keeps a project
already built by an earlier run and times the pages only (``--reuse --attribution``: the heuristic runs only).
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
# The trace list's content search (issue 16), by how many steps of the 5,000-trace project (112,509 steps) match:
# "excel" 859 steps in 285 traces, "python" 12,105 in 4,303, "the" 84,772 in every trace.
SEARCHES = {"excel": "rare", "python": "frequent", "the": "everywhere"}


# Traces per bundle file: 5,000 Who&When runs are ~170 MB, under the default 256 MB upload limit
# (CULPRIT_MAX_UPLOAD_BYTES); 20,000 or 100,000 traces are written as several files imported in one command.
TRACES_PER_FILE = 5_000


def write_bundles(n: int, folder: Path) -> tuple[list[Path], int]:
    """N traces as JSON Lines files of at most ``TRACES_PER_FILE`` each; the files and the number of steps."""
    paths, steps = [], 0
    for k, start in enumerate(range(0, n, TRACES_PER_FILE)):
        path = folder / f"scale-{k:03d}.jsonl"
        steps += write_bundle(min(TRACES_PER_FILE, n - start), path, offset=start)
        paths.append(path)
    return paths, steps


def write_bundle(n: int, path: Path, offset: int = 0) -> int:
    """N Who&When records, cycling through the real runs; each copy gets its own name and question so no two
    traces are the same (``offset``: the first copy's number). Returns the number of steps written."""
    sources = sorted(WHO_AND_WHEN.rglob("*.json")) or sorted(
        (_django.ROOT / "tracing" / "demo_data").rglob("*.json")
    )
    documents = [json.loads(p.read_text()) for p in sources]
    steps = 0
    with path.open("w") as out:
        for i in range(offset, offset + n):
            doc = dict(documents[i % len(documents)])
            doc["trace_name"] = f"scale-{i:06d}"
            doc["question"] = f"{doc.get('question', '')} (variant {i // len(documents)})"
            steps += len(doc.get("history") or [])
            out.write(json.dumps(doc) + "\n")
    return steps


def import_bundle(paths: list[Path]) -> dict[str, float]:
    from django.core.management import call_command

    from tracing.models import Step, Trace

    before_traces, before_steps = Trace.objects.count(), Step.objects.count()
    start = time.perf_counter()
    call_command(
        "import_traces",
        *[str(p) for p in paths],
        project=PROJECT,
        format="whowhen-jsonl",
        json=True,
        stdout=open(os.devnull, "w"),
    )
    seconds = time.perf_counter() - start
    traces, steps = Trace.objects.count() - before_traces, Step.objects.count() - before_steps
    figures = {
        "seconds": round(seconds, 2),
        "traces": traces,
        "steps": steps,
        "traces_per_s": round(traces / seconds, 1),
        "steps_per_s": round(steps / seconds, 1),
    }
    figures["search_index"] = search_index()
    return figures


def search_index() -> dict[str, float]:
    """The search documents of what was just imported, written as the indexer task does after the import commits
    (here in-process, so the time is its own): searches are exact before it ends, only slower."""
    from tracing.services import search_index_pending

    start = time.perf_counter()
    steps = search_index_pending()
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "steps": steps, "steps_per_s": round(steps / max(seconds, 1e-9), 1)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def vacuum_analyze() -> dict[str, float]:
    """What autovacuum does minutes after a bulk import, done at once so the figures after it do not depend on when
    it runs: statistics for the planner, and the visibility map index-only counts need. Before it, at 100,000
    traces, the trace list took 760 ms (counts reading every row's heap page) instead of 104 ms."""
    from django.db import connection

    started = time.perf_counter()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return {"seconds": round(time.perf_counter() - started, 1)}


def evaluate_heuristic(n: int) -> dict[str, float]:
    """``evaluate`` in a child process, so its peak RSS and its CPU time are its own. On a machine shared with other
    work the wall-clock rate says how busy the machine was as much as how fast the code is: ``traces_per_cpu_s``
    (traces per second of the process's own CPU time, start-up included) is the figure that compares across runs."""
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(
        [sys.executable, "manage.py", "evaluate", "--project", PROJECT, "--method", "heuristic", "--json"],
        cwd=_django.ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "seconds": round(seconds, 2),
        "traces_per_s": round(n / seconds, 1),
        "cpu_seconds": round(cpu, 2),
        "traces_per_cpu_s": round(n / cpu, 1),
        "peak_rss_mb": round(rss_mb),
    }


CELERY_QUEUE = "scale-bench"
# A first small run, so the workers have connected and imported everything before the clock starts.
WARM_UP_TRACES = 16


def celery_heuristic(workers: int) -> dict[str, float]:
    """A heuristic run of every trace of the project through ``workers`` Celery processes (solo pool, each one core
    at most): traces/s from the enqueue of ``start_run_task`` to the run's success, and the workers' peak RSS."""
    import psutil

    from attribution import services
    from attribution.tasks import start_run_task
    from tracing.models import Project, Trace

    project = Project.objects.get(name=PROJECT)
    ids = list(Trace.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    env = os.environ | {"CELERY_TASK_DEFAULT_QUEUE": CELERY_QUEUE, "PYTHONPATH": str(_django.ROOT)}
    procs = [
        subprocess.Popen(
            _django.celery_worker_argv(queue=CELERY_QUEUE, hostname=f"scalebench{i}@%h"),
            cwd=_django.ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    peaks: dict[int, int] = {}

    def run_through(trace_ids: list[int]) -> float:
        run = services.run_create(project=project, method="heuristic", trace_ids=trace_ids, enqueue=False)
        start = time.perf_counter()
        start_run_task.apply_async((run.pk,), queue=CELERY_QUEUE)
        while True:
            run.refresh_from_db(fields=["status", "done"])
            if run.status not in ("queued", "running"):
                break
            for proc in procs:
                try:
                    peaks[proc.pid] = max(peaks.get(proc.pid, 0), psutil.Process(proc.pid).memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.05)
        assert run.status == "succeeded" and run.done == len(trace_ids), (run.status, run.done)
        return time.perf_counter() - start

    def cpu() -> float:
        return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)

    try:
        run_through(ids[:WARM_UP_TRACES])
        before = cpu()
        seconds = run_through(ids)
        cpu_seconds = cpu() - before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "traces_per_s": round(len(ids) / seconds, 1),
        "traces_per_s_per_worker": round(len(ids) / seconds / workers, 1),
        "cpu_seconds": round(cpu_seconds, 2),
        "traces_per_cpu_s": round(len(ids) / cpu_seconds, 1),  # per second of the workers' own CPU time
        "peak_rss_mb": round(max(peaks.values(), default=0) / 2**20),
    }


def celery_figures(counts: str) -> dict[str, object]:
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis"):
        return {"skipped": "set CELERY_BROKER_URL to a Redis database"}
    out: dict[str, object] = {}
    for workers in (int(c) for c in counts.split(",") if c.strip() and int(c) > 0):
        out[f"workers_{workers}"] = _progress(f"celery x{workers}", celery_heuristic(workers))
    if "workers_1" in out and "workers_2" in out:
        out["speed_up_2_over_1"] = round(
            out["workers_2"]["traces_per_s"] / out["workers_1"]["traces_per_s"], 2
        )
    return out


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
        **{
            f"trace_list_search_{label}": (reverse("tracing:trace_list", args=[project.slug]), {"q": q}, {})
            for q, label in SEARCHES.items()
        },
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
    parser.add_argument(
        "--import-only", action="store_true", help="stop after the two imports (issue 19's import figures)"
    )
    parser.add_argument(
        "--celery",
        default="1,2",
        help="Celery worker counts to time the heuristic with, e.g. 1,2 ('0': none)",
    )
    parser.add_argument(
        "--attribution",
        action="store_true",
        help="with --reuse: time the heuristic runs instead of the pages",
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
        vacuum_analyze()  # the rows of an earlier run's project (autovacuum may be off, or not have run yet)
        with tempfile.TemporaryDirectory() as folder:
            bundles, figures["bundle_steps"] = write_bundles(args.traces, Path(folder))
            figures["import"] = _progress("import", import_bundle(bundles))
            figures["reimport_same_bundle"] = _progress("reimport", import_bundle(bundles))
        if args.import_only:
            print(json.dumps(figures, indent=2))
            return
        figures["vacuum_analyze_s"] = _progress("vacuum", vacuum_analyze())
        figures["evaluate_heuristic"] = _progress("evaluate", evaluate_heuristic(args.traces))
        figures["celery_heuristic"] = celery_figures(args.celery)
        copy_runs(2)
    elif args.attribution:
        traces = Project.objects.get(name=PROJECT).traces.count()
        figures["evaluate_heuristic"] = _progress("evaluate", evaluate_heuristic(traces))
        figures["celery_heuristic"] = celery_figures(args.celery)
        print(json.dumps(figures, indent=2))
        return
    from tracing.models import Step, Trace

    figures["traces"] = Trace.objects.filter(project__name=PROJECT).count()
    figures["steps"] = Step.objects.filter(trace__project__name=PROJECT).count()
    figures["pages"] = time_pages(args.requests)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
