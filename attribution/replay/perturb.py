"""Deterministic faults for real traces, written without a model.

The sandbox perturbs its own agents' decisions; a real trace only has text. These perturbations rewrite one agent
action the way the sandbox's fault kinds would have shaped it -- a number changed, a tool call's arguments swapped, a
premature final answer, a tool result ignored, a hand-off to the wrong agent, an instruction ignored -- so an injection
campaign can break a team's successful runs through their replay hook (or the LLM-simulated replayer) with no key.
The text the faulty step gets is plain and detectable on purpose: it is a labelled training case, not an attack.
An LLM-written fault (``fault_writer``) is more natural; this one is free, reproducible and offline.

Each kind applies only where it makes sense (``applicable``): a number must be there to be changed, a call must have
two arguments to swap. ``choose_targets`` picks (step, kind) pairs from every applicable option with a seeded RNG, so
a campaign's plan is the same every time it is planned.
"""

from __future__ import annotations

import json
import random
import re
from typing import TYPE_CHECKING

from .base import ReplayError

if TYPE_CHECKING:
    from ..methods.base import StepView, TraceView

# Fault kind -> taxonomy code (attribution.taxonomy), the same kinds the sandbox injects.
KINDS: dict[str, str] = {
    "wrong_number": "memory.hallucination",
    "swapped_arguments": "action.parameter_error",
    "premature_final_answer": "mast.3.1",
    "dropped_tool_result": "memory.retrieval_failure",
    "wrong_handoff": "trail.task_orchestration",
    "ignored_instruction": "mast.1.1",
}

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w.])")
# Arguments with a comma, up to the first comma and then to the paren: the same matches as ``[^()]*,[^()]*``,
# which tried every comma of a long run as the one (quadratic).
_CALL_ARGS = re.compile(r"\(([^(),]*+,[^()]*+)\)")
_NOT_ACTIONS = ("tool_result", "human", "system")


def is_action(step: StepView) -> bool:
    """An agent's own step: only these are faulted (and corrected) -- tool output and people are not agents."""
    return bool(step.agent) and step.kind not in _NOT_ACTIONS


def applicable(trace: TraceView, step: StepView) -> list[str]:
    kinds = []
    text = step.content or ""
    if _NUMBER.search(text):
        kinds.append("wrong_number")
    if _swap(text) is not None:
        kinds.append("swapped_arguments")
    if step.index < _last_action(trace):
        kinds.append("premature_final_answer")
    if any(s.kind == "tool_result" for s in trace.steps[: step.index]):
        kinds.append("dropped_tool_result")
    if _other_agents(trace, step):
        kinds.append("wrong_handoff")
    if text.strip():
        kinds.append("ignored_instruction")
    return kinds


def choose_targets(
    trace: TraceView, n: int, seed: int, kinds: list[str] | None = None
) -> list[tuple[int, str]]:
    """Up to ``n`` distinct (step index, fault kind) pairs, spread over the run's actions, reproducible by seed."""
    options = [
        (s.index, kind)
        for s in trace.steps
        if is_action(s)
        for kind in applicable(trace, s)
        if not kinds or kind in kinds
    ]
    rng = random.Random(f"{trace.name}:{seed}")
    rng.shuffle(options)
    chosen: list[tuple[int, str]] = []
    used_steps: set[int] = set()
    for index, kind in options:  # first one fault per step, then more if there are too few steps
        if index not in used_steps:
            chosen.append((index, kind))
            used_steps.add(index)
        if len(chosen) == n:
            return sorted(chosen)
    for option in options:
        if len(chosen) == n:
            break
        if option not in chosen:
            chosen.append(option)
    return sorted(chosen)


class Perturber:
    """A fault writer that needs no model (same ``write`` interface as ``fault_writer.FaultWriter``)."""

    name = "perturb"
    last_explanation = ""  # as FaultWriter's: a perturbation explains itself by its kind

    def write(self, trace: TraceView, index: int, kind: str) -> str:
        step = trace.steps[index]
        text = step.content or ""
        if kind == "wrong_number":
            matches = list(_NUMBER.finditer(text))
            if not matches:
                raise ReplayError(f"step {index} has no number to change")
            match = matches[-1]  # the latest figure is usually the one the agent passes on
            return text[: match.start()] + _shift(match.group()) + text[match.end() :]
        if kind == "swapped_arguments":
            swapped = _swap(text)
            if swapped is None:
                raise ReplayError(f"step {index} has no call with two arguments")
            return swapped
        if kind == "premature_final_answer":
            first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0][:300]
            return f"{first}\nI have enough to conclude; no further steps are needed. The task is complete."
        if kind == "dropped_tool_result":
            return "The tool returned nothing useful, so I will continue without its result."
        if kind == "wrong_handoff":
            others = _other_agents(trace, step)
            if not others:
                raise ReplayError(f"no other agent to hand step {index} to")
            target = others[index % len(others)]
            return f"{target}, please take over this part of the task.\n{text}"
        if kind == "ignored_instruction":
            return "I will approach this my own way rather than as instructed.\n" + _drop_middle(text)
        raise ReplayError(f"unknown fault kind {kind!r}")


def _shift(number: str) -> str:
    """A different, plausible number of the same shape: the last significant digit moves."""
    clean = number.replace(",", "")
    try:
        value = float(clean)
    except ValueError:
        return number + "1"
    if "." in clean:
        decimals = len(clean.split(".")[1])
        return f"{value + 10**-decimals * 7:.{decimals}f}"
    changed = int(value) + (7 if abs(int(value)) < 100 else 10 ** max(0, len(str(abs(int(value)))) - 2))
    return f"{changed:,}" if "," in number else str(changed)


def _swap(text: str) -> str | None:
    """The text with the first two arguments of its first JSON object or call exchanged, None when it has none."""
    start = text.find("{")
    if start >= 0:
        try:
            obj, end = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            obj, end = None, 0
        if isinstance(obj, dict) and len(obj) >= 2:
            keys = list(obj)
            a, b = keys[0], keys[1]
            if obj[a] != obj[b]:
                obj[a], obj[b] = obj[b], obj[a]
                return text[:start] + json.dumps(obj, ensure_ascii=False) + text[start + end :]
    match = _CALL_ARGS.search(text)
    if match:
        parts = [p.strip() for p in match.group(1).split(",")]
        if len(parts) >= 2 and parts[0] != parts[1]:
            parts[0], parts[1] = parts[1], parts[0]
            return text[: match.start(1)] + ", ".join(parts) + text[match.end(1) :]
    return None


def _drop_middle(text: str) -> str:
    lines = text.splitlines()
    if len(lines) > 2:
        return "\n".join(lines[: len(lines) // 2])
    return text[: max(1, len(text) // 2)]


def _last_action(trace: TraceView) -> int:
    actions = [s.index for s in trace.steps if is_action(s)]
    return actions[-1] if actions else -1


def _other_agents(trace: TraceView, step: StepView) -> list[str]:
    return sorted({s.agent for s in trace.steps if s.agent and s.agent != step.agent})
