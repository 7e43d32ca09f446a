"""Error-schema retrieval latency at 50,000 schemas (target p95 < 20 ms), through the `schema_benchmark` command:
cold retrievals (structured filter, in-process lexical index, similarity floor, leave-one-out material from the
database) and hot ones (the Redis cache keyed by the trace's fingerprint).

Usage: python bench/schema_retrieval.py [--schemas 50000] [--queries 200]
Needs PostgreSQL (database culprit_bench by default, see _django.py) and, for the hot figures, Redis
(CULPRIT_LLM_CACHE_URL or a redis:// CELERY_BROKER_URL)."""

from __future__ import annotations

import argparse
import io
import json

import _django

_django.setup()

from django.core.management import call_command  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schemas", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    out = io.StringIO()
    call_command("schema_benchmark", schemas=args.schemas, queries=args.queries, json=True, stdout=out)
    result = json.loads(out.getvalue()) | {
        "machine": _django.machine(),
        "target_p95_ms": 20,
        "meets_target": None,
    }
    result["meets_target"] = result["p95_ms"] < 20
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
