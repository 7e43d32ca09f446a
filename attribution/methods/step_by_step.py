"""Step-by-step (Who&When, ICML 2025): walk the log in order and ask at each step, shown with everything before it,
whether this most recent step is an error that derails the run; the first "yes" is the verdict. At most one call
per step (plus a retry for an invalid answer), fewer when an early step is blamed.

When the log up to a step does not fit the context, the request shows the latest steps that fit and says which
earlier ones are left out; a single step longer than the context is judged in parts, and any part judged decisive
makes the step decisive. When no step is judged decisive the most suspicious one is returned, with low confidence
and a reason that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import prompts
from .all_at_once import require, reserve
from .base import MethodResult, StepView, TraceView

if TYPE_CHECKING:
    from ..llm import LlmClient


@dataclass
class Judge:
    """Asks, step after step, whether a step is the decisive error. Shared with the hybrid method."""

    trace: TraceView
    llm: LlmClient
    with_ground_truth: bool
    focus: str = ""  # a sentence put before the log (hybrid: which agent the first pass named)
    sizes: list[int] = field(init=False)
    room: int = field(init=False)

    def __post_init__(self) -> None:
        probe = self.trace.steps[-1]
        frame = prompts.step_check(
            self.trace,
            prompts.render_trace(self.trace, [], first=0, last=0),
            with_ground_truth=self.with_ground_truth,
            step=probe,
            part=99,
            parts=99,
            focus=self.focus,
        )
        self.room = self.llm.budget(reserve(self.llm, frame))
        self.sizes = [self.llm.count_tokens(prompts.render_step(s)) + 1 for s in self.trace.steps]

    def judge(self, step: StepView) -> dict[str, Any]:
        """``decisive_error``, ``suspicion``, ``reason``, ``category`` for one step, and the raw answers."""
        if self.sizes[step.index] > self.room:
            return self._judge_in_parts(step)
        first, used = step.index, self.sizes[step.index]
        while first > 0 and used + self.sizes[first - 1] <= self.room:
            first -= 1
            used += self.sizes[first]
        note = (
            f"Steps 0 to {first - 1} are not shown: the log up to this step is too long for one request."
            if first > 0
            else ""
        )
        rendered = prompts.render_range(self.trace, first, step.index, note=note)
        answer = self._ask(rendered, step, f"step {step.index}")
        return _read(answer) | {"answers": [answer], "shown": [first, step.index]}

    def _judge_in_parts(self, step: StepView) -> dict[str, Any]:
        parts = self.llm.parts_needed(step, self.room)
        note = f"Steps 0 to {step.index - 1} are not shown: this step alone is too long for one request."
        answers = []
        for part in range(1, parts + 1):
            rendered = prompts.render_trace(
                self.trace,
                [prompts.render_step(step, part=part, parts=parts)],
                first=step.index,
                last=step.index,
                note=note if step.index else "",
            )
            answers.append(self._ask(rendered, step, f"step {step.index} part {part}/{parts}", part, parts))
            if _read(answers[-1])["decisive_error"]:
                break
        readings = [_read(a) for a in answers]
        worst = max(readings, key=lambda r: (r["decisive_error"], r["suspicion"]))
        return worst | {"answers": answers, "parts": parts}

    def _ask(
        self, rendered: str, step: StepView, purpose: str, part: int = 1, parts: int = 1
    ) -> dict[str, Any]:
        user = prompts.step_check(
            self.trace,
            rendered,
            with_ground_truth=self.with_ground_truth,
            step=step,
            part=part,
            parts=parts,
            focus=self.focus,
        )
        return self.llm.complete_json(
            system=prompts.SYSTEM_PROMPT, user=user, purpose=purpose, validate=_validate
        )


def _validate(answer: dict[str, Any]) -> str | None:
    if prompts.as_bool(answer.get("decisive_error")) is None:
        return '"decisive_error" must be true or false'
    return None


def _read(answer: dict[str, Any]) -> dict[str, Any]:
    decisive = bool(prompts.as_bool(answer.get("decisive_error")))
    return {
        "decisive_error": decisive,
        "suspicion": prompts.as_unit(answer.get("suspicion"), default=1.0 if decisive else 0.0),
        "reason": str(answer.get("reason", "")).strip(),
        "category": prompts.category_of(answer) if decisive else "",
    }


def walk(trace: TraceView, steps: list[StepView], judge: Judge) -> dict[str, Any]:
    """Judge ``steps`` in order and stop at the first decisive one; else fall back to the most suspicious."""
    scores = [0.0] * len(trace.steps)
    judgements = []
    for step in steps:
        found = judge.judge(step)
        scores[step.index] = 1.0 if found["decisive_error"] else min(found["suspicion"], 0.99)
        judgements.append({"step": step.index} | found)
        if found["decisive_error"]:
            return {
                "step": step.index,
                "confidence": max(found["suspicion"], 0.5),
                "reason": found["reason"],
                "category": found["category"],
                "scores": scores,
                "judgements": judgements,
                "stopped_at": step.index,
            }
    top = max(judgements, key=lambda j: (j["suspicion"], -j["step"]))
    return {
        "step": top["step"],
        "confidence": round(top["suspicion"] * 0.5, 4),
        "reason": (
            f"No step was judged a decisive error; step {top['step']} was the most suspicious: "
            f"{top['reason']}"
        ),
        "category": "",
        "scores": scores,
        "judgements": judgements,
        "stopped_at": None,
    }


class StepByStep:
    name = "step_by_step"
    label = "Step-by-step (LLM)"
    needs_llm = True

    def run(
        self, trace: TraceView, *, llm: LlmClient | None = None, with_ground_truth: bool = True
    ) -> MethodResult:
        client = require(trace, llm, self.label)
        start = client.usage()
        # Only steps in which an agent acts can be blamed on one: not the user's task (step 0 in Who&When), not a
        # tool's output, not a step the source names no agent for (all context).
        candidates = trace.acting_steps()
        found = walk(trace, candidates, Judge(trace, client, with_ground_truth))
        spent = client.usage() - start
        return MethodResult(
            agent=trace.steps[found["step"]].agent,
            step=found["step"],
            confidence=found["confidence"],
            reason=found["reason"],
            category=found["category"],
            scores=found["scores"],
            calls=spent.calls,
            input_tokens=spent.input_tokens,
            output_tokens=spent.output_tokens,
            cost=spent.cost,
            details={
                "judgements": found["judgements"],
                "stopped_at": found["stopped_at"],
                "model": client.model,
            },
        )


METHOD = StepByStep()
