"""``--json`` output that is pure JSON, whatever runs inside the command.

Commands write their JSON through ``self.stdout``, which Django binds to the real stdout when the command object is
made. While a command runs with ``--json``, ``sys.stdout`` itself points at stderr, so anything else that prints
(a library's ``print``, a log handler created on the way with the stdout of the moment) lands on stderr and a script
can ``json.loads`` the command's stdout. Logging goes to stderr anyway (config/settings.py LOGGING).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any


class PureJsonMixin:
    """Put first among a command's bases; the command must offer ``--json``."""

    def execute(self, *args: Any, **options: Any) -> Any:
        if not options.get("json"):
            return super().execute(*args, **options)
        with contextlib.redirect_stdout(sys.stderr):
            return super().execute(*args, **options)
