"""The labelled collections of ``../shared`` as named datasets, imported through the product's own import path.

Each dataset is a list of files (traces and the label files that go with them). ``load`` imports one into a project
of its own, once: a project that already holds the dataset's traces is reused. Used by ``bench/attribution_matrix.py``
and by the tests that train on real fixtures.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATA, DEVDATA = SHARED / "data", SHARED / "devdata"
AGENTRX_LABELS = DATA / "traces" / "agentrx" / "ground_truth" / "magentic_one_ground_truth.json"
TAU_RUNS = DATA / "traces" / "agentrx" / "tau_retail" / "tau_dataset_failed.json"
TAU_LABELS = DATA / "traces" / "agentrx" / "ground_truth" / "tau_ground_truth.json"

DATASETS = {
    "whowhen-hand": "Who&When Hand-Crafted (Magentic-One)",
    "whowhen-algo": "Who&When Algorithm-Generated (AG2)",
    "agentrx-magentic": "AgentRx Magentic-One",
    "agentrx-tau": "AgentRx tau-bench retail",
    "trail-gaia": "TRAIL GAIA (smolagents)",
    "trail-swe": "TRAIL SWE-bench (smolagents)",
}


def files(name: str) -> list[tuple[str, Path]]:
    """(upload name, path) of every file of a dataset, labels last; [] when ``../shared`` is not beside us."""
    if name == "whowhen-hand":
        return _named(sorted((DATA / "who_and_when" / "Hand-Crafted").glob("*.json")))
    if name == "whowhen-algo":
        return _named(sorted((DATA / "who_and_when" / "Algorithm-Generated").glob("*.json")))
    if name == "agentrx-magentic":
        runs = [
            p
            for root in (DATA, DEVDATA)
            for p in sorted((root / "traces" / "agentrx" / "magentic").glob("*.json"))
        ]
        return _named(runs) + (
            [("ground_truth/" + AGENTRX_LABELS.name, AGENTRX_LABELS)]
            if AGENTRX_LABELS.exists() and runs
            else []
        )
    if name == "agentrx-tau":  # 29 failed runs in one file; the user simulator is blamed in some
        return _named([TAU_RUNS, TAU_LABELS]) if TAU_RUNS.exists() and TAU_LABELS.exists() else []
    if name in ("trail-gaia", "trail-swe"):
        folder = "gaia" if name == "trail-gaia" else "swe_bench"
        paths = [
            p for root in (DATA, DEVDATA) for p in sorted((root / "traces" / "trail" / folder).glob("*.json"))
        ]
        traces = [p for p in paths if p.name.endswith(".trace.json")]
        labels = [p for p in paths if p.name.endswith(".labels.json")]
        return _named(traces) + _named(labels)
    raise KeyError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def _named(paths: list[Path]) -> list[tuple[str, Path]]:
    return [(f"{p.parent.name}/{p.name}", p) for p in paths]


def load(name: str, project_name: str = ""):
    """Import the dataset into a project called ``project_name`` (default ``dataset:<name>``), unless that project
    already holds as many traces as the dataset has trace files. Returns the project."""
    from tracing import services
    from tracing.models import JobStatus, Project

    wanted = files(name)
    project_name = project_name or f"dataset:{name}"
    project = Project.objects.filter(name=project_name).first()
    n_traces = sum(
        1 for upload, _ in wanted if "ground_truth/" not in upload and not upload.endswith(".labels.json")
    )
    if project is not None and project.traces.count() >= n_traces:
        return project
    if project is not None:
        project.delete()
    project = services.project_create(name=project_name)
    for upload, path in wanted:
        incoming = services.IncomingFile(
            name=upload, size=path.stat().st_size, open=lambda p=path: p.open("rb")
        )
        for job in services.ingest_jobs_create(project=project, files=[incoming], user=None, enqueue=False):
            if job.status == JobStatus.QUEUED:
                services.ingest_job_run(job_id=job.pk)
    return project


def dev_and_heldout(name: str) -> tuple[list, list]:
    """The dataset's labelled examples (``training_examples``), split as ``attribution.splits`` splits them: the dev
    part every choice was made on, and the held-back 30% (by a hash of each trace's identity)."""
    from attribution.learning.selectors import training_examples
    from attribution.splits import split_of
    from tracing.models import Trace

    project = load(name)
    examples = training_examples(project_ids=[project.pk])
    identity = {
        pk: split_of(source_format=fmt, external_id=external, name=trace_name)
        for pk, fmt, external, trace_name in Trace.objects.filter(project=project).values_list(
            "pk", "source_format", "external_id", "name"
        )
    }
    dev = [e for e in examples if identity.get(e.view.trace_id) == "dev"]
    held = [e for e in examples if identity.get(e.view.trace_id) == "heldout"]
    return dev, held
