"""litellm (3–5 s to import) is loaded on the first call into it, not by the first page a process serves; once it
loads, the outbound guard and the log settings are in place before anything uses it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, process_env

PROBE = """
import sys, django
django.setup()
from django.test import Client
import config.urls
from attribution.methods import all_methods
all_methods()
import attribution.llm
print("loaded before use:", type(sys.modules["litellm"]).__name__ != "_LazyModule")
import litellm
litellm.Router  # the first use
print("guarded:", getattr(litellm.module_level_client, "_culprit_guarded", False))
print("quiet:", litellm.suppress_debug_info)
import logging
print("handlers:", sum(len(logging.getLogger(n).handlers) for n in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")))
"""


def test_litellm_loads_on_first_use_with_its_guard_and_quiet_logging():
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "loaded before use: False" in lines
    assert "guarded: True" in lines and "quiet: True" in lines and "handlers: 0" in lines
