"""What LLM-simulated counterfactual replay costs, measured with a perfect simulator on sandbox traces.

No model is reachable from the build machine, so this bench answers every request the replayer sends from the
sandbox's own deterministic engine (a litellm custom provider, ``oracle/sandbox``): the analyzer's fix is the
sandbox's fault-free action, each role-played step is the step the engine takes at that position under the same
corrections, the judge compares with the task's answer. The model is perfect; everything else -- the replayer's
prompts, the recorded-speaker-order rule, the stop rules, exact matching, the counterfactual search, litellm's
Router and token counting (``gpt-4o``'s tokenizer) -- is the real code. What it measures is therefore the price of
the method (model calls, tokens, replays per trace) and how well the replayer's own rules fit a system whose truth
is known; not how well any real model plays agents.

    .venv/bin/python bench/llm_replay_cost.py --runs 60 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# Reference prices to turn tokens into dollars (USD per million tokens, input / output), as listed by the providers
# in 2025: a small and a large hosted model.
PRICES = {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00)}
MODEL = "oracle/sandbox"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import django

    django.setup()
    import logging

    import litellm

    for name in (
        "LiteLLM",
        "LiteLLM Router",
        "LiteLLM Proxy",
        "attribution.llm",
    ):  # one line per call otherwise
        logging.getLogger(name).setLevel(logging.WARNING)

    from attribution.llm import LlmClient
    from attribution.methods.base import MethodError
    from attribution.methods.counterfactual import METHOD
    from attribution.replay.base import Budget
    from attribution.replay.llm_sim import LlmSimulatedReplayer
    from attribution.replay.sandbox import SandboxReplayer, generate_task, inject, run, to_view, turn_keys

    state: dict[str, Any] = {}

    class Oracle(litellm.CustomLLM):
        def completion(self, model: str, messages: list, *a: Any, **k: Any) -> litellm.ModelResponse:
            text = json.dumps(answer([dict(m) for m in messages]))
            return litellm.ModelResponse(
                model=model,
                choices=[
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ],
                usage={
                    "prompt_tokens": litellm.token_counter(model="gpt-4o", messages=messages),
                    "completion_tokens": litellm.token_counter(model="gpt-4o", text=text),
                    "total_tokens": 0,
                },
            )

    def answer(messages: list[dict[str, str]]) -> dict[str, Any]:
        system, user = messages[0]["content"], messages[-1]["content"]
        sandbox: SandboxReplayer = state["sandbox"]
        if "minimal local fix" in system:
            index = int(re.search(r"Step (\d+) \(agent", user)[1])
            return {"content": sandbox.propose(state["view"], index), "reason": "the fault-free action"}
        if "You judge whether" in system:
            said = re.search(r"<final_answer>\n(.*?)\n</final_answer>", user, re.S)
            right = said is not None and said[1].strip() == sandbox.task.answer
            return {"verdict": "success" if right else "failure", "final_answer": said[1] if said else ""}
        keys = sandbox.keys(state["view"], state["corrections"])
        steps = run(sandbox.task, sandbox.faults, keys).steps
        position = user.count("<step index=")
        if "You moderate the replay" in system:
            return {
                "next": steps[position].agent if position < len(steps) else "",
                "reason": "the engine's turn",
            }
        if position >= len(steps):
            return {"content": "(nothing left to do)", "final_answer": "", "next": ""}
        step = steps[position]
        after = steps[position + 1].agent if position + 1 < len(steps) else ""
        final = re.search(r"FINAL ANSWER: (\S+)", step.content)
        return {
            "content": step.content,
            "final_answer": final[1] if final else "",
            "next": after,
            "kind": "tool_call" if step.kind == "tool_call" else "message",
            "tool": step.tool_name,
        }

    class Observed(LlmSimulatedReplayer):
        def replay(self, trace, corrections, *, budget=None):
            state["corrections"] = corrections
            return super().replay(trace, corrections, budget=budget)

    litellm.custom_provider_map = [{"provider": "oracle", "custom_handler": Oracle()}]
    litellm.register_model(
        {
            MODEL: {
                "max_input_tokens": 128_000,
                "max_tokens": 128_000,
                "mode": "chat",
                "input_cost_per_token": 0.0,
                "output_cost_per_token": 0.0,
                "litellm_provider": "oracle",
            }
        }
    )

    cases = []
    for i in range(args.runs):
        task_seed = args.seed * 1_000_000 + i
        task = generate_task(task_seed)
        faults = inject(task_seed, args.seed)
        faulty = run(task, faults)
        if run(task).outcome == "success" and faulty.outcome == "failure":
            cases.append((faulty, faults, to_view(faulty, name=f"bench/{task_seed}", fault_seed=args.seed)))

    rows = []
    started = time.perf_counter()
    for faulty, faults, view in cases:
        state["view"], state["sandbox"] = view, SandboxReplayer(faulty.task.seed, faults)
        llm = LlmClient(model=MODEL, num_retries=0, method="bench")
        budget = Budget(max_replays=200)
        gold = faulty.fired()[0][0]
        try:
            result = METHOD.run(view, replayer=Observed(llm, max_replays=None), budget=budget)
            found, replays = result.step, len(result.details["replays"])
        except MethodError as exc:
            found, replays, result = -1, budget.replays, None
            if os.environ.get("BENCH_DEBUG"):
                print("ERROR", view.name, exc, file=sys.stderr)
        usage = llm.usage()
        if os.environ.get("BENCH_DEBUG") and found != gold:
            print(
                "MISS", view.name, faulty.fired()[0][1].fault, "gold", gold, "found", found, file=sys.stderr
            )
            for r in result.details["replays"] if result is not None else []:
                print(
                    "  ",
                    r["corrections"],
                    r["outcome"],
                    repr(r["final_answer"]),
                    [(c["index"], c["agent"], c["content"][:50]) for c in r["continuation"]][-3:],
                    file=sys.stderr,
                )
        rows.append(
            {
                "kind": faulty.fired()[0][1].fault,
                "hit": found == gold,
                "steps": len(view.steps),
                "replays": replays,
                "calls": usage.calls,
                "input": usage.input_tokens,
                "output": usage.output_tokens,
                "actions": len(turn_keys(view.steps)),
            }
        )
    elapsed = time.perf_counter() - started

    def mean(key: str) -> float:
        return round(statistics.mean(r[key] for r in rows), 2) if rows else 0.0

    out = {
        "traces": len(rows),
        "runs": args.runs,
        "seed": args.seed,
        "step_accuracy": round(sum(r["hit"] for r in rows) / len(rows), 4) if rows else 0.0,
        "mean_steps": mean("steps"),
        "mean_replays": mean("replays"),
        "mean_calls": mean("calls"),
        "mean_input_tokens": mean("input"),
        "mean_output_tokens": mean("output"),
        "max_calls": max((r["calls"] for r in rows), default=0),
        "step_accuracy_by_fault": {
            k: round(statistics.mean(r["hit"] for r in rows if r["kind"] == k), 4)
            for k in sorted({r["kind"] for r in rows})
        },
        "usd_per_trace": {
            name: round((mean("input") * p_in + mean("output") * p_out) / 1e6, 5)
            for name, (p_in, p_out) in PRICES.items()
        },
        "seconds_per_trace_without_model_latency": round(elapsed / max(len(rows), 1), 3),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
