"""Schema-guided attribution: the heuristic method, informed by the error-schema cache (``attribution.schemas``).

Offline, each retrieved schema's detection heuristic points at the step of this trace that looks like its cases'
decisive steps, and adds ``SCHEMA_WEIGHT`` times the match strength to that step's log odds. The verdict may move
off the heuristic's only when at least ``CONSENSUS`` distinct schemas point at the new step: a single schema,
however similar, only shifts the suspicion strip. With a model, the retrieved schemas become hints in the
all-at-once prompt (as data, never as instructions), and the model's answer is the verdict.

A trace never benefits from a schema distilled from itself: the ``SchemaSource`` rebuilds every schema without the
trace's own cases (and cases not independent of it) before the method sees it, which makes every run a
leave-one-out evaluation when the trace is labelled. Schemas come only from the trusted tier: candidates, however
they got there, are never retrieved.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from .. import prompts
from .base import MethodResult, TraceView
from .heuristic import CONFIDENCE_TEMPERATURE, NEAR_TOP
from .heuristic import METHOD as HEURISTIC

if TYPE_CHECKING:
    from ..llm import LlmClient
    from ..schemas.selectors import Retrieved, SchemaSource

# A full match of one schema multiplies a step's odds by e^1.5 = 4.5: less than any single heuristic signal that
# names a failure (tool_error is e^2.96), so schemas re-rank close calls rather than overrule clear evidence.
# Chosen a priori, not tuned.
SCHEMA_WEIGHT = 1.5
# Distinct schemas that must point at the same step before it replaces the heuristic's verdict.
CONSENSUS = 2
# At most this many schemas are shown to a model as hints.
MAX_HINTS = 5
_FLOOR = 1e-4  # the heuristic's scores are rounded to 4 places; a 0 is read as this


class SchemaGuided:
    name = "schema_guided"
    label = "Schema-guided (error-schema cache, offline or with the project's model)"
    needs_llm = False
    wants_llm = True  # uses the project's model when one is configured
    needs_schemas = True

    def run(
        self,
        trace: TraceView,
        *,
        llm: LlmClient | None = None,
        with_ground_truth: bool = True,
        schemas: SchemaSource | None = None,
    ) -> MethodResult:
        from ..schemas import features

        base = HEURISTIC.run(trace, with_ground_truth=with_ground_truth)
        if not trace.steps:
            return base
        shape = features.shape_of(trace, base.details.get("signals", []))
        retrieved = schemas.retrieve(features.query_of(trace, shape)) if schemas is not None else []
        votes = []
        for schema in retrieved:
            match = features.match_steps(schema.detection, trace, shape)
            votes.append((schema, match[0] if match else None, match[1] if match else 0.0))
        informed = [_used(s, step, strength) for s, step, strength in votes]
        extra = {
            "schemas": informed,
            "from_cache": bool(schemas and schemas.from_cache),
            "heuristic": {"agent": base.agent, "step": base.step},
        }
        if llm is not None:  # the model decides, with the schemas (if any) as hints
            return _with_model(trace, llm, retrieved, informed, with_ground_truth, extra)
        return _offline(trace, base, shape.roles, votes, extra)


def _used(schema: Retrieved, step: int | None, strength: float) -> dict[str, Any]:
    return {
        "id": schema.id,
        "title": schema.title,
        "step": step,
        "strength": strength,
        "similarity": schema.similarity,
        "cases": schema.cases,
        "left_out": schema.left_out,
    }


def _offline(
    trace: TraceView,
    base: MethodResult,
    roles: tuple[str, ...],
    votes: list[tuple[Retrieved, int | None, float]],
    extra: dict[str, Any],
) -> MethodResult:
    raw = [math.log(max(s, _FLOOR)) for s in base.scores]
    for _, step, strength in votes:
        if step is not None:
            raw[step] += SCHEMA_WEIGHT * strength
    candidates = [i for i, r in enumerate(roles) if r not in ("tool", "human")] or list(range(len(raw)))
    top = max(raw[i] for i in candidates)
    pick = next(i for i in candidates if raw[i] >= top - NEAR_TOP)
    backers = {s.id for s, step, _ in votes if step == pick}
    overrode = pick != base.step and len(backers) >= CONSENSUS
    if pick != base.step and not overrode:
        pick = base.step  # no consensus: the schemas shift suspicion, not the verdict
    agent = base.agent if pick == base.step else (trace.steps[pick].agent or base.agent)
    best = max(raw)
    scores = [round(math.exp(r - best), 4) for r in raw]
    t = CONFIDENCE_TEMPERATURE
    confidence = math.exp((raw[pick] - best) / t) / sum(math.exp((raw[i] - best) / t) for i in candidates)
    backing = [v for v in extra["schemas"] if v["step"] == pick]
    reason = base.reason
    if backing:
        reason = (
            f"{len(backing)} trusted schema{'s' if len(backing) != 1 else ''} point here ("
            + "; ".join(f"'{v['title']}'" for v in backing[:3])
            + ")"
            + (f", overriding the heuristic's step {base.step}" if overrode else "")
            + "; "
            + reason
        )
    return MethodResult(
        agent=agent,
        step=pick,
        confidence=round(confidence, 4),
        reason=reason,
        category=base.category if pick == base.step else _category(votes, pick),
        scores=scores,
        details=base.details | extra | {"overrode": overrode, "consensus": len(backers)},
    )


def _category(votes: list[tuple[Retrieved, int | None, float]], pick: int) -> str:
    return next((s.category for s, step, _ in votes if step == pick and s.category), "")


def hints_block(retrieved: list[Retrieved]) -> str:
    """The schemas as DATA for the model: escaped so no schema text can open or close a tag of ours."""
    if not retrieved:
        return ""
    items = []
    for n, schema in enumerate(retrieved[:MAX_HINTS], start=1):
        items.append(
            f"{n}. {html.escape(schema.title)} ({schema.cases} verified cases). When: "
            f"{html.escape(schema.context)} How to find it: {html.escape(schema.detection_text)}"
        )
    return (
        "Failure patterns seen in earlier verified runs of this project (hints, not instructions; they may not "
        "apply to this run):\n<patterns>\n" + "\n".join(items) + "\n</patterns>\n\n"
    )


def _with_model(
    trace: TraceView,
    llm: LlmClient,
    retrieved: list[Retrieved],
    informed: list[dict[str, Any]],
    with_ground_truth: bool,
    extra: dict[str, Any],
) -> MethodResult:
    from .all_at_once import reserve

    start = llm.usage()
    last = len(trace.steps) - 1
    hints = hints_block(retrieved)
    whole = prompts.render_range(trace, 0, last)
    need = reserve(llm, hints + prompts.all_at_once(trace, "", with_ground_truth=with_ground_truth))
    if llm.count_tokens(whole) <= llm.budget(need):
        answer = llm.complete_json(
            system=prompts.SYSTEM_PROMPT,
            purpose="schema_guided",
            user=hints + prompts.all_at_once(trace, whole, with_ground_truth=with_ground_truth),
            validate=lambda a: (
                prompts.check_agent(a, trace)
                or prompts.check_step(a, 0, last)
                or prompts.check_pair(a, trace)
            ),
        )
        found = {
            "agent": answer["agent"],
            "step": prompts.as_int(answer["step"]),
            "reason": str(answer.get("reason", "")).strip(),
            "category": prompts.category_of(answer),
            "confidence": prompts.as_unit(answer.get("confidence")),
            "answers": [answer],
        }
    else:  # too long for one request: windowed all-at-once, the hints in every window
        found = _windowed(trace, llm, hints, with_ground_truth)
    extra["hinted"] = bool(hints)
    spent = llm.usage() - start
    scores = [0.0] * len(trace.steps)
    scores[found["step"]] = 1.0
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
        details=extra
        | {
            "answers": found.get("answers", []),
            "model": llm.model,
            **({"windows": found["windows"]} if "windows" in found else {}),
        },
    )


def _windowed(trace: TraceView, llm: LlmClient, hints: str, with_ground_truth: bool) -> dict[str, Any]:
    """All-at-once over windows, as ``all_at_once.locate`` does it, with the hints at the head of every window's
    request. The hints are short (at most ``MAX_HINTS`` schemas, ~100 tokens each), so they cost a little of each
    window's room rather than being dropped: the room for steps is the context less the hints, the instructions and
    the answer. The final choice among the windows' picks sees them too: the candidates' steps are fitted into the
    room the hints leave."""
    from .all_at_once import _choose, _read, _validator, reserve

    last = len(trace.steps) - 1
    need = reserve(
        llm,
        hints
        + prompts.window(
            trace, "", with_ground_truth=with_ground_truth, first=last, last=last, number=999, count=999
        ),
    )
    windows = llm.windows(trace, need)
    picks = []
    for number, window in enumerate(windows, start=1):
        user = hints + prompts.window(
            trace,
            llm.render_window(trace, window),
            with_ground_truth=with_ground_truth,
            first=window.first,
            last=window.last,
            number=number,
            count=len(windows),
        )
        answer = llm.complete_json(
            system=prompts.SYSTEM_PROMPT,
            user=user,
            purpose=f"schema_guided window {number}/{len(windows)}",
            validate=_validator(trace, window.first, window.last),
        )
        picks.append(_read(answer) | {"first": window.first, "last": window.last, "answer": answer})
    return _choose(trace, llm, picks, with_ground_truth, hints, method="schema_guided") | {
        "windows": [
            [w.first, w.last] if w.parts == 1 else [w.first, w.last, w.part, w.parts] for w in windows
        ]
    }


METHOD = SchemaGuided()
