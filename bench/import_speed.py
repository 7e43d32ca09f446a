"""Import throughput: every Who&When file (the shared collection when present, else the demo set), then one
synthetic 10,000-step trace. Prints files/s, steps/s and the per-file p50/p95. Usage: python bench/import_speed.py"""

from __future__ import annotations

import io
import json
import time

import _django

_django.setup()

from tracing import services  # noqa: E402
from tracing.models import JobStatus, Project  # noqa: E402

SHARED = _django.ROOT.parent / "shared" / "data" / "who_and_when"


def _fresh_project(name: str) -> Project:
    Project.objects.filter(name=name).delete()
    return services.project_create(name=name)


def _import(project: Project, name: str, data: bytes) -> tuple[float, int]:
    incoming = services.IncomingFile(name=name, size=len(data), open=lambda: io.BytesIO(data))
    start = time.perf_counter()
    (job,) = services.ingest_jobs_create(project=project, files=[incoming], user=None, enqueue=False)
    job = services.ingest_job_run(job_id=job.pk)
    elapsed = time.perf_counter() - start
    assert job.status == JobStatus.SUCCEEDED, job.error
    return elapsed, job.steps_total


def main() -> None:
    files = sorted(SHARED.rglob("*.json")) or sorted((_django.ROOT / "tracing" / "demo_data").rglob("*.json"))
    project = _fresh_project("bench-import")
    timings, steps = [], 0
    for path in files:
        elapsed, n = _import(project, f"{path.parent.name}/{path.name}", path.read_bytes())
        timings.append(elapsed)
        steps += n
    total = sum(timings)
    big = {
        "question": "synthetic",
        "ground_truth": "x",
        "mistake_agent": "Agent1",
        "mistake_step": "5000",
        "mistake_reason": "bench",
        "history": [
            {"role": f"Agent{i % 4}", "content": f"step {i} " + "lorem " * 60} for i in range(10_000)
        ],
    }
    big_seconds, _ = _import(_fresh_project("bench-import-big"), "big.json", json.dumps(big).encode())
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "database": _django.os.environ["DATABASE_URL"].split("@")[-1],
                "whowhen_files": len(files),
                "whowhen_steps": steps,
                "files_per_s": round(len(files) / total, 1),
                "steps_per_s": round(steps / total),
                "per_file_p50_ms": round(_django.percentile(timings, 50) * 1000, 1),
                "per_file_p95_ms": round(_django.percentile(timings, 95) * 1000, 1),
                "trace_10000_steps_import_s": round(big_seconds, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
