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
from the trace's name (``SandboxReplayer.for_trace``), which is why the method needs no LLM and no database there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..graph import ancestors, build_graph
from ..replay.base import Budget, Replayer, ReplayError
from .base import MethodError, MethodResult, TraceView

if TYPE_CHECKING:
    from ..llm import LlmClient

DEFAULT_MAX_REPLAYS = 200


class ReplayStore(Protocol):
    """Where finished replays are kept by their corrected steps ("3,7"), so a search resumed after a crash reads
    them back instead of replaying again (``attribution.services.RunReplayStore``)."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, replay: dict[str, Any]) -> None: ...


class _Search:
    """Replays for one trace, memoised by the set of corrected steps, each recorded."""

    def __init__(self, trace: TraceView, replayer: Replayer, budget: Budget, store: ReplayStore | None = None) -> None:
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
            if replay is None:  # not replayed before (a re-delivered search finds its finished replays stored)
                corrections = {i: self.proposal(i) for i in sorted(key)}
                tokens_before = self.budget.tokens
                result = self.replayer.replay(self.trace, corrections, budget=self.budget)
                replay = {"purpose": purpose, "corrections": sorted(key),
                          "corrected_content": {str(i): c for i, c in corrections.items()},
                          "outcome": result.outcome, "final_answer": result.final_answer,
                          "continuation": result.continuation, "cost": result.cost,
                          "tokens": self.budget.tokens - tokens_before, "details": result.details}
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
        lo, hi = -1, len(candidates) - 1  # prefix(lo) fails (-1: the recorded run); prefix(hi) presumed to succeed
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


class Counterfactual:
    name = "counterfactual"
    label = "Counterfactual replay (sandbox offline; your replay hook or the model otherwise)"
    needs_llm = False
    needs_replayer = True  # the service hands it the project's replayer (sandbox or HTTP hook)

    def run(self, trace: TraceView, *, llm: LlmClient | None = None, with_ground_truth: bool = True,
            replayer: Replayer | None = None, budget: Budget | None = None, prune: bool = False,
            store: ReplayStore | None = None) -> MethodResult:
        if not trace.steps:
            raise MethodError("the trace has no steps")
        if trace.outcome in ("succeeded", "success"):
            raise MethodError("the run succeeded: there is no decisive error to find")
        if replayer is None:
            from ..replay.sandbox import SandboxReplayer

            try:
                replayer = SandboxReplayer.for_trace(trace)
            except ReplayError as exc:
                raise MethodError(f"no replayer for this trace: {exc}") from None
        budget = budget or Budget(max_replays=DEFAULT_MAX_REPLAYS)
        actions = [s.index for s in trace.steps if s.agent and s.kind not in ("tool_result", "human", "system")]
        if not actions:
            raise MethodError("the trace has no agent actions to correct")
        final = actions[-1]
        pruned = sorted((ancestors(build_graph(trace), final) | {final}) & set(actions)) if prune else actions
        search = _Search(trace, replayer, budget, store)
        found, strategy = None, ""
        try:
            for label, candidates in (("pruned", pruned), ("all", actions)):
                if label == "all" and candidates == pruned:
                    continue
                found = search.binary(candidates)
                if found is not None:
                    strategy = f"binary search over {label} candidates"
                    break
            if found is None:
                found = search.scan(actions)
                strategy = "scan of single-step corrections"
        except ReplayError as exc:  # budget exhausted or the replayer refused
            raise MethodError(f"counterfactual search stopped: {exc}") from None
        spent = budget.cost + search.stored_cost  # replays read back after a crash cost what they cost then
        details = {"replays": search.replays, "replay_count": len(search.replays), "candidates": pruned,
                   "actions": actions, "final_step": final, "strategy": strategy, "cost": spent}
        if found is None:
            return MethodResult(agent="", step=-1, confidence=0.0, scores=[0.0] * len(trace.steps),
                                reason="no single corrected step turns this run into a success", details=details,
                                cost=spent, **_calls(replayer))
        agent = trace.steps[found].agent
        answer = search.answers[frozenset([found])]
        reason = (f"Correcting step {found} ({agent}) alone turns the failed run into a success (final answer "
                  f"{answer}). Found by {strategy} in {len(search.replays)} replays.")
        scores = [1.0 if i == found else 0.0 for i in range(len(trace.steps))]
        return MethodResult(agent=agent, step=found, confidence=1.0, reason=reason, scores=scores,
                            cost=spent, details=details, **_calls(replayer))


def _calls(replayer: Replayer) -> dict[str, int]:
    """The model calls and tokens a replayer that calls a model (the LLM simulator) spent, for the verdict."""
    usage = getattr(replayer, "usage", None)
    if usage is None:
        return {}
    spent = usage()
    return {"calls": spent.calls, "input_tokens": spent.input_tokens, "output_tokens": spent.output_tokens}


METHOD = Counterfactual()
