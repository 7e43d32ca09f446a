from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from attribution.methods.base import MethodError
from attribution.methods.counterfactual import METHOD as COUNTERFACTUAL
from attribution.methods.heuristic import METHOD as HEURISTIC
from attribution.replay.sandbox import generate_task, inject, run, to_view

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
    return {"judge_method": ALL_AT_ONCE.name, "judge_model": llm.model,
            "judge_step_accuracy": round(hits / n, 4) if n else 0.0,
            "judge_agent_accuracy": round(agent_hits / n, 4) if n else 0.0,
            "judge_failed": failed, "judge_calls": spent.calls, "judge_cached_calls": spent.cached_calls,
            "judge_input_tokens": spent.input_tokens, "judge_output_tokens": spent.output_tokens,
            "judge_cost": round(spent.cost, 6)}


class Command(BaseCommand):
    help = ("Benchmark counterfactual attribution on the built-in sandbox multi-agent system: generate tasks, inject "
            "one fault into each successful run, keep those that fail, and find the fault by replay. Offline.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, required=True)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--judge-model", default="", help="also run the all-at-once LLM method with this litellm "
                            "model on the same traces (the provider's key comes from its usual environment variable)")
        parser.add_argument("--api-base", default="", help="endpoint for --judge-model (Ollama, vLLM, ...)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["runs"] < 1:
            raise CommandError("--runs must be at least 1")
        if options["seed"] < 0:
            raise CommandError("--seed must not be negative")
        if options["api_base"] and not options["judge_model"]:
            raise CommandError("--api-base needs --judge-model")
        judge = None
        if options["judge_model"]:
            from attribution.llm import LlmClient, cache_from_settings

            judge = LlmClient(model=options["judge_model"], api_base=options["api_base"], method="all_at_once",
                              cache=cache_from_settings())
        result = benchmark(options["runs"], options["seed"], judge)
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        for key, value in result.items():
            self.stdout.write(f"{key:28} {value}")
