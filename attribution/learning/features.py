"""Step features for the learned attribution method: framework-agnostic numbers and hashed words, one row per step.

Nothing here names an agent, a framework or a dataset. A step is described by

- where it is: absolute and relative position, its rank among the agent actions, the acting agent's turn index;
- what it is: its kind (message, thought, tool call, …) and role (worker, planner message or thought, tool, human);
- what it says: errors, tracebacks, refusals, hedges, numbers nobody produced before, repeated content, tool
  failures in its output, plan changes, code, final-answer markers, and every heuristic signal that fired on it;
- what the rest of the run does with it: the dependency graph (``attribution.graph``), how many later steps build
  on it, whether the final answer depends on it, whether it introduced a value of a final answer the ground truth
  contradicts (the heuristic's ``wrong_value``), and the heuristic's own log odds and rank;
- and its words: unigrams and bigrams hashed into ``HASH_FEATURES`` buckets (stateless, so a model is plain
  arrays; no vocabulary is stored).

``FEATURE_SET`` names this definition; a stored model records it and is refused by a different one.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ..graph import canonical_number
from ..methods.base import TraceView
from ..methods.heuristic import WEIGHTS, Analysis, analyse

FEATURE_SET = "steps-v2"
HASH_FEATURES = 2**14
_REACH_LIMIT = 4000  # steps; see _dependants
_TEXT_LIMIT = (
    4000  # characters of a step read for words and text signals (a 100 kB page says its piece early)
)

RANK_BINS = 6  # ranks 0..4 one-hot, the last bin for 5 and later

KINDS = ("message", "thought", "llm_call", "tool_call", "tool_result", "human", "system")
ROLES = ("worker", "planner-message", "planner-thought", "tool", "human")
SIGNALS = tuple(WEIGHTS)

_ERROR = re.compile(
    r"Traceback \(most recent call last\)|\b\w*(?:Error|Exception)\b|exit ?code:? [1-9]|\bfailed\b"
    r"|\b[45]\d\d\b (?:Client|Server|error)|\btimed? ?out\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:I (?:cannot|can't|am unable|'m unable|could not|couldn't)|unable to|not able to"
    r"|I apologi[sz]e|sorry)\b",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(?:might|maybe|perhaps|possibly|probably|likely|seems?|appears?|assum\w*|approximately"
    r"|estimat\w*|roughly|not sure|uncertain|I think|I believe|guess)\b",
    re.IGNORECASE,
)
_PLAN = re.compile(
    r"\b(?:plan|instead|next step|alternative(?:ly)?|revis\w*|let'?s try|switch\w*|new approach"
    r"|change (?:of )?(?:plan|approach)|re-?plan\w*|step \d)\b",
    re.IGNORECASE,
)
_VERIFY = re.compile(
    r"\b(?:verif\w*|check\w*|confirm\w*|double-check\w*|validat\w*|cross-check\w*)\b", re.IGNORECASE
)
_FINAL = re.compile(
    r"FINAL ANSWER|final answer|\bTERMINATE\b|request satisfied|task (?:is )?complete", re.IGNORECASE
)
_CODE = re.compile(r"```|\bdef \w+\(|\bimport \w+|\bprint\(")
_URL = re.compile(r"https?://")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_WORDS = re.compile(r"[a-z][a-z0-9_']+")

DENSE = (
    "bias_action",
    "pos_rel",
    "pos_log",
    "pos_from_end_log",
    "is_first_action",
    "is_last_action",
    "action_rank_log",
    "action_rel",
    *(f"action_rank_{k}" for k in range(RANK_BINS)),
    *(f"kind_rank_{k}" for k in range(RANK_BINS)),
    *(f"turn_{k}" for k in range(2, RANK_BINS)),
    "n_steps_log",
    "n_actions_log",
    "n_agents",
    "turn_log",
    "turn_0",
    "turn_1",
    "turn_rel",
    "agent_share",
    "agent_order",
    "agent_first_seen_rel",
    *(f"kind_{k}" for k in KINDS),
    *(f"role_{r}" for r in ROLES),
    "style_orchestrated",
    "len_log",
    "error",
    "refusal",
    "hedge",
    "plan",
    "verify",
    "final_marker",
    "code",
    "url",
    "numbers_log",
    "new_numbers_log",
    "new_number_share",
    "repeat",
    "question_overlap",
    "output_error",
    "output_empty",
    "next_other_agent",
    "prev_error",
    *(f"sig_{s}" for s in SIGNALS),
    "descendants_log",
    "uses_out_log",
    "uses_in_log",
    "ancestor_of_final",
    "is_final",
    "dist_to_final_rel",
    "after_final",
    "first_after_error",
    "heur_raw",
    "heur_prior",
    "heur_top",
    "heur_rank_log",
    "heur_gap",
)
_COLUMN = {name: i for i, name in enumerate(DENSE)}


@dataclass
class TraceFeatures:
    """One trace's rows: ``dense`` (n_steps × len(DENSE)), ``words`` (sparse n_steps × HASH_FEATURES), which steps
    may be blamed (``candidates``), who is answerable for each step (``blamed``: a tool output is charged to the
    action that produced it) and the heuristic's own analysis (reused by the method's explanation)."""

    dense: np.ndarray
    words: sparse.csr_matrix
    candidates: list[int]
    blamed: list[int]
    analysis: Analysis
    offset: np.ndarray  # the heuristic's log odds per step: the model learns corrections to it
    agents: list[str]  # the agent answerable for each step (``blamed``'s agent), for the learned label priors
    ranks: list[int]  # each step's rank among the agent actions, -1 for other steps


_HASHER = None


def _hasher():
    global _HASHER
    if _HASHER is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _HASHER = HashingVectorizer(
            n_features=HASH_FEATURES,
            ngram_range=(1, 2),
            alternate_sign=False,
            norm="l2",
            lowercase=True,
            token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]{1,30}\b",  # noqa: S106 - a regex
            dtype=np.float32,
        )
    return _HASHER


def _numbers(text: str) -> list[str]:
    """The numbers ``text`` states, as values (a restated "1,814,443" is the tool's "1814443.0")."""
    return [canonical_number(n) for n in _NUMBER.findall(text)]


def _log(x: float) -> float:
    return math.log1p(max(0.0, x))


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[k : k + 3]) for k in range(len(words) - 2)}


def trace_features(
    trace: TraceView, *, with_ground_truth: bool = True, analysis: Analysis | None = None
) -> TraceFeatures:
    a = analysis or analyse(trace, with_ground_truth=with_ground_truth)
    ctx, steps = a.ctx, trace.steps
    n = len(steps)
    x = np.zeros((n, len(DENSE)), dtype=np.float64)
    actions = [i for i, s in enumerate(steps) if ctx.is_action(s)]
    action_rank = {i: r for r, i in enumerate(actions)}
    agents_order = {name: k for k, name in enumerate(dict.fromkeys(s.agent for s in steps if s.agent))}
    agent_steps = Counter(s.agent for s in steps if s.agent)
    first_seen = {}
    for s in steps:
        if s.agent:
            first_seen.setdefault(s.agent, s.index)
    turns: Counter[str] = Counter()
    kind_ranks: Counter[str] = Counter()
    question = set(_WORDS.findall(trace.question.lower()))
    seen_numbers = set(_numbers(trace.question))
    for prompt in trace.system_prompts.values():
        seen_numbers.update(_numbers(prompt))
    earlier: dict[str, list[set]] = {}
    graph = ctx.graph
    dependants = _dependants(graph, n)
    signals = {(s.step, s.signal) for s in a.signals}
    top = max(a.raw) if a.raw else 0.0
    order = sorted(a.candidates, key=lambda i: -a.raw[i])
    heur_rank = {i: r for r, i in enumerate(order)}
    last_error = -1
    texts = []
    for i, step in enumerate(steps):
        text = step.content[:_TEXT_LIMIT]
        texts.append(f"{step.kind} {text}")
        row = x[i]
        is_action = i in action_rank
        row[_COLUMN["bias_action"]] = 1.0 if is_action else 0.0
        row[_COLUMN["pos_rel"]] = i / max(1, n - 1)
        row[_COLUMN["pos_log"]] = _log(i)
        row[_COLUMN["pos_from_end_log"]] = _log(n - 1 - i)
        row[_COLUMN["n_steps_log"]] = _log(n)
        row[_COLUMN["n_actions_log"]] = _log(len(actions))
        row[_COLUMN["n_agents"]] = min(len(agents_order), 10) / 10
        if is_action:
            r = action_rank[i]
            row[_COLUMN["is_first_action"]] = float(r == 0)
            row[_COLUMN["is_last_action"]] = float(r == len(actions) - 1)
            row[_COLUMN["action_rank_log"]] = _log(r)
            row[_COLUMN["action_rel"]] = r / max(1, len(actions) - 1)
            row[_COLUMN[f"action_rank_{min(r, RANK_BINS - 1)}"]] = 1.0
        row[_COLUMN[f"kind_rank_{min(kind_ranks[step.kind], RANK_BINS - 1)}"]] = 1.0
        kind_ranks[step.kind] += 1
        if step.agent:
            turn = turns[step.agent]
            turns[step.agent] += 1
            row[_COLUMN["turn_log"]] = _log(turn)
            row[_COLUMN["turn_0"]] = float(turn == 0)
            row[_COLUMN["turn_1"]] = float(turn == 1)
            if turn >= 2:
                row[_COLUMN[f"turn_{min(turn, RANK_BINS - 1)}"]] = 1.0
            row[_COLUMN["turn_rel"]] = turn / max(1, agent_steps[step.agent] - 1)
            row[_COLUMN["agent_share"]] = agent_steps[step.agent] / n
            row[_COLUMN["agent_order"]] = min(agents_order[step.agent], 5) / 5
            row[_COLUMN["agent_first_seen_rel"]] = first_seen[step.agent] / max(1, n - 1)
        if step.kind in KINDS:
            row[_COLUMN[f"kind_{step.kind}"]] = 1.0
        row[_COLUMN[f"role_{ctx.role(step)}"]] = 1.0
        row[_COLUMN["style_orchestrated"]] = float(ctx.style == "orchestrated")
        row[_COLUMN["len_log"]] = _log(len(step.content)) / 10
        for name, pattern in (
            ("error", _ERROR),
            ("refusal", _REFUSAL),
            ("hedge", _HEDGE),
            ("plan", _PLAN),
            ("verify", _VERIFY),
            ("final_marker", _FINAL),
            ("code", _CODE),
            ("url", _URL),
        ):
            row[_COLUMN[name]] = float(bool(pattern.search(text)))
        numbers = _numbers(text)
        new = [v for v in numbers if v not in seen_numbers]
        row[_COLUMN["numbers_log"]] = _log(len(numbers))
        row[_COLUMN["new_numbers_log"]] = _log(len(new))
        row[_COLUMN["new_number_share"]] = len(new) / len(numbers) if numbers else 0.0
        seen_numbers.update(numbers)
        shingles = _shingles(text)
        if len(shingles) >= 5 and step.agent:
            best = max(
                (len(shingles & o) / len(shingles | o) for o in earlier.get(step.agent, [])), default=0.0
            )
            row[_COLUMN["repeat"]] = best
            earlier.setdefault(step.agent, []).append(shingles)
        words = set(_WORDS.findall(text.lower()))
        row[_COLUMN["question_overlap"]] = len(words & question) / len(question) if question else 0.0
        row[_COLUMN["prev_error"]] = float(last_error >= 0 and i - last_error <= 2)
        row[_COLUMN["first_after_error"]] = float(
            last_error >= 0 and is_action and all(j not in action_rank for j in range(last_error + 1, i))
        )
        if (
            step.kind == "tool_result"
            and _ERROR.search(text)
            or step.kind != "tool_result"
            and row[_COLUMN["error"]]
        ):
            last_error = i
        for signal in SIGNALS:
            if (i, signal) in signals:
                row[_COLUMN[f"sig_{signal}"]] = 1.0
        row[_COLUMN["descendants_log"]] = _log(dependants[i]) / 3
        uses_out = sum(1 for _, _, d in graph.out_edges(i, data=True) if "uses" in d["kinds"])
        uses_in = sum(1 for _, _, d in graph.in_edges(i, data=True) if "uses" in d["kinds"])
        row[_COLUMN["uses_out_log"]] = _log(uses_out)
        row[_COLUMN["uses_in_log"]] = _log(uses_in)
        row[_COLUMN["ancestor_of_final"]] = float(i in a.found)
        row[_COLUMN["is_final"]] = float(i == ctx.final)
        row[_COLUMN["dist_to_final_rel"]] = (ctx.final - i) / max(1, n - 1)
        row[_COLUMN["after_final"]] = float(i > ctx.final)
        row[_COLUMN["heur_raw"]] = (a.raw[i] - top) / 5
        row[_COLUMN["heur_prior"]] = a.priors[i] / 5
        row[_COLUMN["heur_top"]] = float(bool(order) and i == order[0])
        row[_COLUMN["heur_rank_log"]] = _log(heur_rank.get(i, len(order)))
        row[_COLUMN["heur_gap"]] = max(-3.0, a.raw[i] - top)
    # What a step's output shows (a tool result or the next step) belongs to the action that produced it.
    for i, step in enumerate(steps):
        producer = ctx.blamed(i)
        if producer != i:
            x[producer, _COLUMN["output_error"]] = max(
                x[producer, _COLUMN["output_error"]], x[i, _COLUMN["error"]]
            )
            empty = not step.content.strip() or bool(
                re.search(
                    r"\bno results?\b|\bnot found\b|^\s*(?:None|\[\]|"
                    r"\{\})\s*$",
                    step.content[:2000],
                    re.I | re.M,
                )
            )
            x[producer, _COLUMN["output_empty"]] = max(x[producer, _COLUMN["output_empty"]], float(empty))
        following = next((s for s in steps[i + 1 :] if s.agent), None)
        if following is not None and step.agent:
            x[i, _COLUMN["next_other_agent"]] = float(following.agent != step.agent)
    words = _hasher().transform(texts).tocsr()
    blamed = [ctx.blamed(i) for i in range(n)]
    return TraceFeatures(
        dense=x,
        words=words,
        candidates=list(a.candidates),
        blamed=blamed,
        analysis=a,
        offset=np.asarray(a.raw),
        agents=[steps[b].agent for b in blamed],
        ranks=[action_rank.get(i, -1) for i in range(n)],
    )


def _dependants(graph, n: int) -> list[int]:
    """How many later steps build on each step, through parent and uses edges (transitively), in one backward pass
    over a bitset per step: linear in edges times n/64. Past ``_REACH_LIMIT`` steps only direct dependants are
    counted (the bitsets would grow with the square of the trace)."""
    if n > _REACH_LIMIT:
        return [
            sum(
                1
                for _, _, d in graph.out_edges(i, data=True)
                if "parent" in d["kinds"] or "uses" in d["kinds"]
            )
            for i in range(n)
        ]
    reach = [0] * n
    for i in range(n - 1, -1, -1):
        bits = 0
        for _, j, data in graph.out_edges(i, data=True):
            if "parent" in data["kinds"] or "uses" in data["kinds"]:
                bits |= (1 << j) | reach[j]
        reach[i] = bits
    return [bin(b).count("1") for b in reach]
