"""Attribution accuracy, measured: datasets × methods × baselines, each figure with its Wilson 95% interval.

Datasets: Who&When Hand-Crafted and Algorithm-Generated, AgentRx Magentic-One and tau-bench retail, TRAIL GAIA and
SWE-bench (from ``../shared/data`` and ``../shared/devdata``, imported through the product's own import path), and
sandbox v2.

- ``heuristic``: the built-in priors, nothing fitted;
- ``heuristic (calibrated)``: priors refit from the training folds' labels (``attribution.learning.calibration``);
- ``learned``: the conditional-logit attributor trained on the training folds;
- ``schema_guided``: the error-schema cache, distilled from the dataset's labels and applied leave-one-out;
- ``counterfactual``: sandbox v2 only (a real replayer exists only there);
- baselines: most blamed agent / commonest step fitted on the training folds, first and last agent action, random
  acting agent and random ever-blamed agent.

Real datasets use 5-fold cross-validation grouped by trace; sandbox v2 trains on injected cases of other seeds than
the scored ones. ``injected_only`` answers the AgenTracer question: a model trained only on fault-injected cases,
scored on real failures (sandbox v2 natural failures; Who&When runs, trained on Who&When runs perturbed by
``attribution/replay/perturb.py`` grouped away from the scored runs).

Prints JSON; writes ``bench/results/attribution_matrix.{json,svg}``; ``--update-readme`` rewrites the results block
of ``docs/attribution.md`` (the README's headline table quotes it; tests/test_docs.py checks they agree).
Usage: python bench/attribution_matrix.py [--folds 5] [--update-readme] [--heldout-only | --dev-only]
"""

from __future__ import annotations

import argparse
import html
import json
import random
import time
from typing import Any

import _django

_django.setup()

import _datasets  # noqa: E402

from attribution import services  # noqa: E402
from attribution.evaluation import baselines, score  # noqa: E402
from attribution.learning.calibration import Calibration  # noqa: E402
from attribution.learning.cv import cross_validate, predict, record  # noqa: E402
from attribution.learning.model import Example, fit, prepare  # noqa: E402
from attribution.learning.selectors import training_examples  # noqa: E402
from attribution.methods.heuristic import METHOD as HEURISTIC  # noqa: E402
from attribution.methods.learned import METHOD as LEARNED  # noqa: E402
from attribution.selectors import evaluation_records  # noqa: E402

RESULTS = _django.ROOT / "bench" / "results"
# The page that holds the matrix between its markers (it lived in README.md until the README became a map).
RESULTS_PAGE = _django.ROOT / "docs" / "attribution.md"
METHODS = ("heuristic", "heuristic (calibrated)", "learned", "schema_guided", "counterfactual")
BASELINES = {
    "majority": "most blamed / commonest step",
    "first": "first agent action",
    "last": "last agent action",
    "random": "random acting agent",
    "random_blamed": "random ever-blamed agent",
}


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": result["n"],
        "agent": result["agent_accuracy"],
        "step": result["step_accuracy"],
        "agent_ci": result["intervals"]["agent"],
        "step_ci": result["intervals"]["step"],
    }


class _Features:
    """Features once per trace, shared by every fold's fit and prediction."""

    def __init__(self) -> None:
        self.cache: dict[int, Any] = {}

    def prepared(self, e: Example):
        key = id(e.view)
        if key not in self.cache:
            self.cache[key] = prepare(e)
        return self.cache[key]

    def learned(self, train: list[Example]):
        model = fit(train, prepared=[p for e in train if (p := self.prepared(e)) is not None])
        by_view = {id(e.view): self.cache.get(id(e.view)) for e in train}

        def predict(view):
            cached = self.cache.get(id(view)) or by_view.get(id(view))
            return (
                LEARNED.run(view, attributor=model)
                if cached is None
                else model.run(view, features=cached.features)
            )

        return predict


def calibrated(train: list[Example]):
    calibration = Calibration.fit((e.view, e.step) for e in train)
    return lambda view: HEURISTIC.run(view, calibration=calibration)


def built_in(train: list[Example]):
    return lambda view: HEURISTIC.run(view)


def learners() -> dict[str, Any]:
    """The methods every real collection is scored with, by name: the built-in heuristic, the heuristic calibrated on
    the training labels, and the learned model (features computed once per trace across folds)."""
    return {"heuristic": built_in, "heuristic (calibrated)": calibrated, "learned": _Features().learned}


def real_dataset(name: str, folds: int) -> dict[str, Any]:
    project = _datasets.load(name)
    examples = training_examples(project_ids=[project.pk])
    started = time.perf_counter()
    cv = cross_validate(examples, learners(), k=folds)
    methods = {m: _figures(r) for m, r in cv["methods"].items()}
    methods["schema_guided"] = _schema_guided(project)
    return {
        "label": _datasets.DATASETS[name],
        "n": len(examples),
        "folds": cv["folds"],
        "methods": methods,
        "baselines": cv["methods"]["learned"]["baselines"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def heldout_dataset(name: str) -> dict[str, Any]:
    """The held-back part of a collection (``attribution.splits``: 30% by a hash of each trace's identity), scored
    once by methods and baselines fitted on its dev part only: the figures nothing was ever chosen on."""
    dev, held = _datasets.dev_and_heldout(name)
    out: dict[str, Any] = {
        "label": _datasets.DATASETS[name],
        "n_dev": len(dev),
        "n": len(held),
        "methods": {},
    }
    for method, fitter in learners().items():
        predictor = fitter(dev)
        out["methods"][method] = _figures(score([record(e, predict(predictor, e)) for e in held]))
    out["baselines"] = baselines([record(e, None) for e in held], [record(e, None) for e in dev])
    return out


def dev_dataset(name: str, folds: int) -> dict[str, Any]:
    """The dev part of a collection only, cross-validated the way ``real_dataset`` does the whole: where a change
    to a method is measured before the held-back part is run once."""
    dev, _ = _datasets.dev_and_heldout(name)
    cv = cross_validate(dev, learners(), k=folds)
    return {
        "label": _datasets.DATASETS[name],
        "n": len(dev),
        "methods": {m: _figures(r) for m, r in cv["methods"].items()},
        "baselines": cv["methods"]["learned"]["baselines"],
    }


def _schema_guided(project) -> dict[str, Any]:
    """Distilled from every verified label of the dataset, applied to each trace without its own cases."""
    from attribution.schemas.services import schemas_distill
    from attribution.selectors import labelled_trace_ids

    schemas_distill(project=project)
    ids = labelled_trace_ids(project=project)
    run = services.run_create(
        project=project,
        method="schema_guided",
        trace_ids=ids,
        enqueue=False,
        description="attribution matrix",
    )
    run = services.run_execute_inline(run=run)
    return _figures(score(evaluation_records(run=run)))


def sandbox_v2(runs: int, seed: int) -> dict[str, Any]:
    from attribution.management.commands.sandbox_benchmark import TRAIN_SEED_OFFSET, benchmark_v2
    from attribution.replay.sandbox_v2_faults import generate_labelled

    bench = benchmark_v2(runs, seed)
    cases = generate_labelled(runs, seed, "injected") + generate_labelled(runs, seed, "natural")
    from dataclasses import replace

    # Sandbox views carry no database id; the calibration counts labels by trace id, so each gets its own.
    train = [
        Example(
            view=replace(c.view, trace_id=-1 - k), agent=c.agent, step=c.step, source="injected", group=c.name
        )
        for k, c in enumerate(generate_labelled(runs, seed + TRAIN_SEED_OFFSET, "injected"))
    ]
    scored = [
        Example(view=replace(c.view, trace_id=1 + k), agent=c.agent, step=c.step, group=c.name)
        for k, c in enumerate(cases)
    ]
    calibration = Calibration.fit((e.view, e.step) for e in train)
    records = [record(e, HEURISTIC.run(e.view, calibration=calibration)) for e in scored]

    def pick(figures: dict[str, Any], n: int = bench["cases"]) -> dict[str, Any]:
        return {
            "n": n,
            "agent": figures["agent_accuracy"],
            "step": figures["step_accuracy"],
            "agent_ci": figures["agent_ci"],
            "step_ci": figures["step_ci"],
        }

    train_records = [record(e, None) for e in train]
    methods = {
        "heuristic": pick(bench["heuristic"]),
        "heuristic (calibrated)": _figures(score(records)),
        "learned": pick(bench["learned"]),
        "counterfactual": pick(bench["counterfactual"]),
    }
    methods["counterfactual"]["mean_replays"] = bench["counterfactual"]["mean_replays"]
    methods["counterfactual"]["replay_target"] = bench["replay_target"]
    methods["counterfactual"]["scan_mean_replays"] = bench["scan_mean_replays"]
    return {
        "label": "Sandbox v2 (injected + natural failures)",
        "n": bench["cases"],
        "folds": 0,
        "training": bench["training"],
        "methods": methods,
        "baselines": baselines([record(e, None) for e in scored], train_records),
        "natural_only": {
            name: pick(bench["by_mode"]["natural"][key], bench["by_mode"]["natural"]["cases"])
            for name, key in (("learned (trained on injected)", "learned"), ("heuristic", "heuristic"))
        },
    }


def injected_only_whowhen(folds: int, seed: int = 0) -> dict[str, Any]:
    """Train on Who&When runs perturbed by perturb.py (the label: the perturbed step, placed before the run's own
    decisive error so it is the earliest one), score on real Who&When labels; folds by run, so a model never
    trains on a perturbation of a run it scores."""
    from dataclasses import replace

    from attribution.replay.perturb import Perturber, applicable, is_action

    examples = [
        e
        for name in ("whowhen-hand", "whowhen-algo")
        for e in training_examples(project_ids=[_datasets.load(name).pk])
    ]
    perturber = Perturber()
    rng = random.Random(seed)
    injected: dict[str, list[Example]] = {}
    for e in examples:
        options = [
            (s.index, kind) for s in e.view.steps[: e.step] if is_action(s) for kind in applicable(e.view, s)
        ]
        for index, kind in rng.sample(options, min(3, len(options))):
            steps = list(e.view.steps)
            steps[index] = replace(steps[index], content=perturber.write(e.view, index, kind))
            view = replace(e.view, steps=tuple(steps), trace_id=-len(injected) - 1)
            injected.setdefault(e.group, []).append(
                Example(view=view, agent=steps[index].agent, step=index, source="injected", group=e.group)
            )
    features = _Features()

    def trained_on_injected(train: list[Example]):
        cases = [c for e in train for c in injected.get(e.group, [])]
        return features.learned(cases)

    cv = cross_validate(
        examples,
        {
            "learned (injected only)": trained_on_injected,
            "learned (real labels)": features.learned,
            "heuristic": built_in,
        },
        k=folds,
    )
    return {
        "label": "Who&When (Hand + Algo), real labels",
        "n": len(examples),
        "injected_cases": sum(len(v) for v in injected.values()),
        "methods": {m: _figures(r) for m, r in cv["methods"].items()},
        "baselines": cv["methods"]["heuristic"]["baselines"],
    }


# --- output ----------------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(matrix: dict[str, Any]) -> str:
    lines = [
        f"Measured by `python bench/attribution_matrix.py` on {matrix['machine']} ({matrix['date']}); "
        f"agent / step accuracy in %, 95% Wilson interval in brackets. Real datasets: {matrix['folds']}-fold "
        "cross-validation grouped by trace; every baseline is fitted on the training folds only.",
        "",
        "| dataset (n) | " + " | ".join(METHODS) + " | best baseline (agent) | best baseline (step) |",
        "|---|" + "---|" * (len(METHODS) + 2),
    ]
    for row in matrix["datasets"].values():
        cells = []
        for m in METHODS:
            f = row["methods"].get(m)
            cells.append(
                "—"
                if f is None
                else f"{_pct(f['agent'])} / {_pct(f['step'])} "
                f"<br><sub>[{_pct(f['agent_ci'][0])}–{_pct(f['agent_ci'][1])}] / "
                f"[{_pct(f['step_ci'][0])}–{_pct(f['step_ci'][1])}]</sub>"
            )
        b = row["baselines"]
        ba = max(b, key=lambda k: b[k]["agent"])
        bs = max(b, key=lambda k: b[k]["step"])
        lines.append(
            f"| {row['label']} ({row['n']}) | "
            + " | ".join(cells)
            + f" | {_pct(b[ba]['agent'])} ({BASELINES[ba]}) | {_pct(b[bs]['step'])} ({BASELINES[bs]}) |"
        )
    cf = matrix["datasets"]["sandbox-v2"]["methods"]["counterfactual"]
    lines += [
        "",
        f"Counterfactual on sandbox v2: {cf['mean_replays']:.2f} replays per trace (target "
        f"log2(steps) + 2 = {cf['replay_target']:.2f}; a scan over agent actions would take "
        f"{cf['scan_mean_replays']:.2f}).",
    ]
    inj = matrix["injected_only"]
    nat = inj["sandbox_v2_natural"]
    ww = inj["whowhen"]["methods"]

    def pair(f: dict[str, Any]) -> str:
        return f"{_pct(f['agent'])} / {_pct(f['step'])}"

    lines += [
        "",
        "**Trained only on injected faults, scored on real failures** (agent / step %):",
        "",
        f"- sandbox v2 natural failures (n={nat['heuristic']['n']}): learned on injected "
        f"{pair(nat['learned (trained on injected)'])}, heuristic {pair(nat['heuristic'])};",
        f"- Who&When real labels (n={inj['whowhen']['n']}, trained on {inj['whowhen']['injected_cases']} "
        f"perturb.py cases): injected-only {pair(ww['learned (injected only)'])}, real-label model "
        f"{pair(ww['learned (real labels)'])}, heuristic {pair(ww['heuristic'])}.",
    ]
    if matrix.get("heldout"):
        lines += [
            "",
            "**Held back** (30% of each collection by a hash of each trace's identity, `attribution.splits`; the "
            "methods, baselines and every design choice saw only the other 70%, scored once; agent / step %):",
            "",
            "| dataset (held out / trained on) | heuristic | heuristic (calibrated) | learned | best baseline (agent) "
            "| best baseline (step) |",
            "|---|---|---|---|---|---|",
        ]
        for row in matrix["heldout"].values():
            b = row["baselines"]
            ba = max(b, key=lambda k: b[k]["agent"])
            bs = max(b, key=lambda k: b[k]["step"])
            lines.append(
                f"| {row['label']} ({row['n']} / {row['n_dev']}) | "
                + " | ".join(
                    pair(row["methods"][m]) for m in ("heuristic", "heuristic (calibrated)", "learned")
                )
                + f" | {_pct(b[ba]['agent'])} ({BASELINES[ba]}) | {_pct(b[bs]['step'])} ({BASELINES[bs]}) |"
            )
    return "\n".join(lines)


def svg(matrix: dict[str, Any]) -> str:
    """Per dataset, agent and step accuracy of every method as bars with 95% whiskers; the best baseline of each
    figure as a dashed line."""
    colours = {
        "heuristic": "#8a8f98",
        "heuristic (calibrated)": "#5b7db1",
        "learned": "#d1603d",
        "schema_guided": "#6a9f58",
        "counterfactual": "#8e5ea2",
    }
    bar, gap, panel_w, top = 9, 4, 250, 40
    rows = list(matrix["datasets"].items())
    block = len(METHODS) * (bar + gap) + 26
    height = top + len(rows) * block + 40
    width = 200 + 2 * (panel_w + 30) + 120
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        f'font-size="11"><title>Attribution accuracy by dataset and method</title>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for p, figure in enumerate(("agent", "step")):
        x0 = 200 + p * (panel_w + 30)
        out.append(f'<text x="{x0}" y="20" font-weight="bold">{figure} accuracy</text>')
        for tick in (0, 0.25, 0.5, 0.75, 1):
            x = x0 + tick * panel_w
            out.append(
                f'<line x1="{x}" y1="{top - 8}" x2="{x}" y2="{height - 30}" stroke="#eee"/>'
                f'<text x="{x}" y="{height - 16}" text-anchor="middle" fill="#666">{int(tick * 100)}%</text>'
            )
    for r, (_, row) in enumerate(rows):
        y0 = top + r * block
        out.append(
            f'<text x="8" y="{y0 + 14}" font-weight="bold">{html.escape(row["label"][:30])}</text>'
            f'<text x="8" y="{y0 + 28}" fill="#666">n={row["n"]}</text>'
        )
        for p, figure in enumerate(("agent", "step")):
            x0 = 200 + p * (panel_w + 30)
            best = max(row["baselines"].values(), key=lambda b: b[figure])[figure]
            bx = x0 + best * panel_w
            out.append(
                f'<line x1="{bx}" y1="{y0}" x2="{bx}" y2="{y0 + block - 20}" stroke="#222" '
                f'stroke-dasharray="3,3"/>'
            )
            for k, method in enumerate(METHODS):
                f = row["methods"].get(method)
                if f is None:
                    continue
                y = y0 + k * (bar + gap)
                lo, hi = x0 + f[f"{figure}_ci"][0] * panel_w, x0 + f[f"{figure}_ci"][1] * panel_w
                out.append(
                    f'<rect x="{x0}" y="{y}" width="{f[figure] * panel_w:.1f}" height="{bar}" '
                    f'fill="{colours[method]}"><title>{html.escape(method)}: {_pct(f[figure])}%</title></rect>'
                    f'<line x1="{lo:.1f}" y1="{y + bar / 2}" x2="{hi:.1f}" y2="{y + bar / 2}" stroke="#000"/>'
                )
    lx = 200
    for method in METHODS:
        out.append(
            f'<rect x="{lx}" y="{height - 10}" width="9" height="9" fill="{colours[method]}"/>'
            f'<text x="{lx + 12}" y="{height - 2}">{html.escape(method)}</text>'
        )
        lx += 12 + 6.5 * len(method) + 14
    out.append(
        f'<line x1="{lx}" y1="{height - 5}" x2="{lx + 18}" y2="{height - 5}" stroke="#222" '
        f'stroke-dasharray="3,3"/><text x="{lx + 22}" y="{height - 2}">best baseline</text></svg>'
    )
    return "".join(out)


def update_readme(text: str) -> None:
    start, end = "<!-- attribution-matrix:start -->", "<!-- attribution-matrix:end -->"
    page = RESULTS_PAGE.read_text()
    if start not in page:
        raise SystemExit(f"{RESULTS_PAGE} has no attribution-matrix markers")
    before, rest = page.split(start, 1)
    _, after = rest.split(end, 1)
    RESULTS_PAGE.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200, help="sandbox v2 runs per mode")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument(
        "--heldout-only",
        action="store_true",
        help="recompute only the held-back table, keeping the rest of bench/results/attribution_matrix.json",
    )
    parser.add_argument(
        "--dev-only",
        action="store_true",
        help="cross-validate on each collection's dev part only and print it (writes nothing): where a change is "
        "measured before the held-back part is scored once",
    )
    options = parser.parse_args()
    started = time.perf_counter()
    if options.dev_only:
        dev = {name: dev_dataset(name, options.folds) for name in _datasets.DATASETS if _datasets.files(name)}
        print(json.dumps(dev, indent=2))
        return
    heldout = {name: heldout_dataset(name) for name in _datasets.DATASETS if _datasets.files(name)}
    if options.heldout_only:
        matrix = json.loads((RESULTS / "attribution_matrix.json").read_text())
        matrix["heldout"] = heldout
        (RESULTS / "attribution_matrix.json").write_text(json.dumps(matrix, indent=2))
        if options.update_readme:
            update_readme(markdown(matrix))
        print(json.dumps(heldout, indent=2))
        return
    datasets = {
        name: real_dataset(name, options.folds) for name in _datasets.DATASETS if _datasets.files(name)
    }
    datasets["sandbox-v2"] = sandbox_v2(options.runs, options.seed)
    matrix = {
        "machine": _django.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "folds": options.folds,
        "datasets": datasets,
        "injected_only": {
            "sandbox_v2_natural": datasets["sandbox-v2"]["natural_only"],
            "whowhen": injected_only_whowhen(options.folds),
        },
        "heldout": heldout,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attribution_matrix.json").write_text(json.dumps(matrix, indent=2))
    (RESULTS / "attribution_matrix.svg").write_text(svg(matrix))
    if options.update_readme:
        update_readme(markdown(matrix))
    print(json.dumps(matrix, indent=2))


if __name__ == "__main__":
    main()
