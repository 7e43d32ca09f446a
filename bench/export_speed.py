"""Dataset export throughput and memory: builds projects of synthetic labelled traces (default 100,000 steps, as
100 traces of 1,000 steps, and the same steps as one single trace), exports each in every format with the
``export_dataset`` command in a child process, and prints rows (steps) per second and the child's peak RSS. Parquet
and CSV write one row per label, so their "rows" are the cases' steps, not what they write.

Memory must not grow with the export: the same export at a tenth of the size (10,000 steps) is run as a baseline.

Usage: python bench/export_speed.py [--steps N] [--formats whowhen-jsonl,parquet,...]"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _django

_django.setup()

import psutil  # noqa: E402

from tracing import services  # noqa: E402
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace  # noqa: E402
from tracing.models import Project, Step  # noqa: E402

AGENTS = [
    "Orchestrator (thought)",
    "Orchestrator (-> WebSurfer)",
    "WebSurfer",
    "Orchestrator (-> Coder)",
    "Coder",
]
BODY = (
    "Visited page https://example.org/item and read the table; the value in row 3 is 17. " * 6
)  # ~500 bytes
FORMATS = ["whowhen-jsonl", "whowhen-zip", "parquet", "csv"]


def steps(count: int):
    for i in range(count):
        speaker = AGENTS[i % 5]
        yield ParsedStep(
            speaker=speaker,
            agent=speaker.split(" (")[0],
            kind="message",
            content=f"step {i}: {BODY}",
            raw={"role": speaker},
        )


def project_with(name: str, traces: int, per_trace: int) -> Project:
    """The project, built once: re-runs reuse it when it already holds the asked number of steps."""
    project, _ = services.project_get_or_create(name=name)
    if Step.objects.filter(trace__project=project).count() == traces * per_trace:
        return project
    project.traces.all().delete()
    for t in range(traces):
        parsed = ParsedTrace(
            name=f"bench/{t:04d}",
            source_format="whowhen",
            steps=steps(per_trace),
            question="Synthetic benchmark run",
            ground_truth="42",
            gold=[ParsedGold(agent="WebSurfer", step=per_trace // 2 + 2, reason="synthetic")],
        )
        services.trace_create_from_parsed(project=project, upload=None, ordinal=t, parsed=parsed)
    return project


def export(project: Project, fmt: str, folder: Path) -> dict:
    out = folder / f"{project.slug}.{fmt}"
    command = [
        sys.executable,
        str(_django.ROOT / "manage.py"),
        "export_dataset",
        "--project",
        project.name,
        "--format",
        fmt,
        "--out",
        str(out),
        "--json",
    ]
    start = time.perf_counter()
    child = psutil.Popen(command, stdout=subprocess.PIPE, env=_django.os.environ.copy())
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    manifest = json.loads(child.stdout.read())
    assert child.returncode == 0
    rows = manifest["counts"]["steps_written"]
    # rows/s counts the export itself (selection, streaming, writing, rename), not the child's Django start-up.
    return {
        "format": fmt,
        "rows": rows,
        "export_seconds": manifest["seconds"],
        "wall_seconds": round(seconds, 2),
        "rows_per_s": round(rows / manifest["seconds"]),
        "peak_rss_mb": round(peak / 2**20),
        "file_mb": round(out.stat().st_size / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    args = parser.parse_args()
    datasets = [
        ("bench-export-small", 10, args.steps // 100),
        ("bench-export", 100, args.steps // 100),
        ("bench-export-one-trace", 1, args.steps),
    ]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, traces, per_trace in datasets:
            project = project_with(name, traces, per_trace)
            for fmt in args.formats.split(","):
                results.append(
                    {"dataset": f"{traces} trace(s) x {per_trace} steps"} | export(project, fmt, Path(folder))
                )
                print(json.dumps(results[-1]), file=sys.stderr)
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "database": _django.os.environ["DATABASE_URL"].split("@")[-1],
                "note": "rows are steps; wall_seconds include the child's Django start-up",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
