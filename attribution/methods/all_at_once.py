"""All-at-once (Who&When, ICML 2025): the whole failed log in one request, asking for the agent directly responsible
for the wrong solution and the step of its first mistake.

A log longer than the model's context is cut into consecutive windows (``LlmClient.windows``) that together cover
every step; each window names its most suspicious step, and one last request chooses among those picks. That costs
one call per window plus one, where the reference method would have failed on the context limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import prompts
from ..llm import Window
from .base import MethodError, MethodResult, TraceView

if TYPE_CHECKING:
    from ..llm import LlmClient

# Tokens kept free besides the answer: the chat template's own tokens and counting differences between tokenizers.
MARGIN_TOKENS = 64


def require(trace: TraceView, llm: LlmClient | None, label: str) -> LlmClient:
    if llm is None:
        raise MethodError(f"{label} needs a model: set one on the project's LLM settings page")
    if not trace.steps:
        raise MethodError("the trace has no steps")
    if not trace.candidates():
        raise MethodError("the trace names no agent that could be blamed")
    return llm


def reserve(llm: LlmClient, *requests: str) -> int:
    """Tokens to set aside for the instructions around the trace and for the answer."""
    return (
        max(llm.count_tokens(prompts.SYSTEM_PROMPT + r) for r in requests)
        + llm.answer_tokens()
        + MARGIN_TOKENS
    )


def locate(trace: TraceView, *, llm: LlmClient, with_ground_truth: bool) -> dict[str, Any]:
    """The all-at-once answer: ``agent``, ``step``, ``reason``, ``category``, ``confidence``, and the evidence."""
    last = len(trace.steps) - 1
    need = reserve(
        llm,
        prompts.all_at_once(trace, "", with_ground_truth=with_ground_truth),
        prompts.window(
            trace, "", with_ground_truth=with_ground_truth, first=last, last=last, number=999, count=999
        ),
    )
    whole = prompts.render_range(trace, 0, last)
    if llm.count_tokens(whole) <= llm.budget(need):
        answer = llm.complete_json(
            system=prompts.SYSTEM_PROMPT,
            purpose="all_at_once",
            user=prompts.all_at_once(trace, whole, with_ground_truth=with_ground_truth),
            validate=_validator(trace, 0, last),
        )
        return _read(answer) | {"answers": [answer], "windows": [[0, last]]}
    windows = llm.windows(trace, need)
    picks = [_pick(trace, llm, w, n, len(windows), with_ground_truth) for n, w in enumerate(windows, start=1)]
    return _choose(trace, llm, picks, with_ground_truth) | {
        "windows": [
            [w.first, w.last] if w.parts == 1 else [w.first, w.last, w.part, w.parts] for w in windows
        ]
    }


def _pick(
    trace: TraceView, llm: LlmClient, window: Window, number: int, count: int, with_ground_truth: bool
) -> dict[str, Any]:
    user = prompts.window(
        trace,
        llm.render_window(trace, window),
        with_ground_truth=with_ground_truth,
        first=window.first,
        last=window.last,
        number=number,
        count=count,
    )
    answer = llm.complete_json(
        system=prompts.SYSTEM_PROMPT,
        user=user,
        purpose=f"all_at_once window {number}/{count}",
        validate=_validator(trace, window.first, window.last),
    )
    return _read(answer) | {"first": window.first, "last": window.last, "answer": answer}


def _choose(
    trace: TraceView,
    llm: LlmClient,
    picks: list[dict[str, Any]],
    with_ground_truth: bool,
    hints: str = "",
    method: str = "all_at_once",
) -> dict[str, Any]:
    """The final choice among the windows' picks; ``hints`` (schema_guided's) head the request, within its room.
    ``method`` names the request in the call log."""
    # One candidate per step: the parts of a split step may all name it. The most confident pick speaks for it.
    best: dict[int, dict[str, Any]] = {}
    for pick in picks:
        if pick["step"] not in best or pick["confidence"] > best[pick["step"]]["confidence"]:
            best[pick["step"]] = pick
    candidates = [best[s] for s in sorted(best)]
    evidence = {
        "picks": [
            {k: p[k] for k in ("first", "last", "agent", "step", "confidence", "reason")} for p in picks
        ],
        "answers": [p["answer"] for p in picks],
    }
    if len(candidates) == 1:
        return candidates[0] | evidence
    steps = [c["step"] for c in candidates]
    frame = hints + prompts.final_choice(
        trace,
        prompts.render_candidates(trace, candidates, [""] * len(candidates)),
        with_ground_truth=with_ground_truth,
        steps=steps,
    )
    rendered, _ = llm.fit_steps([trace.steps[s] for s in steps], llm.budget(reserve(llm, frame)))
    user = hints + prompts.final_choice(
        trace,
        prompts.render_candidates(trace, candidates, rendered),
        with_ground_truth=with_ground_truth,
        steps=steps,
    )

    def validate(answer: dict[str, Any]) -> str | None:
        if prompts.as_int(answer.get("step")) not in steps:
            return f'"step" must be one of the candidates\' steps: {", ".join(map(str, steps))}'
        return prompts.check_agent(answer, trace) or prompts.check_pair(answer, trace)

    answer = llm.complete_json(
        system=prompts.SYSTEM_PROMPT, user=user, purpose=f"{method} final choice", validate=validate
    )
    evidence["answers"].append(answer)
    return _read(answer) | evidence | {"final": answer}


def _validator(trace: TraceView, first: int, last: int):
    def validate(answer: dict[str, Any]) -> str | None:
        return (
            prompts.check_agent(answer, trace)
            or prompts.check_step(answer, first, last)
            or prompts.check_pair(answer, trace)
        )

    return validate


def _read(answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "agent": answer["agent"],
        "step": prompts.as_int(answer["step"]),
        "reason": str(answer.get("reason", "")).strip(),
        "category": prompts.category_of(answer),
        "confidence": prompts.as_unit(answer.get("confidence")),
    }


class AllAtOnce:
    name = "all_at_once"
    label = "All-at-once (LLM)"
    needs_llm = True

    def run(
        self, trace: TraceView, *, llm: LlmClient | None = None, with_ground_truth: bool = True
    ) -> MethodResult:
        client = require(trace, llm, self.label)
        start = client.usage()
        found = locate(trace, llm=client, with_ground_truth=with_ground_truth)
        scores = [0.0] * len(trace.steps)
        for pick in found.get("picks", []):  # the other windows' picks stay visible as lesser suspicion
            scores[pick["step"]] = max(scores[pick["step"]], round(0.5 * pick["confidence"], 4))
        scores[found["step"]] = 1.0
        spent = client.usage() - start
        return MethodResult(
            agent=found["agent"],
            step=found["step"],
            confidence=found["confidence"],
            reason=found["reason"],
            category=found["category"],
            scores=scores,
            calls=spent.calls,
            input_tokens=spent.input_tokens,
            output_tokens=spent.output_tokens,
            cost=spent.cost,
            details={k: found[k] for k in ("answers", "windows", "picks") if k in found}
            | {"model": client.model},
        )


METHOD = AllAtOnce()
