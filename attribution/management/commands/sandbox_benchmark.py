from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution.methods.base import MethodError
from attribution.methods.counterfactual import METHOD as COUNTERFACTUAL
from attribution.methods.heuristic import METHOD as HEURISTIC
from attribution.replay.sandbox import generate_task, inject, run, to_view
from tracing.management.commands._arguments import check_options, whole
from tracing.management.commands._pure_json import PureJsonMixin

if TYPE_CHECKING:
    from attribution.llm import LlmClient


def benchmark(runs: int, seed: int = 0, judge: LlmClient | None = None) -> dict[str, Any]:
    """Generate ``runs`` sandbox tasks, keep the successful runs, inject one seeded fault into each, keep the
    injections that turn success into failure, and attribute each with the counterfactual method (and, for
    comparison, the offline heuristic, and the all-at-once LLM judge when ``judge`` is given). No database: traces
    are built as TraceViews directly."""
    succeeded = 0
    cases = []
    for i in range(runs):
        task_seed = seed * 1_000_000 + i
        task = generate_task(task_seed)
        if run(task).outcome != "success":
            continue
        succeeded += 1
        faults = inject(task_seed, seed)
        faulty = run(task, faults)
        if faulty.outcome == "failure":
            cases.append((faulty, to_view(faulty, fault_seed=seed)))
    hits = agent_hits = h_hits = h_agent_hits = 0
    replays: list[int] = []
    scans: list[int] = []
    steps: list[int] = []
    by_kind: dict[str, list[int]] = {}
    for faulty, view in cases:
        gold_step, gold = faulty.fired()[0]
        try:
            result = COUNTERFACTUAL.run(view)
            pred_step, pred_agent, used = result.step, result.agent, len(result.details["replays"])
        except MethodError:
            pred_step, pred_agent, used = -1, "", 0
        heuristic = HEURISTIC.run(view, with_ground_truth=True)
        hit = pred_step == gold_step
        hits += hit
        agent_hits += pred_agent == gold.agent
        h_hits += heuristic.step == gold_step
        h_agent_hits += heuristic.agent == gold.agent
        replays.append(used)
        scans.append(gold_step + 1)
        steps.append(len(view.steps))
        by_kind.setdefault(gold.fault, []).append(int(hit))
    n = len(cases)
    judged = _judge(judge, cases) if judge is not None else {}

    def mean(values: list[int]) -> float:
        return round(sum(values) / len(values), 4) if values else 0.0

    mean_steps = mean(steps)
    return {
        "runs": runs,
        "succeeded": succeeded,
        "injected": n,
        "step_accuracy": round(hits / n, 4) if n else 0.0,
        "agent_accuracy": round(agent_hits / n, 4) if n else 0.0,
        "mean_steps": mean_steps,
        "mean_replays": mean(replays),
        "max_replays": max(replays, default=0),
        "replay_target": round(math.log2(mean_steps) + 2, 4) if mean_steps else 0.0,
        "scan_mean_replays": mean(scans),
        "heuristic_step_accuracy": round(h_hits / n, 4) if n else 0.0,
        "heuristic_agent_accuracy": round(h_agent_hits / n, 4) if n else 0.0,
        "step_accuracy_by_fault": {kind: mean(v) for kind, v in sorted(by_kind.items())},
        "seed": seed,
    } | judged


def _judge(llm: LlmClient, cases: list[Any]) -> dict[str, Any]:
    """The all-at-once LLM method on the same injected traces (ground truth shown, as in Who&When's main setting).
    A trace the model gives no valid answer for counts as a miss and is counted in ``judge_failed``."""
    from attribution.methods.all_at_once import METHOD as ALL_AT_ONCE

    hits = agent_hits = failed = 0
    start = llm.usage()
    for faulty, view in cases:
        gold_step, gold = faulty.fired()[0]
        try:
            result = ALL_AT_ONCE.run(view, llm=llm, with_ground_truth=True)
        except MethodError:
            failed += 1
            continue
        hits += result.step == gold_step
        agent_hits += result.agent == gold.agent
    spent = llm.usage() - start
    n = len(cases)
    return {
        "judge_method": ALL_AT_ONCE.name,
        "judge_model": llm.model,
        "judge_step_accuracy": round(hits / n, 4) if n else 0.0,
        "judge_agent_accuracy": round(agent_hits / n, 4) if n else 0.0,
        "judge_failed": failed,
        "judge_calls": spent.calls,
        "judge_cached_calls": spent.cached_calls,
        "judge_input_tokens": spent.input_tokens,
        "judge_output_tokens": spent.output_tokens,
        "judge_cost": round(spent.cost, 6),
    }


# --- sandbox v2 ---------------------------------------------------------------------------------------------------

# Training cases for the learned method come from task seeds this far above the scored ones (task seeds are
# seed * 1,000,000 + i), so no scored task is ever trained on.
TRAIN_SEED_OFFSET = 10_000


def benchmark_v2(runs: int, seed: int = 1, ranker: str = "heuristic") -> dict[str, Any]:
    """Sandbox v2 failures -- ``runs`` injected cases (one scenario each, in turn) and the natural failures among
    ``runs`` more runs -- attributed by the counterfactual method (its search guided by ``ranker``), the offline
    heuristic, and the learned method trained on injected cases of other seeds (None when ``attribution.learning``
    is not there). No database."""
    from attribution.replay.sandbox_v2_faults import generate_labelled

    injected = generate_labelled(runs, seed, "injected")
    natural = generate_labelled(runs, seed, "natural")
    model, training = _train_learned(runs, seed + TRAIN_SEED_OFFSET)
    if ranker == "learned" and model is None:
        raise CommandError("--ranker learned needs attribution.learning, which is not importable")
    rank = (lambda view: model.run(view, with_ground_truth=True).scores) if ranker == "learned" else None
    scored = {
        "injected": [_score_v2(case, model, rank) for case in injected],
        "natural": [_score_v2(case, model, rank) for case in natural],
    }
    by_mode = {mode: _summary_v2(rows, model is not None) for mode, rows in scored.items()}
    return {
        "version": 2,
        "runs": runs,
        "seed": seed,
        "ranker": ranker,
        "training": training,
        **_summary_v2(scored["injected"] + scored["natural"], model is not None),
        "by_mode": by_mode,
    }


def _train_learned(runs: int, seed: int) -> tuple[Any, dict[str, Any] | None]:
    try:
        from attribution.learning import Example, fit
    except ImportError:
        return None, None
    from attribution.replay.sandbox_v2_faults import generate_labelled

    cases = generate_labelled(runs, seed, "injected")
    model = fit(
        [Example(view=c.view, agent=c.agent, step=c.step, source="injected", group=c.name) for c in cases]
    )
    return model, {"seed": seed, "cases": len(cases), "source": "injected"}


def _score_v2(case: Any, model: Any, rank: Any) -> dict[str, Any]:
    view = case.view
    try:
        result = COUNTERFACTUAL.run(view, ranker=rank)
        cf_step, cf_agent, used = result.step, result.agent, len(result.details["replays"])
    except MethodError:
        cf_step, cf_agent, used = -1, "", 0
    heuristic = HEURISTIC.run(view, with_ground_truth=True)
    learned = model.run(view, with_ground_truth=True) if model is not None else None
    actions = [s.index for s in view.steps if s.agent and s.kind != "tool_result"]
    return {
        "kind": case.scenario if case.mode == "injected" else case.kind,
        "steps": len(view.steps),
        "replays": used,
        "scan": actions.index(case.step) + 1,  # a left-to-right scan over actions only
        "counterfactual": (cf_step == case.step, cf_agent == case.agent),
        "heuristic": (heuristic.step == case.step, heuristic.agent == case.agent),
        "learned": (learned.step == case.step, learned.agent == case.agent) if learned is not None else None,
    }


def _accuracy(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    from attribution.evaluation import wilson

    n = len(rows)
    steps = sum(r[method][0] for r in rows)
    agents = sum(r[method][1] for r in rows)
    return {
        "step_accuracy": round(steps / n, 4) if n else 0.0,
        "step_ci": wilson(steps, n),
        "agent_accuracy": round(agents / n, 4) if n else 0.0,
        "agent_ci": wilson(agents, n),
    }


def _summary_v2(rows: list[dict[str, Any]], learned: bool) -> dict[str, Any]:
    n = len(rows)

    def mean(values: list[int]) -> float:
        return round(sum(values) / len(values), 4) if values else 0.0

    mean_steps = mean([r["steps"] for r in rows])
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    methods = ("counterfactual", "heuristic", *(("learned",) if learned else ()))
    return {
        "cases": n,
        "mean_steps": mean_steps,
        "counterfactual": {
            **_accuracy(rows, "counterfactual"),
            "mean_replays": mean([r["replays"] for r in rows]),
            "max_replays": max((r["replays"] for r in rows), default=0),
        },
        "heuristic": _accuracy(rows, "heuristic"),
        "learned": _accuracy(rows, "learned") if learned else None,
        "replay_target": round(math.log2(mean_steps) + 2, 4) if mean_steps else 0.0,
        "scan_mean_replays": mean([r["scan"] for r in rows]),
        "step_accuracy_by_kind": {
            kind: {"cases": len(group), **{m: mean([int(r[m][0]) for r in group]) for m in methods}}
            for kind, group in sorted(by_kind.items())
        },
    }


MAX_RUNS = 100_000  # the documented runs are 200 (docs/replay-and-injection.md)
MAX_SEED = 10**9


CHECKED = {"runs": whole(1, MAX_RUNS), "seed": whole(0, MAX_SEED)}


def _from_litellm(exc: BaseException) -> bool:
    """A provider's or litellm's error (theirs derive from openai's), as opposed to a bug of ours."""
    return any(cls.__module__.split(".")[0] in ("litellm", "openai", "httpx") for cls in type(exc).__mro__)


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (litellm's run to several, with a tutorial)."""
    return " ".join(str(exc).split("\n", 1)[0].split()) or type(exc).__name__


class Command(PureJsonMixin, BaseCommand):
    help = (
        "Benchmark counterfactual attribution on the built-in sandbox multi-agent system: generate tasks, inject "
        "one fault into each successful run, keep those that fail, and find the fault by replay. Offline."
    )

    def add_base_argument(self, parser: CommandParser, *args: Any, **kwargs: Any) -> None:
        if "--version" not in args:  # here --version picks the sandbox's version, not Django's
            super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=CHECKED["runs"], required=True, help=f"1 to {MAX_RUNS:,}")
        parser.add_argument("--seed", type=CHECKED["seed"], default=0, help=f"0 to {MAX_SEED:,}")
        parser.add_argument("--json", action="store_true")
        parser.add_argument(
            "--judge-model",
            default="",
            help="also run the all-at-once LLM method with this litellm "
            "model on the same traces (the provider's key comes from its usual environment variable)",
        )
        parser.add_argument("--api-base", default="", help="endpoint for --judge-model (Ollama, vLLM, ...)")
        parser.add_argument(
            "--version",
            type=int,
            choices=(1, 2),
            default=1,
            help="2: sandbox v2, stochastic agents whose corrections are resamples (injected and "
            "natural failures; counterfactual, heuristic and learned methods)",
        )
        parser.add_argument(
            "--ranker",
            choices=("heuristic", "learned"),
            default="heuristic",
            help="v2: the ranking that guides the counterfactual search",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        check_options(options, CHECKED)  # again for call_command's keyword options, which skip ``type``
        if options["api_base"] and not options["judge_model"]:
            raise CommandError("--api-base needs --judge-model")
        if options["version"] == 2:
            if options["judge_model"]:
                raise CommandError("--judge-model is for --version 1")
            self._print(benchmark_v2(options["runs"], options["seed"], options["ranker"]), options["json"])
            return
        judge = None
        if options["judge_model"]:
            from attribution.llm import LlmClient, cache_from_settings

            try:
                judge = LlmClient(
                    model=options["judge_model"],
                    api_base=options["api_base"],
                    method="all_at_once",
                    cache=cache_from_settings(),
                )
            except (
                Exception
            ) as exc:  # litellm refuses a model it cannot route (BadRequestError, ValueError, ...)
                raise CommandError(f"--judge-model {options['judge_model']!r}: {_reason(exc)}") from None
        try:
            result = benchmark(options["runs"], options["seed"], judge)
        except MethodError as exc:
            raise CommandError(_reason(exc)) from None
        except Exception as exc:
            if judge is None or not _from_litellm(exc):
                raise
            raise CommandError(f"--judge-model {options['judge_model']!r}: {_reason(exc)}") from None
        self._print(result, options["json"])

    def _print(self, result: dict[str, Any], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(result))
            return
        for key, value in result.items():
            self.stdout.write(f"{key:28} {value}")
