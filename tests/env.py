"""Loaded by pytest before Django reads its settings (``-p tests.env`` in pyproject.toml).

The suite runs against real PostgreSQL and Redis; these defaults point at the servers `make test` makes sure of.
Worker processes started by tests inherit this environment, so they share the database, broker queue and media.
"""

from __future__ import annotations

import os
import tempfile
import uuid

os.environ.setdefault("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/culprit")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
# A queue of our own, so a stray worker (or another test run) never takes this run's tasks.
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"culprit-test-{uuid.uuid4().hex[:8]}")
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="culprit-test-media-"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Playwright's sync API runs an event loop in the test thread; the ORM calls around it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# The suite makes hundreds of uploads and API calls a minute; tests/test_security.py sets the real limits it checks.
os.environ.setdefault(
    "CULPRIT_RATE_LIMITS",
    ",".join(f"{scope}=1000000/m" for scope in ("login", "login_ip", "upload", "api", "otlp")),
)
# Replay hooks and OpenAI-compatible endpoints in the suite are real servers on 127.0.0.1, which the outbound policy
# refuses outside the embedded mode; tests of the policy itself override CULPRIT_OUTBOUND_ALLOW.
os.environ.setdefault("CULPRIT_OUTBOUND_ALLOW", "127.0.0.0/8,::1,localhost")
