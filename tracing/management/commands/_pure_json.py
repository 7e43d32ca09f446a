"""``--json`` output that is pure JSON, whatever runs inside the command.

Commands write their JSON through ``self.stdout``, which Django binds to the real stdout when the command object is
made. While a command runs with ``--json``, ``sys.stdout`` itself points at stderr, so anything else that prints
(a library's ``print``, a log handler created on the way with the stdout of the moment) lands on stderr and a script
can ``json.loads`` the command's stdout. Logging goes to stderr anyway (config/settings.py LOGGING). A command that
fails with a CommandError writes ``{"error": "..."}`` there too, and still exits non-zero.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from django.core.management.base import CommandError


class PureJsonMixin:
    """Put first among a command's bases; the command must offer ``--json``."""

    def execute(self, *args: Any, **options: Any) -> Any:
        if not options.get("json"):
            return super().execute(*args, **options)
        out = options["stdout"] = _Counted(options.get("stdout") or sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return super().execute(*args, **options)
        except CommandError as exc:
            # A script reads stdout as JSON whether the command worked or not (the exit status and stderr still say
            # it failed): a command that fails before writing its JSON writes this instead.
            if not out.written:
                out.write(json.dumps({"error": str(exc)}) + "\n")
            raise


class _Counted:
    """The command's stdout, noting whether anything was written to it."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.written = stream, False

    def write(self, text: str) -> Any:
        self.written = self.written or bool(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
