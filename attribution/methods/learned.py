"""The learned method: a model trained on the project's own verified labels scores every step and names the
decisive one (``attribution.learning``). Offline, and fast: features and a dot product per step.

Which model: the one the run was started with (``params["attributor"]``), else the project's default. Train one on
the project's model page or with ``python manage.py train_attributor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import MethodError, MethodResult, TraceView

if TYPE_CHECKING:
    from ..learning.model import Attributor
    from ..llm import LlmClient


class Learned:
    name = "learned"
    label = "Learned from the project's verified labels (offline)"
    needs_llm = False
    needs_attributor = True  # the service hands it the run's trained model

    def run(
        self,
        trace: TraceView,
        *,
        llm: LlmClient | None = None,
        with_ground_truth: bool = True,
        attributor: Attributor | None = None,
    ) -> MethodResult:
        if attributor is None:
            raise MethodError(
                "no trained model: train one on the project's model page (or with train_attributor) "
                "and make it the default"
            )
        return attributor.run(trace, with_ground_truth=with_ground_truth)


METHOD = Learned()
