"""Import throughput and memory for one big trace: writes a synthetic Who&When file with N steps (default 100,000,
~60 MB) to disk, imports it through the same job path the worker runs, and prints steps/s and peak RSS.

Usage: python bench/ingest.py [--steps N] [--format whowhen|openai-chat-jsonl]"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import _django

_django.setup()

from tracing import services  # noqa: E402
from tracing.models import JobStatus, Project  # noqa: E402

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


def write_whowhen(path: Path, steps: int) -> None:
    # Written message by message so generating the file costs no memory worth measuring.
    with path.open("w") as out:
        out.write('{"question": "Synthetic benchmark run", "ground_truth": "42", "history": [')
        for i in range(steps):
            out.write(
                ("," if i else "") + json.dumps({"content": f"step {i}: {BODY}", "role": AGENTS[i % 5]})
            )
        out.write(
            f'], "mistake_agent": "WebSurfer", "mistake_step": "{steps // 2 + 2}", '
            '"mistake_reason": "synthetic"}'
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args()
    Project.objects.filter(name="bench-ingest").delete()
    project = services.project_create(name="bench-ingest")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.json"
        write_whowhen(path, args.steps)
        size = path.stat().st_size
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        incoming = services.IncomingFile(name="big.json", size=size, open=lambda: path.open("rb"))
        start = time.perf_counter()
        (job,) = services.ingest_jobs_create(project=project, files=[incoming], user=None, enqueue=False)
        job = services.ingest_job_run(job_id=job.pk)
        seconds = time.perf_counter() - start
    assert job.status == JobStatus.SUCCEEDED, job.error
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "database": _django.os.environ["DATABASE_URL"].split("@")[-1],
                "steps": args.steps,
                "file_mb": round(size / 1e6, 1),
                "seconds": round(seconds, 2),
                "steps_per_s": round(args.steps / seconds),
                "peak_rss_mb": round(peak / 1024),
                "rss_before_import_mb": round(rss_before / 1024),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
