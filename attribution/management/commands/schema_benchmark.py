"""Retrieval latency of the error-schema cache at scale: fills a project with N synthetic trusted schemas (two
exemplars each, like real ones) and times Q retrievals of synthetic trace queries, cold (hot cache bypassed: the
structured filter, the lexical index, the floor, the schema cards from the database), warm (fingerprints not seen
before, cards from the Redis card store) and hot (the same queries again, whole answers from Redis). The in-process
index is built once before timing (its build time is printed apart: it is paid once per process and schema change,
not per retrieval).

It writes: the project ``schema-benchmark-N`` and its N schemas go into the configured database (``DATABASE_URL``),
and stay there for the next run. The largest documented run is 50,000 schemas (docs/schemas.md); at most
``MAX_SCHEMAS``."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from attribution.methods.heuristic import WEIGHTS
from attribution.models import ErrorSchema, SchemaExemplar, SchemaStatus
from attribution.schemas import features, index
from tracing import services as tracing_services
from tracing.management.commands._arguments import check_options, whole
from tracing.management.commands._pure_json import PureJsonMixin
from tracing.models import Project, Trace

ROLES = ["worker", "planner-message", "planner-thought"]
KINDS = ["message", "thought", "tool_call", "llm_call"]
EXCEPTIONS = [
    "valueerror",
    "keyerror",
    "modulenotfounderror",
    "timeouterror",
    "typeerror",
    "indexerror",
    "attributeerror",
    "filenotfounderror",
    "connectionerror",
    "httperror",
]
BATCH = 2000
MAX_SCHEMAS = 100_000  # twice the largest documented run (50,000, docs/schemas.md)
MAX_QUERIES = 10_000


CHECKED: dict[str, Callable[[Any], int]] = {
    "schemas": whole(1, MAX_SCHEMAS),
    "queries": whole(1, MAX_QUERIES),
}


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Time error-schema retrieval over N synthetic schemas; prints p50_ms and p95_ms (target p95 < 20 ms). "
        "Writes into the configured database: a project named schema-benchmark-N with N synthetic schemas (kept, "
        "and reused by the next run of the same size)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--schemas",
            type=CHECKED["schemas"],
            default=50_000,
            help=f"synthetic schemas written to the database (1 to {MAX_SCHEMAS:,}; default 50,000)",
        )
        parser.add_argument(
            "--queries", type=CHECKED["queries"], default=200, help=f"timed retrievals (1 to {MAX_QUERIES:,})"
        )
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        check_options(options, CHECKED)  # again for call_command's keyword options, which skip ``type``
        rng = random.Random(options["seed"])
        project = self._filled(options["schemas"], rng)
        queries = [_query(rng) for _ in range(options["queries"])]
        _forget_cards(project)
        started = time.perf_counter()
        index.lexical_index(project.pk)  # built once per process and schema change; reported apart
        build_ms = round((time.perf_counter() - started) * 1000, 1)
        # Cold: nothing cached but the index (cards read from the database). Warm: a trace never seen before whose
        # schemas were retrieved before (cards from the Redis card store). Hot: the same trace again (fingerprint).
        cold = [_timed(project.pk, q, use_cache=False) for q in queries]
        index.lexical_index(project.pk)._cards.clear()  # the in-process memo would hide the card store
        warm = [_timed(project.pk, q, use_cache=False) for q in queries]
        hot = []
        if index.hot_cache() is not None:
            for q in queries:
                _timed(project.pk, q, use_cache=True)  # fill
            hot = [_timed(project.pk, q, use_cache=True) for q in queries]
        result = {
            "schemas": ErrorSchema.objects.filter(project=project).count(),
            "queries": len(queries),
            "p50_ms": _pct(cold, 50),
            "p95_ms": _pct(cold, 95),
            "max_ms": round(max(cold), 2),
            "warm_p50_ms": _pct(warm, 50),
            "warm_p95_ms": _pct(warm, 95),
            "hot_p50_ms": _pct(hot, 50) if hot else None,
            "hot_p95_ms": _pct(hot, 95) if hot else None,
            "index_build_ms": build_ms,
            "mean_found": round(statistics.mean(_found(project.pk, q) for q in queries[:50]), 2),
        }
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
        else:
            self.stdout.write(" ".join(f"{k}={v}" for k, v in result.items()))

    def _filled(self, n: int, rng: random.Random) -> Project:
        """The benchmark project, topped up to ``n`` schemas (re-runs reuse what is there)."""
        project, _ = tracing_services.project_get_or_create(name=f"schema-benchmark-{n}")
        traces = list(Trace.objects.filter(project=project)[:20])
        if not traces:
            traces = [
                Trace.objects.create(project=project, name=f"synthetic/{i}", source_format="synthetic")
                for i in range(20)
            ]
        have = ErrorSchema.objects.filter(project=project).count()
        for start in range(have, n, BATCH):
            with transaction.atomic():
                rows = [_schema(project, i, rng) for i in range(start, min(n, start + BATCH))]
                ErrorSchema.objects.bulk_create(rows)
                created = ErrorSchema.objects.filter(project=project, key__in=[r.key for r in rows])
                SchemaExemplar.objects.bulk_create(
                    SchemaExemplar(
                        schema=s,
                        trace=traces[(s.pk + k) % len(traces)],
                        step_index=k,
                        agent_name="agent",
                        source="injected",
                        independence=f"trace:{s.pk}-{k}",
                        features=s.signature | {"signals": s.detection["signals"], "rank": k},
                    )
                    for s in created
                    for k in range(2)
                )
        if have < n:
            _analyze()
        index.bump_generation(project.pk)
        return project


def _forget_cards(project: Project) -> None:
    """A cold start: a new generation, and no card of this project's schemas in the card store."""
    cache = index.hot_cache()
    if cache is None:
        return
    keys = [
        index.key("card", pk)
        for pk in ErrorSchema.objects.filter(project=project).values_list("pk", flat=True)
    ]
    for start in range(0, len(keys), 5000):
        cache.delete(*keys[start : start + 5000])
    index.bump_generation(project.pk)


def _analyze() -> None:
    """Fresh planner statistics after a bulk fill: with stale ones PostgreSQL plans the exemplar lookup as a parallel
    scan for thousands of rows, and pays ~30 ms of worker start-up for 16 (measured)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE attribution_errorschema")
            cursor.execute("ANALYZE attribution_schemaexemplar")


def _case(rng: random.Random) -> dict[str, Any]:
    signals = rng.sample(sorted(WEIGHTS), rng.randint(0, 3))
    phrases = rng.sample(sorted(features.LEXICON), rng.randint(0, 3)) + rng.sample(
        EXCEPTIONS, rng.randint(0, 1)
    )
    return {
        "style": rng.choice(["group", "orchestrated"]),
        "role": rng.choice(ROLES),
        "rank": rng.randint(0, 4),
        "kind": rng.choice(KINDS),
        "agent": f"agent{rng.randint(0, 300)}" if rng.random() < 0.5 else "",
        "signals": signals,
        "primary": features.primary_signal(signals),
        "phrases": phrases,
        "around": [rng.choice(KINDS) for _ in range(3)],
        "source_format": "synthetic",
        "step": 0,
        "steps": 10,
    }


def _schema(project: Project, i: int, rng: random.Random) -> ErrorSchema:
    built = features.aggregate([_case(rng)])
    return ErrorSchema(
        project=project,
        key=f"synthetic|{i}",
        title=built["title"],
        category=built["category"],
        style=built["style"],
        signature=built["signature"],
        detection=built["detection"],
        context=built["context"],
        detection_text=built["detection_text"],
        search_text=built["search_text"],
        status=SchemaStatus.TRUSTED,
        distilled_by="benchmark",
    )


def _query(rng: random.Random) -> features.Query:
    """A trace's terms: a few dozen steps' worth of tags and phrases, as ``features.query_of`` builds them."""
    terms = set()
    for _ in range(rng.randint(5, 30)):
        case = _case(rng)
        terms.update(
            [
                f"role{case['role'].replace('-', '')}",
                f"kind{case['kind'].replace('_', '')}",
                f"primary{case['primary'].replace('_', '')}",
            ]
        )
        terms.update(f"sig{s.replace('_', '')}" for s in case["signals"])
        terms.update(case["phrases"])
        if case["agent"]:
            terms.add(f"agent{case['agent']}")
    return features.Query(style=rng.choice(["group", "orchestrated"]), terms=tuple(sorted(terms)))


def _timed(project_id: int, query: features.Query, *, use_cache: bool) -> float:
    started = time.perf_counter()
    index.retrieve(project_id=project_id, query=query, use_cache=use_cache)
    return (time.perf_counter() - started) * 1000


def _found(project_id: int, query: features.Query) -> int:
    return len(index.retrieve(project_id=project_id, query=query, use_cache=False)[0])


def _pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 2)
