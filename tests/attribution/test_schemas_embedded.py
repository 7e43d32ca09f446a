"""Embedded mode (SQLite, no Redis): the schema cache migrates and retrieves without PostgreSQL's full-text column
and without a hot cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, embedded_env

pytestmark = pytest.mark.embedded


def test_schema_retrieval_works_on_sqlite_without_redis(tmp_path):
    env = embedded_env(tmp_path)

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
