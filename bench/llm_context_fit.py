"""What each LLM method sends to a self-hosted model of a given context window, on Who&When Hand-Crafted.

A stdlib OpenAI-compatible server on 127.0.0.1 (``tests/llm_server.py``) stands in for vLLM: it enforces the
context window (prompt + max_tokens) and counts the prompt tokens it receives. Its answers are shaped like a real
judge's (the first agent and the first step it is shown; step checks decisive from step 40) so every method runs
its full course. Printed per method and window: calls per trace, prompt tokens per trace, the largest prompt, and
the requests the server refused for their length (always 0: a prompt that would not fit is never sent).

    .venv/bin/python bench/llm_context_fit.py --traces 20 --contexts 8192 32768
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' fake server

import _datasets  # noqa: E402
import _django  # noqa: E402

METHODS = ("all_at_once", "binary_search", "step_by_step", "hybrid", "schema_guided")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=20, help="the longest N Hand-Crafted traces")
    parser.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768])
    args = parser.parse_args()
    _django.setup()
    from django.conf import settings

    from attribution.llm import LlmClient
    from attribution.methods import get_method
    from attribution.selectors import trace_view
    from tests.attribution.test_llm_http import judge
    from tests.llm_server import fake_llm_server

    settings.CULPRIT_OUTBOUND_ALLOW_LOOPBACK = True
    settings.CULPRIT_LLM_CACHE_URL = "off"
    project = _datasets.load("whowhen-hand")
    views = sorted(
        (trace_view(t) for t in project.traces.all()), key=lambda v: -sum(len(s.content) for s in v.steps)
    )
    views = views[: args.traces]
    print(f"{len(views)} traces, {statistics.mean(len(v.steps) for v in views):.0f} steps on average")
    print(
        f"{'method':14} {'context':>7} {'calls/trace':>11} {'prompt tok/trace':>16} {'largest':>8} {'refused':>7} "
        f"{'failed':>6}"
    )
    for context in args.contexts:
        for method in METHODS:
            calls, tokens, largest, refused, failed = [], [], 0, 0, 0
            for view in views:
                with fake_llm_server(context=context, respond=judge(view.agents, decisive_from=40)) as server:
                    llm = LlmClient(
                        model="openai/bench-self-hosted",
                        api_base=server.url,
                        context_tokens=context,
                        num_retries=0,
                        method=method,
                    )
                    try:
                        get_method(method).run(view, llm=llm)
                    except Exception:  # noqa: BLE001 - counted, the bench goes on
                        failed += 1
                totals = server.totals()
                calls.append(totals["calls"])
                tokens.append(totals["input_tokens"])
                largest = max([largest, *(r.prompt_tokens for r in server.received)])
                refused += len(server.overflowed())
            print(
                f"{method:14} {context:>7} {statistics.mean(calls):>11.2f} {statistics.mean(tokens):>16,.0f} "
                f"{largest:>8,} {refused:>7} {failed:>6}"
            )


if __name__ == "__main__":
    main()
