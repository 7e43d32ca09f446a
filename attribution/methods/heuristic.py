"""Offline attribution from explainable signals: no LLM, and every point of suspicion has a sentence behind it.

Detectors read the trace and emit ``Signal``s (step, signal, weight, text). A step's score is the log of its prior
(how often a step in its role and position is decisive) plus the weights of the signals on it; each weight is the
signal's log likelihood ratio, log P(fires | decisive step) / P(fires | other step) -- a naive-Bayes score, so a
weight says how much more likely the signal makes a step to be the culprit, and the relative scores are readable as
odds. The verdict is the *earliest* step whose score is within ``NEAR_TOP`` of the best, because the decisive error
is by definition the earliest step whose correction would have saved the run.

Blame goes to whoever acted: a tool's output (a terminal printing a traceback, an empty search result) is charged to
the step that produced it, never to the tool speaker.

Every constant was measured on the dev split of Who&When only (80 runs: 27 Hand-Crafted, 53 Algorithm-Generated,
2,019 steps; ``attribution.splits``). Weights were measured, not searched: a search over all of them reached higher
dev figures but did worse on the half of dev it was not fitted to than these measured ratios do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import TYPE_CHECKING

from ..graph import build_graph, dependencies, tokens_of
from ..prefilter import folded
from .base import MethodResult, StepView, TraceView
from .heuristic_reason import reason
from .heuristic_text import (  # noqa: F401 - _EMPTY, _MADE_UP, _TOOL_ERROR: attribution.schemas.features reads them
    _CODE,
    _DONE_SCAN,
    _EMPTY,
    _EMPTY_SCAN,
    _FINAL_ANSWER,
    _FINAL_ANSWER_SCAN,
    _MADE_UP,
    _MADE_UP_SCAN,
    _NO_CODE_SCAN,
    _TOOL_ERROR,
    _TOOL_ERROR_SCAN,
    _contains,
    _Lazy,
    _norm,
    _snippet,
    _StepSearch,
    _unseparated,
    _without_code,
    _words_of,
)

if TYPE_CHECKING:
    import networkx as nx

    from ..learning.calibration import Calibration
    from ..llm import LlmClient


# --- measured constants ----------------------------------------------------------------------------------------------

# P(decisive | role, rank of the step among the trace's steps of that role), measured on dev with add-half
# smoothing: (hits + 0.5) / (steps + 1). "worker": an agent that acts without addressing others; "planner": one that
# addresses others or thinks aloud (Magentic-One's Orchestrator). Rank 4 stands for 4 and later. Tool output and
# human turns were never decisive (0 of 173 dev steps): blame goes to the action behind them, so they are not
# candidates and take PRIOR_FLOOR.
PRIORS: dict[str, dict[tuple[str, int], float]] = {
    # 53 AG2 group chats (no planner): the first expert's restated task and plan (13 of 53) and the next reply
    # (15 of 53) are decisive most often.
    "group": {
        ("worker", 0): 0.250,
        ("worker", 1): 0.287,
        ("worker", 2): 0.194,
        ("worker", 3): 0.102,
        ("worker", 4): 0.088,
    },
    # 27 Magentic-One runs: a worker's first two reports (4 and 5 of 27) dominate; the planner's instructions are
    # decisive 5 times in 360, its thoughts 5 times in 823.
    "orchestrated": {
        ("worker", 0): 0.161,
        ("worker", 1): 0.204,
        ("worker", 2): 0.096,
        ("worker", 3): 0.062,
        ("worker", 4): 0.024,
        ("planner-message", 0): 0.089,
        ("planner-message", 1): 0.056,
        ("planner-message", 2): 0.019,
        ("planner-message", 3): 0.062,
        ("planner-message", 4): 0.006,
        ("planner-thought", 0): 0.018,
        ("planner-thought", 1): 0.018,
        ("planner-thought", 2): 0.019,
        ("planner-thought", 3): 0.019,
        ("planner-thought", 4): 0.008,
    },
}
PRIOR_FLOOR = 0.005

# Log likelihood ratios with add-one smoothing: log(((a + 1) / 82) / ((b + 1) / 1941)) where a of the 80 decisive
# dev steps and b of the 1,939 other dev steps carry the signal. answer_origin was measured with the ground truth
# withheld (it stands in for wrong_value then).
WEIGHTS: dict[str, float] = {
    "first_code": 3.16,  # 24 decisive, 24 others: the first code written is the likeliest culprit in AG2 runs
    "handover": 3.05,  # 16, 18
    "tool_error": 2.96,  # 21, 26
    "runtime_error": 2.90,  # 9, 12
    "answer_origin": 2.83,  # 24, 34 (ground truth withheld)
    "wrong_value": 2.80,  # 22, 32
    "accepted": 2.25,  # 1, 4
    "made_up": 2.07,  # 13, 41
    "empty_result": 1.81,  # 6, 26
    "ancestor": 1.68,  # 38, 171
    "code": 1.40,  # 11, 69
    "premature_termination": 0.55,  # 2, 40: names the closer, rarely the decisive step itself
    "loop": 0.0,  # 1, 50 (measured -0.07): a loop is a symptom long after the cause; reported, not weighed
}

# The earliest candidate whose score is within this much (log odds) of the best is the verdict: a step at least
# e^-0.25 = 78% as likely as the best one. On dev, any value from 0 to 1.0 moves each figure by one run at most.
NEAR_TOP = 0.25

# Naive Bayes double-counts correlated signals and is overconfident: the raw posterior of the verdict averaged 0.78
# on dev while 46% of verdicts had the right step. Scores are divided by this temperature before the confidence is
# taken; 3.0 brings the mean to 0.46 and minimises the Brier score on dev (0.232, against 0.341 untempered).
CONFIDENCE_TEMPERATURE = 3.0

# Taxonomy codes (attribution.taxonomy) for the signals that name a failure, in the order they are preferred when
# several fire on the verdict's step: an observed failure names the category better than "it wrote the code".
CATEGORIES = {
    "wrong_value": "memory.hallucination",
    "made_up": "memory.hallucination",
    "tool_error": "system.tool_execution_error",
    "runtime_error": "system.tool_execution_error",
    "empty_result": "memory.retrieval_failure",
    "accepted": "mast.3.3",
    "handover": "mast.3.3",
    "answer_origin": "memory.hallucination",
    "premature_termination": "mast.3.1",
    "loop": "mast.1.3",
    "first_code": "action.invalid_action",
    "code": "action.invalid_action",
}


# --- signals ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    step: int
    signal: str
    weight: float
    text: str


# The answer's values are looked for in its last characters (a long AG2 message ends with its conclusion) ...
_ANSWER_TAIL = 800
# ... and an answer this short is also read as a list of items ("Muscle Headz Gym, Ohio WV YMCA").
_SHORT_ANSWER = 200


class _Context:
    """What every detector needs, computed once: the graph, who produced each tool output, roles and the answer."""

    def __init__(self, trace: TraceView, with_ground_truth: bool) -> None:
        self.trace = trace
        self.steps = steps = trace.steps
        self.deps = dependencies(trace)
        self.producer = self._producers()
        # What the detectors read of each step, each computed once: the text they search (a tool's output whole,
        # a message without its code blocks), its folded form for the hints, the matches, the normalised words.
        self.text = _Lazy(
            len(steps),
            lambda i: steps[i].content if steps[i].kind == "tool_result" else _without_code(steps[i].content),
        )
        self.low = _Lazy(len(steps), lambda i: folded(steps[i].content))
        # Most steps hold no code block, and their text is their content (``re.sub`` hands back the very string):
        # the same folded text and the same answers, not computed twice.
        self.low_text = _Lazy(
            len(steps),
            lambda i: self.low[i] if self.text[i] is steps[i].content else folded(self.text[i]),
        )
        self.tool_error = _Lazy(
            len(steps), lambda i: _TOOL_ERROR_SCAN.search_folded(self.text[i], self.low_text[i])
        )
        self.empty = _Lazy(len(steps), lambda i: _EMPTY_SCAN.search_folded(self.text[i], self.low_text[i]))
        self.no_code = _Lazy(len(steps), lambda i: _NO_CODE_SCAN.search_folded(steps[i].content, self.low[i]))
        self.no_code_text = _Lazy(
            len(steps),
            lambda i: (
                self.no_code[i]
                if self.text[i] is steps[i].content
                else _NO_CODE_SCAN.search_folded(self.text[i], self.low_text[i])
            ),
        )
        self.final_answer = _Lazy(
            len(steps), lambda i: _FINAL_ANSWER_SCAN.search_folded(steps[i].content, self.low[i])
        )
        self.unseparated = _Lazy(len(steps), lambda i: _unseparated(steps[i].content))
        # ``normed`` is ``_norm(content)``; the loop detector reads its words, which are kept to spare a split.
        self.words = _Lazy(len(steps), lambda i: _words_of(self.unseparated[i]))
        self.normed = _Lazy(len(steps), lambda i: " ".join(self.words[i]))
        self.planners = planners_of(trace)
        self.style = "orchestrated" if self.planners else "group"
        self.final = self._final_step()
        self.answer = self._answer_text()
        self.ground_truth = trace.ground_truth.strip() if with_ground_truth else ""
        truth = _norm(self.ground_truth)
        self.answer_wrong = bool(truth and self.answer and not _contains(_norm(self.answer), truth))
        self.search: _StepSearch | None = None  # built when the answer's values are looked for
        self.closer = (
            ""  # the agent that declared the task done while it was not (set by premature termination)
        )

    @cached_property
    def cells(self) -> tuple[str, list[tuple[str, int]]]:
        """``cells(trace)``, read by the priors and again by the verdict's "Why"."""
        return cells(self.trace, self.planners)

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The dependency graph as networkx, built only for those who read it as a graph (the learned features)."""
        return build_graph(self.trace, self.deps)

    def _producers(self) -> dict[int, int]:
        # A step has at most one parent edge (attribution.graph._producers), so it is that edge's source.
        parent = dict(self.deps.producers)
        return {
            i: parent[i] for i, step in enumerate(self.steps) if step.kind == "tool_result" and i in parent
        }

    def blamed(self, i: int) -> int:
        """The step answerable for step i: i itself, or the action whose output i is."""
        return self.producer.get(i, i)

    def is_action(self, step: StepView) -> bool:
        return step.kind not in ("tool_result", "human", "system") and bool(step.agent)

    def role(self, step: StepView) -> str:
        return role_of(step, self.planners)

    def _final_step(self) -> int:
        """The step that carries the run's answer: a FINAL ANSWER line, else the last substantive action."""
        for i in range(len(self.steps) - 1, -1, -1):
            if self.final_answer[i]:
                return self.steps[i].index
        for step in reversed(self.steps):
            if self.is_action(step) and step.content.strip().upper() != "TERMINATE":
                return step.index
        return len(self.steps) - 1

    def _answer_text(self) -> str:
        content = self.steps[self.final].content if self.steps else ""
        match = _FINAL_ANSWER.search(content)
        if match:
            return match[1].strip()
        # A run that crashed (a traceback and no answer line) has no answer to trace.
        return "" if "Traceback (most recent call last)" in content else content.strip()


def _detect_tool_errors(ctx: _Context) -> Iterator[Signal]:
    """Exit codes, tracebacks, exceptions, HTTP 4xx/5xx, "failed": charged to the action whose output shows them
    (tool_error), or to the agent whose own message carries one (runtime_error: a crashed browser, a task that is
    itself an error log). Code blocks in messages are skipped: ``except ValueError:`` is not an error."""
    for i, step in enumerate(ctx.steps):
        if step.kind in ("human", "system") or not (match := ctx.tool_error[i]):
            continue
        blamed = ctx.blamed(step.index)
        if blamed != step.index:
            yield Signal(
                blamed,
                "tool_error",
                WEIGHTS["tool_error"],
                f"step {blamed}: tool error '{_snippet(match[0], 40)}' in its output (step {step.index})",
            )
        else:
            yield Signal(
                blamed,
                "runtime_error",
                WEIGHTS["runtime_error"],
                f"step {blamed}: error '{_snippet(match[0], 40)}' in {step.agent}'s own message",
            )


def _detect_empty_results(ctx: _Context) -> Iterator[Signal]:
    """Results that came back empty or "not found". A result is a tool's output or, in orchestrated runs, a
    worker's report to the planner (WebSurfer describing the page it reached)."""
    for i, step in enumerate(ctx.steps):
        is_result = step.kind == "tool_result" or (ctx.style == "orchestrated" and ctx.role(step) == "worker")
        if not is_result or ctx.no_code[i]:
            continue
        match = ctx.empty[i]
        if match is None and step.content.strip():
            continue
        blamed = ctx.blamed(step.index)
        found = f"'{_snippet(match[0], 30)}'" if match else "nothing"
        yield Signal(
            blamed,
            "empty_result",
            WEIGHTS["empty_result"],
            f"step {blamed}: empty or failed result ({found} in step {step.index})",
        )


_LOOP_TEXT = 4000  # characters of a step compared
# A step's triples tried first against each earlier step: one in this many (see _detect_loops).
_LOOP_SAMPLE = 4


def _shingles(words: list[str]) -> set[str]:
    """The word triples of normalised text, each as its three words joined by spaces: a word holds no space, so two
    joined triples are equal exactly when the triples are (and joining costs less than hashing tuples: 0.9 against
    1.2 ms per Who&When run)."""
    return set(map(" ".join, zip(words, words[1:], words[2:])))


def _detect_loops(ctx: _Context) -> Iterator[Signal]:
    """A step that repeats (Jaccard >= 0.8 on word triples) an earlier step of the same agent: a stuck agent."""
    seen: dict[str, list[tuple[int, set]]] = {}
    for i, step in enumerate(ctx.steps):
        if not ctx.is_action(step):
            continue
        content = step.content
        words = ctx.words[i] if len(content) <= _LOOP_TEXT else _words_of(_unseparated(content[:_LOOP_TEXT]))
        if len(words) < 22:
            continue  # fewer than 20 triples
        shingles = _shingles(words)
        n = len(shingles)
        if n < 20:
            continue
        sample = set(islice(shingles, n // _LOOP_SAMPLE + 1))
        k = len(sample)
        for earlier, other in seen.get(step.agent, []):
            m = len(other)
            # The overlap is at most the smaller set and the union at least the larger: sets of too different
            # sizes cannot reach 0.8, and are not intersected (most pairs of a long run). Compared without min()
            # and max(), two calls for each of the pairs.
            if (m < 0.8 * n) if m <= n else (n < 0.8 * m):
                continue
            # Every triple of the sample missing from the other step is missing from the overlap: when even the
            # rest of the step could not lift the overlap to 0.8, the pair is settled for a quarter of the probes.
            bound = n - k + len(sample & other)
            if bound < 0.8 * (n + m - bound):
                continue
            common = len(shingles & other)
            if common >= 0.8 * (n + m - common):
                yield Signal(
                    step.index,
                    "loop",
                    WEIGHTS["loop"],
                    f"step {step.index}: {step.agent} repeats step {earlier} almost word for word",
                )
                break
        seen.setdefault(step.agent, []).append((step.index, shingles))


def _detect_premature_termination(ctx: _Context) -> Iterator[Signal]:
    """Declaring the task done while the last tool result is an error, or in a run known to have failed. The
    signal sits on the first declaration; the agent of the last one (who actually ended the run) is the closer."""
    unresolved: int | None = None
    failed = ctx.trace.outcome == "failed" or ctx.answer_wrong
    fired = False
    for i, step in enumerate(ctx.steps):
        if step.kind == "tool_result" or (
            step.agent and step.agent not in ctx.planners and ctx.style != "group"
        ):
            if ctx.tool_error[i] or (ctx.empty[i] and not ctx.no_code_text[i]):
                unresolved = step.index
            elif step.kind == "tool_result" and not ctx.no_code_text[i]:
                unresolved = None
        if (
            not ctx.is_action(step)
            or not _DONE_SCAN.search_folded(step.content, ctx.low[i])
            or (step.index == ctx.final and ctx.final_answer[i])
        ):
            continue
        if unresolved is None and not failed:
            continue
        ctx.closer = step.agent
        if fired:
            continue
        fired = True
        if unresolved is not None:
            yield Signal(
                step.index,
                "premature_termination",
                WEIGHTS["premature_termination"],
                f"step {step.index}: {step.agent} ends the task while the error of step {unresolved} "
                "is unresolved",
            )
        else:
            yield Signal(
                step.index,
                "premature_termination",
                WEIGHTS["premature_termination"],
                f"step {step.index}: {step.agent} declares the task done, but the run failed",
            )


_BOLD = re.compile(r"\*\*([^*\n]{2,80})\*\*")
_NAME = re.compile(r"\b[A-Z][\w'&.-]*(?:\s+(?:of|de|the|and|&)?\s*[A-Z][\w'&.-]*){1,4}")
_COMMON = frozenset(
    "the a an and or of to in on for is are was be it this that with as by at from not no yes".split()
)


def _answer_values(ctx: _Context) -> list[str]:
    """The values the final answer states: numbers, URLs, quoted strings and identifiers (the graph's tokens), bold
    text, capitalised names and, for a short answer, its comma-separated items; minus what the question and the
    system prompts already say (those are given, not produced)."""
    text = _without_code(ctx.answer).replace("TERMINATE", " ")[-_ANSWER_TAIL:]
    # The given text is normalised only when a value's words are all in it (Magentic-One's system prompts run to
    # 5,000 characters): a value lacking one of them cannot be in its normal form (see ``_steps_with``).
    given_unseparated = _unseparated(" ".join([ctx.trace.question, *ctx.trace.system_prompts.values()]))
    given = None
    raw = [*tokens_of(text), *_BOLD.findall(text), *_NAME.findall(text)]
    if len(text) <= _SHORT_ANSWER:
        raw += re.split(r"[,;\n]| and ", text)
    values = []
    for item in raw:
        normed = _norm(item)
        words = normed.split()
        if len(normed) < 2 or all(w in _COMMON for w in words):
            continue
        if all(w in given_unseparated for w in words):
            if given is None:
                given = " ".join(_words_of(given_unseparated))
            if _contains(given, normed):
                continue
        values.append(normed)
    return list(dict.fromkeys(values))


def _steps_with(ctx: _Context, value: str, start: int = 0) -> Iterator[int]:
    """Each step i from ``start`` to the final one (excluded) for which ``_contains(ctx.normed[i], value)``, in
    order. A step that lacks one of the value's words is not normalised: every word of ``_norm(text)`` is a
    substring of ``_unseparated(text)``, so the value cannot be in it."""
    if ctx.search is None:
        ctx.search = _StepSearch(len(ctx.steps[: ctx.final]), ctx.unseparated, ctx.normed)
    return ctx.search.steps_with(value, start)


def _detect_answer_origin(ctx: _Context) -> Iterator[Signal]:
    """Where the final answer's value first appeared. When the ground truth says the answer is wrong, that step
    introduced the wrong value; without it, a failed run's answer is still the likeliest wrong value. The agent
    that then declared the task done had accepted the value: where it took it up is suspect too."""
    if not ctx.answer or (ctx.ground_truth and not ctx.answer_wrong):
        return  # no answer, or the ground truth says it is right: nothing wrong to trace
    if not ctx.answer_wrong and ctx.trace.outcome != "failed":
        return
    values = _answer_values(ctx)
    firsts = {}
    for value in values:
        first = next(_steps_with(ctx, value), None)
        if first is not None:
            firsts.setdefault(first, value)
    if not firsts:
        return
    first = min(firsts)
    value = firsts[first]
    blamed = ctx.blamed(first)
    name, weight = (
        ("wrong_value", WEIGHTS["wrong_value"])
        if ctx.answer_wrong
        else ("answer_origin", WEIGHTS["answer_origin"])
    )
    why = (
        f"(the ground truth is '{_snippet(ctx.ground_truth, 30)}')"
        if ctx.answer_wrong
        else "(the run failed)"
    )
    yield Signal(
        blamed,
        name,
        weight,
        f"step {blamed}: first appearance of '{_snippet(value, 30)}', a value of the final answer {why}",
    )
    origin_agent = ctx.steps[blamed].agent
    taker = next(
        (
            i
            for i in _steps_with(ctx, value, first + 1)
            if ctx.is_action(ctx.steps[i]) and ctx.steps[i].agent != origin_agent
        ),
        None,
    )
    if taker is not None:
        yield Signal(
            blamed,
            "handover",
            WEIGHTS["handover"],
            f"step {blamed}: {origin_agent} handed '{_snippet(value, 30)}' over; "
            f"{ctx.steps[taker].agent} took it up at step {taker}",
        )
    # Only a planner is answerable for checking what its workers hand it: in group chats (AG2) the expert who
    # closes the run is not blamed for the value it took over (measured on dev: it moved the verdict off the
    # origin in 4 of 53 AG2 runs and onto the right step in none).
    if ctx.closer in ctx.planners and ctx.closer != origin_agent:
        accepted = next(
            (
                i
                for i in _steps_with(ctx, value, first + 1)
                if ctx.steps[i].agent == ctx.closer and ctx.is_action(ctx.steps[i])
            ),
            None,
        )
        if accepted is not None:
            yield Signal(
                accepted,
                "accepted",
                WEIGHTS["accepted"],
                f"step {accepted}: {ctx.closer} accepts '{_snippet(value, 30)}' without checking it, "
                "then declares the task done",
            )


def _detect_made_up(ctx: _Context) -> Iterator[Signal]:
    """Invented inputs: placeholders, assumed or simulated data where a lookup was needed."""
    for i, step in enumerate(ctx.steps):
        if (
            ctx.is_action(step)
            and step.agent not in ctx.planners
            and (match := _MADE_UP_SCAN.search_folded(step.content, ctx.low[i]))
        ):
            yield Signal(
                step.index,
                "made_up",
                WEIGHTS["made_up"],
                f"step {step.index}: {step.agent} works from invented data ('{_snippet(match[0], 30)}')",
            )


def _detect_code(ctx: _Context) -> Iterator[Signal]:
    first = True
    for step in ctx.steps:
        if ctx.is_action(step) and _CODE.search(step.content):
            if first:
                yield Signal(
                    step.index,
                    "first_code",
                    WEIGHTS["first_code"],
                    f"step {step.index}: {step.agent} writes the run's first code",
                )
                first = False
            else:
                yield Signal(
                    step.index, "code", WEIGHTS["code"], f"step {step.index}: {step.agent} writes code"
                )


def _detect_ancestry(ctx: _Context, found: set[int]) -> Iterator[Signal]:
    for i in sorted(found):
        if ctx.is_action(ctx.steps[i]):
            yield Signal(
                i,
                "ancestor",
                WEIGHTS["ancestor"],
                f"step {i}: the final answer (step {ctx.final}) depends on it",
            )


# Premature termination runs before the answer's origin: it names the agent that closed the run (``ctx.closer``).
_DETECTORS = (
    _detect_tool_errors,
    _detect_empty_results,
    _detect_loops,
    _detect_premature_termination,
    _detect_answer_origin,
    _detect_made_up,
    _detect_code,
)


# --- verdict ---------------------------------------------------------------------------------------------------------


def planners_of(trace: TraceView) -> set[str]:
    """Agents that address others or think aloud (Magentic-One's Orchestrator); a run with one is orchestrated."""
    return {s.agent for s in trace.steps if s.agent and (s.recipient or s.kind == "thought")}


def role_of(step: StepView, planners: set[str]) -> str:
    if step.kind == "tool_result":
        return "tool"
    if step.kind in ("human", "system") or not step.agent:
        return "human"
    if step.agent in planners:
        return "planner-thought" if step.kind == "thought" else "planner-message"
    return "worker"


def cells(trace: TraceView, planners: set[str] | None = None) -> tuple[str, list[tuple[str, int]]]:
    """The run's style and each step's prior cell: (role, rank of the step among the trace's steps of that role,
    4 standing for 4 and later). What the priors are a table of, and what a project's calibration counts.
    ``planners``: ``planners_of(trace)`` when the caller has it already."""
    if planners is None:
        planners = planners_of(trace)
    seen: dict[str, int] = {}
    out = []
    for step in trace.steps:
        role = role_of(step, planners)
        rank = seen.get(role, 0)
        seen[role] = rank + 1
        out.append((role, min(rank, 4)))
    return ("orchestrated" if planners else "group"), out


def _log_priors(ctx: _Context, priors: dict[str, dict[tuple[str, int], float]]) -> list[float]:
    style, step_cells = ctx.cells
    table = priors[style]
    return [math.log(table.get(cell, PRIOR_FLOOR)) for cell in step_cells]


def _one_per_kind(signals: list[Signal]) -> list[Signal]:
    """A step counts each kind of signal once (three tracebacks in one output are one tool error)."""
    seen: set[tuple[int, str]] = set()
    out = []
    for signal in signals:
        if (signal.step, signal.signal) not in seen:
            seen.add((signal.step, signal.signal))
            out.append(signal)
    return out


def _candidates(ctx: _Context) -> list[int]:
    return [i for i, s in enumerate(ctx.steps) if ctx.is_action(s)] or list(range(len(ctx.steps)))


def _pick(raw: list[float], candidates: list[int]) -> int:
    top = max(raw[i] for i in candidates)
    return next(i for i in candidates if raw[i] >= top - NEAR_TOP)


@dataclass
class Analysis:
    """Everything the heuristic computes about a trace before it picks a step; the learned method reads it as
    features. ``raw`` is each step's log odds (prior plus signal weights), ``priors`` the prior part alone."""

    ctx: _Context
    signals: list[Signal]
    found: set[int]
    priors: list[float]
    raw: list[float]
    candidates: list[int]


def analyse(
    trace: TraceView,
    *,
    with_ground_truth: bool = True,
    priors: dict[str, dict[tuple[str, int], float]] | None = None,
) -> Analysis:
    """Detect every signal and score every step (``priors``: a project's calibrated table, else ``PRIORS``)."""
    ctx = _Context(trace, with_ground_truth)
    found = ctx.deps.ancestors(ctx.final)
    signals = _one_per_kind(
        [s for detect in _DETECTORS for s in detect(ctx)] + list(_detect_ancestry(ctx, found))
    )
    prior = _log_priors(ctx, priors or PRIORS)
    raw = list(prior)
    for signal in signals:
        raw[signal.step] += signal.weight
    return Analysis(ctx=ctx, signals=signals, found=found, priors=prior, raw=raw, candidates=_candidates(ctx))


# The description of the last calibration seen: the same for every trace of a run, and a tenth of a millisecond
# each to rebuild. The calibration itself is kept, so its identity cannot be taken over by a new object.
_DESCRIPTION: list = [None, None]


def _described(calibration: Calibration) -> dict:
    if _DESCRIPTION[0] is not calibration:
        _DESCRIPTION[:] = [calibration, calibration.describe()]
    return _DESCRIPTION[1]


def verdict(
    a: Analysis, trace: TraceView, priors: dict[str, dict[tuple[str, int], float]] | None = None
) -> tuple[str, int]:
    """The agent and step an analysis names: the most suspicious candidate, charged to the agent answerable for it.
    ``priors``: another prior table (a calibration's) to score the same signals with, as ``analyse`` would -- the
    learned models' cross-validation scores the project's heuristic on its folds from the analysis it already made."""
    raw = a.raw
    if priors is not None:
        raw = _log_priors(a.ctx, priors)
        for signal in a.signals:
            raw[signal.step] += signal.weight
    step = _pick(raw, a.candidates)
    return a.ctx.steps[a.ctx.blamed(step)].agent or (trace.agents[0] if trace.agents else ""), step


class Heuristic:
    name = "heuristic"
    label = "Heuristic signals (offline; priors calibrated on the project's own labels once it has 20)"
    needs_llm = False
    needs_calibration = True  # the service hands it the project's calibrated priors, when there are any

    def run(
        self,
        trace: TraceView,
        *,
        llm: LlmClient | None = None,
        with_ground_truth: bool = True,
        calibration: Calibration | None = None,
    ) -> MethodResult:
        if not trace.steps:
            return MethodResult(agent="", step=0, confidence=0.0, reason="the trace has no steps")
        table = calibration.priors_for(trace) if calibration is not None else None
        a = analyse(trace, with_ground_truth=with_ground_truth, priors=table)
        ctx, signals, found, raw, candidates = a.ctx, a.signals, a.found, a.raw, a.candidates
        agent, step = verdict(a, trace)
        top = max(raw)
        # Suspicion: odds relative to the most suspicious step (1.0 there). Confidence: the verdict's share of the
        # (tempered) odds over all candidates, its posterior under the same naive-Bayes reading.
        scores = [round(math.exp(r - top), 4) for r in raw]
        t = CONFIDENCE_TEMPERATURE
        confidence = math.exp((raw[step] - top) / t) / sum(math.exp((raw[i] - top) / t) for i in candidates)
        own = sorted(
            (s for s in signals if s.step == step and s.signal in CATEGORIES),
            key=lambda s: list(CATEGORIES).index(s.signal),
        )
        details = {
            "signals": [
                {"step": s.step, "signal": s.signal, "weight": s.weight, "text": s.text} for s in signals
            ],
            "ancestors": sorted(found),
            "final_step": ctx.final,
        }
        if table is not None:
            details["priors"] = _described(calibration) if calibration is not None else {}
        return MethodResult(
            agent=agent,
            step=step,
            confidence=round(confidence, 4),
            reason=reason(a, step, scores),
            category=CATEGORIES[own[0].signal] if own else "",
            scores=scores,
            details=details,
        )


METHOD = Heuristic()
