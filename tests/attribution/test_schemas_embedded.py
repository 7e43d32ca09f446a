"""Embedded mode (SQLite, no Redis): the schema cache migrates and retrieves without PostgreSQL's full-text column
and without a hot cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.embedded


def test_schema_retrieval_works_on_sqlite_without_redis(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "MEDIA_ROOT", "CULPRIT_LLM_CACHE_URL")
    }
    env["CULPRIT_VAR_DIR"] = str(tmp_path / "var")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert run("migrate", "--noinput", "-v0").returncode == 0
    bench = run("schema_benchmark", "--schemas", "400", "--queries", "10", "--json")
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert result["schemas"] == 400 and result["mean_found"] > 0
    assert result["hot_p95_ms"] is None  # no Redis in embedded mode: no hot cache, and nothing breaks
