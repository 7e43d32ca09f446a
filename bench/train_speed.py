"""How long training a learned attributor takes: 5-fold cross-validation, the inner choice of penalty and the final
fit, as ``train_attributor`` runs them, on N labelled traces (sandbox v2 injected failures plus every Who&When run,
so long real traces are in the mix). Prints seconds and traces. Usage: python bench/train_speed.py [--traces 500]"""

from __future__ import annotations

import argparse
import json
import time

import _django

_django.setup()

import _datasets  # noqa: E402

from attribution.learning.model import Example  # noqa: E402
from attribution.learning.selectors import training_examples  # noqa: E402
from attribution.learning.services import train  # noqa: E402
from attribution.replay.sandbox_v2_faults import generate_labelled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=500)
    options = parser.parse_args()
    real = [
        e
        for name in ("whowhen-hand", "whowhen-algo")
        if _datasets.files(name)
        for e in training_examples(project_ids=[_datasets.load(name).pk])
    ]
    cases = generate_labelled(max(0, options.traces - len(real) + 40), 3, "injected")
    examples = real + [
        Example(view=c.view, agent=c.agent, step=c.step, source="injected", group=c.name) for c in cases
    ]
    examples = examples[: options.traces]
    started = time.perf_counter()
    result = train(examples)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "machine": _django.machine(),
                "traces": len(examples),
                "candidate_steps": result["n_steps"],
                "seconds": round(seconds, 1),
                "cv_agent": result["cv"]["agent_accuracy"],
                "cv_step": result["cv"]["step_accuracy"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
