"""Attribution that learns from a project's own verified labels: step features, a conditional-logit model stored
as plain arrays, grouped cross-validation, and the heuristic's priors calibrated per project."""

from .model import Attributor, Example, ModelFormatError, fit

__all__ = ["Attributor", "Example", "ModelFormatError", "fit"]
