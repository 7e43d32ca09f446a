"""Reading the settings writes nothing to disk (a build step such as collectstatic runs them with no volume)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_the_settings_creates_no_folder(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_URL", "STATIC_ROOT")}
    env.update(CULPRIT_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="config.settings")
    subprocess.run(
        [sys.executable, "-c", "import config.settings"], cwd=ROOT, env=env, check=True, timeout=120
    )
    assert not var.exists()
