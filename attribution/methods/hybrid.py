"""Hybrid (Who&When, ICML 2025): all-at-once names the agent (its strength: agent accuracy), then step-by-step walks
that agent's steps only (its strength: step accuracy) and stops at the first one judged decisive.

Calls: the all-at-once pass (one, or one per window plus one) and at most one per step of the named agent. When
none of that agent's steps is judged decisive, the all-at-once step is kept if it is one of the agent's, otherwise
the agent's most suspicious step.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import all_at_once
from .all_at_once import require
from .base import MethodResult, TraceView
from .step_by_step import Judge, walk

if TYPE_CHECKING:
    from ..llm import LlmClient


class Hybrid:
    name = "hybrid"
    label = "Hybrid: all-at-once agent, then step-by-step (LLM)"
    needs_llm = True

    def run(
        self, trace: TraceView, *, llm: LlmClient | None = None, with_ground_truth: bool = True
    ) -> MethodResult:
        client = require(trace, llm, self.label)
        start = client.usage()
        first_pass = all_at_once.locate(trace, llm=client, with_ground_truth=with_ground_truth)
        agent = first_pass["agent"]
        focus = (
            f"A first analysis of the whole log found agent {json.dumps(agent)} responsible for the failure; "
            "its steps are now checked one by one.\n"
        )
        steps = [s for s in trace.acting_steps() if s.agent == agent] or trace.agent_steps(agent)
        found = walk(trace, steps, Judge(trace, client, with_ground_truth, focus=focus))
        step, confidence, reason, category = (
            found["step"],
            found["confidence"],
            found["reason"],
            found["category"],
        )
        if found["stopped_at"] is None and trace.steps[first_pass["step"]].agent == agent:
            step, confidence = first_pass["step"], round(first_pass["confidence"] * 0.5, 4)
            reason = (
                f"No step of {agent} was judged decisive on its own; the first pass chose step {step}: "
                f"{first_pass['reason']}"
            )
            category = first_pass["category"]
        scores = found["scores"]
        scores[step] = 1.0
        spent = client.usage() - start
        return MethodResult(
            agent=agent,
            step=step,
            confidence=confidence,
            reason=reason,
            category=category,
            scores=scores,
            calls=spent.calls,
            input_tokens=spent.input_tokens,
            output_tokens=spent.output_tokens,
            cost=spent.cost,
            details={
                "agent_pass": {
                    k: first_pass[k]
                    for k in ("agent", "step", "reason", "confidence", "answers", "windows")
                    if k in first_pass
                },
                "judgements": found["judgements"],
                "stopped_at": found["stopped_at"],
                "model": client.model,
            },
        )


METHOD = Hybrid()
