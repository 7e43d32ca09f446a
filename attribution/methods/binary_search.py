"""Binary search (Who&When, ICML 2025): show a segment of the log, ask which half holds the most critical mistake,
and recurse into that half until one step is left: ceil(log2 n) calls for n steps.

Each answer also names the step the model has in mind, which must lie in the current segment and inside the half
it chose: a self-contradictory answer is sent back once instead of steering the search. A segment too long for the
context is shown with every long step cut to its head and tail, with a note of what was left out (the halves still
cover every step; only their text is shortened).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import prompts
from .all_at_once import require, reserve
from .base import MethodResult, TraceView

if TYPE_CHECKING:
    from ..llm import LlmClient


def _validator(first: int, mid: int, last: int):
    def validate(answer: dict[str, Any]) -> str | None:
        half = str(answer.get("half", "")).strip().lower()
        if half not in {"first", "second"}:
            return '"half" must be "first" or "second"'
        if error := prompts.check_step(answer, first, last):
            return error
        low, high = (first, mid) if half == "first" else (mid + 1, last)
        if not low <= prompts.as_int(answer["step"]) <= high:
            return f'"step" must lie in the {half} half you chose (steps {low} to {high})'
        return None

    return validate


def _blamed_agent(trace: TraceView, step: int) -> str:
    """The agent of the step, or of the nearest step before (then after) it that has one: a step the source names no
    agent for (a human turn, a system notice) cannot itself be blamed on an agent."""
    order = [step, *range(step - 1, -1, -1), *range(step + 1, len(trace.steps))]
    blameable = trace.candidates()
    return next(trace.steps[i].agent for i in order if trace.steps[i].agent in blameable)


class BinarySearch:
    name = "binary_search"
    label = "Binary search (LLM)"
    needs_llm = True

    def run(
        self, trace: TraceView, *, llm: LlmClient | None = None, with_ground_truth: bool = True
    ) -> MethodResult:
        client = require(trace, llm, self.label)
        start = client.usage()
        first, last = 0, len(trace.steps) - 1
        survived = [0] * len(trace.steps)  # rounds each step stayed in the searched segment
        rounds: list[dict[str, Any]] = []
        while first < last:
            mid = first + (last - first) // 2
            answer, excerpted = self._ask(trace, client, first, mid, last, with_ground_truth)
            for i in range(first, last + 1):
                survived[i] += 1
            half = str(answer["half"]).strip().lower()
            rounds.append(
                {
                    "first": first,
                    "mid": mid,
                    "last": last,
                    "half": half,
                    "excerpted": excerpted,
                    "answer": answer,
                }
            )
            first, last = (first, mid) if half == "first" else (mid + 1, last)
        survived[first] += 1
        total = len(rounds) + 1
        final = rounds[-1]["answer"] if rounds else {}
        confidences = [prompts.as_unit(r["answer"].get("confidence")) for r in rounds]
        spent = client.usage() - start
        return MethodResult(
            agent=_blamed_agent(trace, first),
            step=first,
            confidence=round(sum(confidences) / len(confidences), 4) if confidences else 0.5,
            reason=str(final.get("reason", "")).strip() or "the trace has a single step",
            # The category described the step the model had in mind; keep it only when that is the verdict.
            category=prompts.category_of(final) if prompts.as_int(final.get("step")) == first else "",
            scores=[round(s / total, 4) for s in survived],
            calls=spent.calls,
            input_tokens=spent.input_tokens,
            output_tokens=spent.output_tokens,
            cost=spent.cost,
            details={"rounds": rounds, "model": client.model},
        )

    @staticmethod
    def _ask(
        trace: TraceView, llm: LlmClient, first: int, mid: int, last: int, with_ground_truth: bool
    ) -> tuple[dict[str, Any], bool]:
        frame = prompts.binary_half(
            trace,
            prompts.render_trace(trace, [], first=first, last=last),
            with_ground_truth=with_ground_truth,
            first=first,
            mid=mid,
            last=last,
        )
        rendered, excerpted = llm.fit_steps(trace.steps[first : last + 1], llm.budget(reserve(llm, frame)))
        note = "Long steps are shortened to their beginning and end to fit the context." if excerpted else ""
        segment = prompts.render_trace(trace, rendered, first=first, last=last, note=note)
        user = prompts.binary_half(
            trace, segment, with_ground_truth=with_ground_truth, first=first, mid=mid, last=last
        )
        answer = llm.complete_json(
            system=prompts.SYSTEM_PROMPT,
            user=user,
            purpose=f"binary_search {first}-{last}",
            validate=_validator(first, mid, last),
        )
        return answer, excerpted


METHOD = BinarySearch()
