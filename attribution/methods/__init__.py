"""Attribution methods: one module per method, each exporting ``METHOD``. Adding one is a new module and a line in
``_MODULES``."""

from __future__ import annotations

from importlib import import_module

from .base import Method, MethodError, MethodResult, StepView, TraceView

__all__ = ["Method", "MethodError", "MethodResult", "StepView", "TraceView", "all_methods", "get_method"]

_MODULES = [
    "heuristic",
    "counterfactual",
    "all_at_once",
    "step_by_step",
    "binary_search",
    "hybrid",
    "schema_guided",
    "learned",
]


def all_methods() -> list[Method]:
    return [import_module(f"{__name__}.{module}").METHOD for module in _MODULES]


def get_method(name: str) -> Method:
    for method in all_methods():
        if method.name == name:
            return method
    known = ", ".join(m.name for m in all_methods())
    raise MethodError(f"unknown method {name!r} (known methods: {known})")
