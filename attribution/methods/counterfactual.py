"""Counterfactual attribution: correct steps, replay the run, and return the earliest step whose correction alone turns
the failure into a success (the decisive-error definition itself, as AgenTracer uses it).

Candidates are the agents' actions (tool output is never corrected: blame goes to the action behind it), in step
order; with ``prune=True`` they are first pruned to the ancestors of the final step in the dependency graph
(``attribution.graph``), falling back to every action when that misses. Pruning is off by default: in a failed run
the final step usually carries the *wrong* value, which the graph links to little (1.5 of 13.9 actions on 287
sandbox traces), so the pruned search missed the culprit in 72% of them and cost more replays in all (4.97 against
4.63 per trace). Instead of
AgenTracer's step-by-step scan, the method binary-searches the smallest m such that correcting *every* candidate up to
the m-th turns the run into a success -- valid when the outcome is monotone in that prefix, as it is whenever
correcting a sound step changes nothing -- which takes about log2(n) replays, then confirms that correcting the found
step *alone* flips the run. When the confirmation fails (the outcome was not monotone, or the pruned candidates miss
the culprit) it falls back to a scan of single-step corrections, over every action if need be. Every replay is
recorded in ``details["replays"]``, and a replay asked for twice is answered from memory.

Replays come from a ``Replayer`` (``attribution.replay``): passed in as ``replayer=``, or, for sandbox traces, rebuilt
from the trace's name (``SandboxReplayer.for_trace``, ``SandboxV2Replayer.for_trace``), which is why the method needs
no LLM and no database there.

**Guided search** (sandbox v2 traces, or any trace when a ``ranker`` is passed). In v2 a correction is a resample:
it may slip again, and correcting a long prefix of sound steps resamples each of them, so prefix replays grow noisy
with their length. The decisive step is defined by *single* corrections, so the search keeps only what it needs: the
decisive step lies in a window of candidates (first the whole run), and one replay correcting the window's first
part says which part holds the earliest step that flips the run. Where to cut is the analyzer's call: the ``ranker``
(a callable trace -> suspicion per step, by default the offline heuristic's scores) is read as a distribution over
the actions, mixed with a uniform share ``UNIFORM_SHARE`` so that a wrong ranking costs a bounded number of extra
replays, and each cut halves the suspicion left in the window -- a suspicion-weighted bisection, about log2(actions)
replays with an uninformative ranker and fewer with a good one. The step found is confirmed alone; when that fails
(a resample slipped again inside a window) a scan of single corrections in step order settles it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..graph import ancestors, build_graph
from ..replay.base import Budget, Replayer, ReplayError
from .base import MethodError, MethodResult, TraceView

if TYPE_CHECKING:
    from ..llm import LlmClient

DEFAULT_MAX_REPLAYS = 200

# A ranker reads the trace and returns a suspicion score per step (higher: more likely the decisive error).
Ranker = Callable[[TraceView], list[float]]

# The guided search trusts the ranker with all but this share of the suspicion: each action keeps at least
# UNIFORM_SHARE / n of it, so a confidently wrong ranking costs at most log2(1 / UNIFORM_SHARE) = 1 extra replay.
# Measured on v2 seed 7 (194 injected, 125 natural failures; not the benchmark's seed 1), mean replays with the
# heuristic's ranking: 5.16 / 5.24 at a share of 0.25, 5.19 / 5.38 at 0.5, 4.84 / 4.94 at 0.75, and 4.78 / 4.34
# with no ranking at all -- the heuristic ranks v2's decisive steps poorly (first in 20%), so 0.5 caps its cost
# while leaving room for a ranker that knows better (a learned one).
UNIFORM_SHARE = 0.5


class ReplayStore(Protocol):
    """Where finished replays are kept by their corrected steps ("3,7"), so a search resumed after a crash reads
    them back instead of replaying again (``attribution.services.RunReplayStore``)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, replay: dict[str, Any]) -> None: ...


class _Search:
    """Replays for one trace, memoised by the set of corrected steps, each recorded."""

    def __init__(
        self, trace: TraceView, replayer: Replayer, budget: Budget, store: ReplayStore | None = None
    ) -> None:
        self.trace = trace
        self.replayer = replayer
        self.budget = budget
        self.store = store
        self.stored_cost = 0.0
        self.proposals: dict[int, str] = {}
        self.outcomes: dict[frozenset[int], bool] = {}
        self.replays: list[dict[str, Any]] = []
        self.answers: dict[frozenset[int], str] = {}

    def proposal(self, index: int) -> str:
        if index not in self.proposals:
            self.proposals[index] = self.replayer.propose(self.trace, index)
        return self.proposals[index]

    def succeeds(self, indices: list[int], purpose: str) -> bool:
        key = frozenset(indices)
        if key not in self.outcomes:
            name = ",".join(str(i) for i in sorted(key))
            replay = self.store.get(name) if self.store is not None else None
            if (
                replay is None
            ):  # not replayed before (a re-delivered search finds its finished replays stored)
                corrections = {i: self.proposal(i) for i in sorted(key)}
                tokens_before = self.budget.tokens
                result = self.replayer.replay(self.trace, corrections, budget=self.budget)
                replay = {
                    "purpose": purpose,
                    "corrections": sorted(key),
                    "corrected_content": {str(i): c for i, c in corrections.items()},
                    "outcome": result.outcome,
                    "final_answer": result.final_answer,
                    "continuation": result.continuation,
                    "cost": result.cost,
                    "tokens": self.budget.tokens - tokens_before,
                    "details": result.details,
                }
                if self.store is not None:
                    self.store.put(name, replay)
            else:
                replay = {**replay, "purpose": purpose}
                self.stored_cost += float(replay.get("cost") or 0)
            self.outcomes[key] = replay["outcome"] == "success"
            self.answers[key] = replay["final_answer"]
            self.replays.append(replay)
        return self.outcomes[key]

    def binary(self, candidates: list[int]) -> int | None:
        """The smallest prefix of candidates whose correction flips the run, confirmed by its last step alone."""
        lo, hi = (
            -1,
            len(candidates) - 1,
        )  # prefix(lo) fails (-1: the recorded run); prefix(hi) presumed to succeed
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.succeeds(candidates[: mid + 1], "prefix"):
                hi = mid
            else:
                lo = mid
        found = candidates[hi]
        return found if self.succeeds([found], "confirm") else None

    def scan(self, candidates: list[int]) -> int | None:
        for index in candidates:
            if self.succeeds([index], "scan"):
                return index
        return None

    def guided(self, candidates: list[int], weights: list[float]) -> int | None:
        """The earliest candidate whose correction alone flips the run, by windows cut where the suspicion left in
        the window is halved; confirmed alone. Invariant: the step sought lies in candidates[lo+1 .. hi]."""
        lo, hi = -1, len(candidates) - 1
        while hi - lo > 1:
            mid = _cut(weights, lo, hi)
            if self.succeeds(candidates[lo + 1 : mid + 1], "window"):
                hi = mid
            else:
                lo = mid
        found = candidates[hi]
        return found if self.succeeds([found], "confirm") else None


def _find(
    search: _Search, actions: list[int], pruned: list[int], weights: list[float] | None
) -> tuple[int | None, str]:
    """The decisive step and how it was found: guided bisection when there are weights, else binary search over
    prefixes (pruned candidates first); a scan of single corrections when those miss."""
    if weights is not None:
        found = search.guided(actions, weights)
        if found is not None:
            return found, "bisection guided by the ranker"
    else:
        for label, candidates in (("pruned", pruned), ("all", actions)):
            if label == "all" and candidates == pruned:
                continue
            found = search.binary(candidates)
            if found is not None:
                return found, f"binary search over {label} candidates"
    return search.scan(actions), "scan of single-step corrections"


def _cut(weights: list[float], lo: int, hi: int) -> int:
    """The mid in [lo+1, hi-1] that best halves the weight of candidates lo+1 .. hi (earliest on ties)."""
    total = sum(weights[lo + 1 : hi + 1])
    best, gap, left = lo + 1, float("inf"), 0.0
    for mid in range(lo + 1, hi):
        left += weights[mid]
        if abs(2 * left - total) < gap:
            best, gap = mid, abs(2 * left - total)
    return best


def heuristic_ranker(trace: TraceView) -> list[float]:
    """The default ranking: the offline heuristic's suspicion per step (it reads the trace only)."""
    from .heuristic import METHOD as HEURISTIC

    return HEURISTIC.run(trace, with_ground_truth=True).scores


def _weights(trace: TraceView, actions: list[int], ranker: Ranker) -> list[float]:
    """The ranker's suspicion over the actions as a distribution, mixed with a uniform share."""
    try:
        scores = list(ranker(trace))
    except MethodError:
        scores = []
    raw = [max(float(scores[i]), 0.0) if i < len(scores) else 0.0 for i in actions]
    total = sum(raw)
    n = len(actions)
    if total <= 0:
        return [1.0 / n] * n
    return [(1 - UNIFORM_SHARE) * r / total + UNIFORM_SHARE / n for r in raw]


class Counterfactual:
    name = "counterfactual"
    label = "Counterfactual replay (sandbox offline; your replay hook or the model otherwise)"
    needs_llm = False
    needs_replayer = True  # the service hands it the project's replayer (sandbox or HTTP hook)

    def run(
        self,
        trace: TraceView,
        *,
        llm: LlmClient | None = None,
        with_ground_truth: bool = True,
        replayer: Replayer | None = None,
        budget: Budget | None = None,
        prune: bool = False,
        store: ReplayStore | None = None,
        ranker: Ranker | None = None,
    ) -> MethodResult:
        if not trace.steps:
            raise MethodError("the trace has no steps")
        if trace.outcome in ("succeeded", "success"):
            raise MethodError("the run succeeded: there is no decisive error to find")
        from ..replay.sandbox_v2 import parse_name as parse_v2_name

        if ranker is None and parse_v2_name(trace.name) is not None:
            ranker = heuristic_ranker  # v2 sandbox runs: resamples are noisy, so the search is guided
        if replayer is None:
            replayer = _sandbox_replayer(trace)
        budget = budget or Budget(max_replays=DEFAULT_MAX_REPLAYS)
        actions = [
            s.index for s in trace.steps if s.agent and s.kind not in ("tool_result", "human", "system")
        ]
        if not actions:
            raise MethodError("the trace has no agent actions to correct")
        final = actions[-1]
        pruned = sorted((ancestors(build_graph(trace), final) | {final}) & set(actions)) if prune else actions
        search = _Search(trace, replayer, budget, store)
        try:
            found, strategy = _find(
                search, actions, pruned, _weights(trace, actions, ranker) if ranker else None
            )
        except ReplayError as exc:  # budget exhausted or the replayer refused
            raise MethodError(f"counterfactual search stopped: {exc}") from None
        spent = budget.cost + search.stored_cost  # replays read back after a crash cost what they cost then
        details = {
            "replays": search.replays,
            "replay_count": len(search.replays),
            "candidates": pruned,
            "actions": actions,
            "final_step": final,
            "strategy": strategy,
            "cost": spent,
        }
        if found is None:
            return MethodResult(
                agent="",
                step=-1,
                confidence=0.0,
                scores=[0.0] * len(trace.steps),
                reason="no single corrected step turns this run into a success",
                details=details,
                cost=spent,
                **_calls(replayer),
            )
        agent = trace.steps[found].agent
        answer = search.answers[frozenset([found])]
        reason = (
            f"Correcting step {found} ({agent}) alone turns the failed run into a success (final answer "
            f"{answer}). Found by {strategy} in {len(search.replays)} replays."
        )
        scores = [1.0 if i == found else 0.0 for i in range(len(trace.steps))]
        return MethodResult(
            agent=agent,
            step=found,
            confidence=1.0,
            reason=reason,
            scores=scores,
            cost=spent,
            details=details,
            **_calls(replayer),
        )


def _sandbox_replayer(trace: TraceView) -> Replayer:
    """The built-in sandbox's replayer for a sandbox trace, rebuilt from its name (v2 names first)."""
    from ..replay.sandbox import SandboxReplayer
    from ..replay.sandbox_v2 import SandboxV2Replayer, parse_name

    try:
        if parse_name(trace.name) is not None:
            return SandboxV2Replayer.for_trace(trace)
        return SandboxReplayer.for_trace(trace)
    except ReplayError as exc:
        raise MethodError(f"no replayer for this trace: {exc}") from None


def _calls(replayer: Replayer) -> dict[str, int]:
    """The model calls and tokens a replayer that calls a model (the LLM simulator) spent, for the verdict."""
    usage = getattr(replayer, "usage", None)
    if usage is None:
        return {}
    spent = usage()
    return {"calls": spent.calls, "input_tokens": spent.input_tokens, "output_tokens": spent.output_tokens}


METHOD = Counterfactual()
