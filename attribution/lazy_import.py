"""A module imported on first use: ``litellm`` costs 3–5 s to import (measured 5.6 s on the 2-core bench machine),
and every web process paid that on its first request through the method registry, though most pages never call a
model. ``importlib.util.LazyLoader`` binds the name at import time and runs the module's code when an attribute is
first read; attributes set before that (``litellm.suppress_debug_info = True``) survive the load. Whatever must be
done to the real module once it exists (litellm's log handlers, the outbound guard) is an ``after`` hook: it runs
right after the module's code, before the attribute that triggered the load is returned, whoever triggers it
(``import litellm`` anywhere gets the same lazy module from ``sys.modules``)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_lock = threading.Lock()


class _ThenLoader(importlib.abc.Loader):
    """The module's own loader, then ``after(module)``; everything else (resource readers…) is the original's."""

    def __init__(self, loader: Any, after: Callable[[ModuleType], None]) -> None:
        self._loader, self._after = loader, after

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._after(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


def lazy_module(name: str, *, after: Callable[[ModuleType], None] = lambda module: None) -> ModuleType:
    """``name``, loaded when first used; ``after`` runs on the loaded module (at once if it is loaded already)."""
    with _lock:  # two threads must not both register a stand-in
        if name in sys.modules:
            module = sys.modules[name]
            after(module)
            return module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            raise ImportError(f"no module named {name!r}")
        lazy = importlib.util.LazyLoader(_ThenLoader(spec.loader, after))
        spec.loader = lazy
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        lazy.exec_module(module)
        return module
