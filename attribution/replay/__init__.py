"""Counterfactual replay: rerun a trace with some of its steps corrected and see whether the run now succeeds.

``base`` defines the ``Replayer`` protocol every implementation follows; ``sandbox`` ships a small deterministic
multi-agent system with exact counterfactual semantics (faults are sticky to an agent's turn)."""

from .base import Budget, BudgetExhausted, Replayer, ReplayError, ReplayResult

__all__ = ["Budget", "BudgetExhausted", "ReplayError", "ReplayResult", "Replayer"]
