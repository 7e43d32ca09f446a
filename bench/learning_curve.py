"""Does confirming more verdicts make the next verdict better? The learned model's accuracy on each collection's
held-back part (``attribution.splits``: 30% by a hash of each trace's identity, never trained or chosen on) when it
is trained on k labelled traces of the dev part, for growing k -- what a team sees as its labels accumulate and the
default model is retrained (``learning.services.attributors_retrain_due``).

Each k is drawn ``--draws`` times (seeded) from the dev part; the figure is the mean over draws, with the range. k = 0
is the heuristic (nothing learned). The most-blamed / commonest-step baseline is fitted on the same k traces.

Prints JSON. Usage: python bench/learning_curve.py [--draws 5] [--datasets whowhen-algo,whowhen-hand,trail-gaia,agentrx-tau,sandbox-v2]\n(sandbox v2: the pool is the injected faults of other seeds, the scored set the seed's injected and natural failures).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

import _django

_django.setup()

import _datasets  # noqa: E402

from attribution.evaluation import Constants, score  # noqa: E402
from attribution.learning.cv import predict, record  # noqa: E402
from attribution.learning.model import Example, fit, prepare  # noqa: E402
from attribution.methods.heuristic import METHOD as HEURISTIC  # noqa: E402

SIZES = (0, 5, 10, 20, 40, 80, 160)


def _split(name: str) -> tuple[list[Example], list[Example]]:
    return _sandbox() if name == "sandbox-v2" else _datasets.dev_and_heldout(name)


def _sandbox(runs: int = 100, seed: int = 1) -> tuple[list[Example], list[Example]]:
    """Sandbox v2 as the attribution matrix has it: trained on injected faults of other seeds, scored on injected
    and natural failures of ``seed`` (no sandbox run is in both)."""
    from dataclasses import replace

    from attribution.management.commands.sandbox_benchmark import TRAIN_SEED_OFFSET
    from attribution.replay.sandbox_v2_faults import generate_labelled

    pool = [
        Example(view=replace(c.view, trace_id=-1 - k), agent=c.agent, step=c.step, group=c.name)
        for k, c in enumerate(generate_labelled(runs, seed + TRAIN_SEED_OFFSET, "injected"))
    ]
    cases = generate_labelled(runs, seed, "injected") + generate_labelled(runs, seed, "natural")
    scored = [
        Example(view=replace(c.view, trace_id=1 + k), agent=c.agent, step=c.step, group=c.name)
        for k, c in enumerate(cases)
    ]
    return pool, scored


def curve(name: str, draws: int, seed: int) -> dict[str, Any]:
    dev, held = _split(name)
    prepared = {id(e): p for e in dev + held if (p := prepare(e)) is not None}
    heuristic = score([record(e, predict(HEURISTIC.run, e)) for e in held])
    points = [
        {
            "k": 0,
            "agent": heuristic["agent_accuracy"],
            "step": heuristic["step_accuracy"],
            "method": "heuristic (nothing learned)",
        }
    ]
    for k in [k for k in SIZES if 0 < k <= len(dev)] + ([len(dev)] if len(dev) not in SIZES else []):
        agent, step, base_agent, base_step = [], [], [], []
        for draw in range(draws if k < len(dev) else 1):
            sample = random.Random(f"{seed}:{name}:{k}:{draw}").sample(dev, k)
            usable = [e for e in sample if id(e) in prepared]
            model = fit(usable, prepared=[prepared[id(e)] for e in usable])
            figures = score(
                [
                    record(
                        e, model.run(e.view, features=prepared[id(e)].features) if id(e) in prepared else None
                    )
                    for e in held
                ]
            )
            agent.append(figures["agent_accuracy"])
            step.append(figures["step_accuracy"])
            constants = Constants.fit([record(e, None) for e in sample])
            base_agent.append(sum(e.agent == constants.agent for e in held) / len(held))
            base_step.append(sum(e.step == constants.step for e in held) / len(held))
        points.append(
            {
                "k": k,
                "agent": round(statistics.mean(agent), 4),
                "step": round(statistics.mean(step), 4),
                "agent_range": [min(agent), max(agent)],
                "step_range": [min(step), max(step)],
                "majority_agent": round(statistics.mean(base_agent), 4),
                "commonest_step": round(statistics.mean(base_step), 4),
                "draws": len(agent),
            }
        )
    label = (
        "Sandbox v2 (trained on other seeds' injected faults)"
        if name == "sandbox-v2"
        else _datasets.DATASETS[name]
    )
    return {"label": label, "n_dev": len(dev), "n_heldout": len(held), "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default="whowhen-algo,whowhen-hand,trail-gaia,agentrx-tau,sandbox-v2")
    args = parser.parse_args()
    started = time.perf_counter()
    out = {
        "machine": _django.machine(),
        "draws": args.draws,
        "datasets": {name: curve(name, args.draws, args.seed) for name in args.datasets.split(",") if name},
    }
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
