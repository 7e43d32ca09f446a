"""What a failure looks like, in plain data: the features of one verified case, the terms a trace is searched by,
the aggregate of a schema's cases, and the steps of a new trace a schema's detection heuristic points at.

Pure functions over ``TraceView`` and the heuristic method's signals, no database, so distillation, retrieval,
leave-one-out and the benchmark all compute the same thing. A schema's structured parts are never stored as typed by
anyone: they are recomputed from its exemplars' features by ``aggregate``, which is what lets leave-one-out rebuild a
schema without the trace being attributed, and what keeps a crafted exemplar from smuggling in arbitrary rules.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..methods.base import TraceView
from ..methods.heuristic import _EMPTY, _MADE_UP, _TOOL_ERROR, CATEGORIES, WEIGHTS, planners_of, role_of

# Rank of a step among the trace's steps of its role, capped: "the 4th or later worker message" is one bucket, as in
# the heuristic's priors.
RANK_CAP = 4
# Failure words that say something about *how* a step went wrong whatever the task is about; topic words (the
# city, the film) would make retrieval find traces on the same subject instead of the same failure.
LEXICON = frozenset(
    "assume assuming assumed approximately estimate estimated probably likely unable cannot sorry unfortunately "
    "verify verified verification confirm confirmed manually simulate simulated hypothetical placeholder example "
    "incorrect mistake instead retry again failed failure error exception timeout blocked captcha empty missing "
    "unknown unclear guess roughly plan terminate".split()
)
MAX_PHRASES = 12
MAX_QUERY_TERMS = 48
_WORD = re.compile(r"[a-z][a-z0-9]{2,}")
_EXCEPTION = re.compile(r"\b([A-Za-z]*(?:Error|Exception))\b")


@dataclass(frozen=True)
class TraceShape:
    """Roles and ranks of every step, and the heuristic's signals per step: computed once per trace."""

    style: str  # "group" (no planner) or "orchestrated"
    roles: tuple[str, ...]
    ranks: tuple[int, ...]
    signals: tuple[frozenset[str], ...]


def shape_of(trace: TraceView, signals: Iterable[dict[str, Any]]) -> TraceShape:
    """The trace's shape; ``signals`` is the heuristic verdict's ``details["signals"]``. Roles follow the heuristic:
    a planner is an agent that addresses others or thinks aloud."""
    planners = planners_of(trace)
    roles, ranks, seen = [], [], Counter()
    for step in trace.steps:
        role = role_of(step, planners)
        roles.append(role)
        ranks.append(min(seen[role], RANK_CAP))
        seen[role] += 1
    per_step: list[set[str]] = [set() for _ in trace.steps]
    for signal in signals:
        if 0 <= int(signal["step"]) < len(per_step):
            per_step[int(signal["step"])].add(str(signal["signal"]))
    return TraceShape(
        style="orchestrated" if planners else "group",
        roles=tuple(roles),
        ranks=tuple(ranks),
        signals=tuple(frozenset(s) for s in per_step),
    )


def phrases_of(text: str) -> list[str]:
    """Failure phrases in a step: exception names, error and empty-result patterns, invented-data words and the
    failure lexicon, normalised to lower-case words."""
    found: list[str] = [m.lower() for m in _EXCEPTION.findall(text[:20000])]
    for pattern in (_TOOL_ERROR, _EMPTY, _MADE_UP):
        for match in pattern.finditer(text[:20000]):
            words = _WORD.findall(match[0].lower())[:3]
            if words:
                found.append(" ".join(words))
    found += [w for w in _WORD.findall(text[:20000].lower()) if w in LEXICON]
    return list(dict.fromkeys(found))[:MAX_PHRASES]


def agent_tag(agent: str) -> str:
    return re.sub(r"[^a-z0-9]", "", agent.lower())[:60]


def case_features(trace: TraceView, shape: TraceShape, *, step: int, agent: str) -> dict[str, Any]:
    """The features of one verified case: the decisive step's role, rank, kind and agent, the signals the heuristic
    found on it, its failure phrases (with those of the tool output it produced), and the kinds of the steps around
    it."""
    step = max(0, min(step, len(trace.steps) - 1))
    here = trace.steps[step]
    text = here.content
    following = trace.steps[step + 1] if step + 1 < len(trace.steps) else None
    if following is not None and following.kind == "tool_result":
        text += "\n" + following.content
    signals = sorted(shape.signals[step])
    return {
        "style": shape.style,
        "role": shape.roles[step],
        "rank": shape.ranks[step],
        "kind": here.kind,
        "agent": agent_tag(agent or here.agent),
        "agent_name": (agent or here.agent)[:60],
        "signals": signals,
        "primary": primary_signal(signals),
        "phrases": phrases_of(text),
        "around": [s.kind for s in trace.steps[max(0, step - 2) : step + 3]],
        "source_format": trace.source_format,
        "step": step,
        "steps": len(trace.steps),
    }


def primary_signal(signals: Sequence[str]) -> str:
    """The signal that names the failure best: the heaviest one, the dependency-graph ancestry aside (it fires on
    half of all decisive steps and names nothing)."""
    named = [s for s in signals if s in WEIGHTS and s != "ancestor"]
    return max(named, key=lambda s: (WEIGHTS[s], s)) if named else "none"


def schema_key(features: dict[str, Any]) -> str:
    """Cases with the same key are near-duplicates and merge into one schema: same style of run, same role, same
    kind of failure, same position bucket (first, second, third, later step of that role)."""
    return f"{features['style']}|{features['role']}|{features['primary']}|{min(int(features['rank']), 3)}"


def aggregate(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A schema's structured parts from its cases' features: majority role and kind, every rank seen, the agent only
    when all cases share it, signals and phrases seen in at least half of the cases."""
    if not cases:
        return {}
    n = len(cases)
    quorum = max(1, (n + 1) // 2)
    signals = Counter(s for c in cases for s in set(c["signals"]))
    phrases = Counter(p for c in cases for p in set(c["phrases"]))
    agents = {c["agent"] for c in cases}
    detection = {
        "role": Counter(c["role"] for c in cases).most_common(1)[0][0],
        "kind": Counter(c["kind"] for c in cases).most_common(1)[0][0],
        "ranks": sorted({int(c["rank"]) for c in cases}),
        "agent": next(iter(agents)) if len(agents) == 1 else "",
        "signals": sorted(s for s, k in signals.items() if k >= quorum and s != "ancestor"),
        "phrases": [p for p, k in phrases.most_common(MAX_PHRASES) if k >= quorum],
    }
    primary = Counter(c["primary"] for c in cases).most_common(1)[0][0]
    signature = detection | {
        "primary": primary,
        "style": cases[0]["style"],
        "around": Counter(tuple(c["around"]) for c in cases).most_common(1)[0][0],
        "agents": sorted(agents)[:20],
        "cases": n,
    }
    return {
        "style": cases[0]["style"],
        "signature": signature,
        "detection": detection,
        "category": CATEGORIES.get(primary, ""),
        "title": _title(signature, _agent_name(cases, detection["agent"])),
        "context": _context(signature),
        "detection_text": _detection_text(detection),
        "search_text": search_text(signature),
    }


# What a schema's primary signal says went wrong, for its title ("…: an unverified claim").
_FAILURES = {
    "first_code": "faulty first code of the run",
    "code": "faulty code",
    "handover": "a wrong value handed on",
    "tool_error": "a failing tool call",
    "runtime_error": "an error it reports itself",
    "answer_origin": "where the wrong answer came from",
    "wrong_value": "a wrong value",
    "accepted": "a value accepted without checking",
    "made_up": "invented data",
    "empty_result": "an empty result taken as an answer",
    "premature_termination": "stopping too early",
    "loop": "repeating itself",
    "none": "an unverified claim",
}
_STYLES = {"orchestrated": "orchestrated runs", "group": "group chats"}
_PLACES = ["first", "second", "third", "fourth or later"]


def _agent_name(cases: Sequence[dict[str, Any]], tag: str) -> str:
    """The agent's name as its traces spell it ("WebSurfer"), when every case names the same agent."""
    if not tag:
        return ""
    names = Counter(c.get("agent_name", "") for c in cases if c.get("agent_name"))
    return names.most_common(1)[0][0] if names else tag


def _title(sig: dict[str, Any], agent_name: str = "") -> str:
    """A title a person reads at a glance: "WebSurfer's second turn in orchestrated runs: an unverified claim"."""
    place = _PLACES[min(sig["ranks"][0], 3)] if sig["ranks"] else "some"
    whose = {
        "worker": f"A worker's {place} turn",
        "planner-message": f"The planner's {place} message",
        "planner-thought": f"The planner's {place} thought",
        "human": f"The {place} human turn",
        "tool": f"The {place} tool output",
    }.get(sig["role"], f"A {sig['role']} step")
    if agent_name:
        whose = f"{agent_name}'s {place} {'thought' if sig['role'] == 'planner-thought' else 'turn'}"
    what = _FAILURES.get(sig["primary"], sig["primary"].replace("_", " "))
    return f"{whose} in {_STYLES.get(sig['style'], sig['style'] + ' runs')}: {what}"[:200]


def _context(sig: dict[str, Any]) -> str:
    kinds = " → ".join(sig["around"])
    return (
        f"Seen in {sig['cases']} verified case{'s' if sig['cases'] != 1 else ''} of {sig['style']} runs; "
        f"the steps around the decisive one are {kinds}."
    )


def _detection_text(det: dict[str, Any]) -> str:
    parts = [
        f"a {det['kind']} step by {'agent ' + det['agent'] if det['agent'] else 'a ' + det['role']}",
        f"at rank {', '.join(map(str, det['ranks']))} among its role's steps",
    ]
    if det["signals"]:
        parts.append(f"where the heuristic finds {', '.join(det['signals'])}")
    if det["phrases"]:
        parts.append(f"saying any of: {', '.join(det['phrases'][:6])}")
    return "Look for " + "; ".join(parts) + "."


def search_text(sig: dict[str, Any]) -> str:
    """Tags and phrases as one text for the lexical index: tags are single words so the 'simple' parser keeps them."""
    tags = [f"role{_flat(sig['role'])}", f"kind{_flat(sig['kind'])}", f"primary{_flat(sig['primary'])}"]
    tags += [f"sig{_flat(s)}" for s in sig["signals"]]
    tags += [f"agent{sig['agent']}"] if sig["agent"] else []
    return " ".join(tags + sig["phrases"])


def _flat(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass(frozen=True)
class Query:
    """What a trace is searched by: its style (a structured filter) and its terms (tags and failure phrases)."""

    style: str
    terms: tuple[str, ...]


def query_of(trace: TraceView, shape: TraceShape) -> Query:
    terms: list[str] = []
    for i, step in enumerate(trace.steps):
        role = shape.roles[i]
        if role in ("tool", "human"):
            continue
        terms += [f"role{_flat(role)}", f"kind{_flat(step.kind)}", f"agent{agent_tag(step.agent)}"]
        terms += [f"sig{_flat(s)}" for s in shape.signals[i]]
        terms += [f"primary{_flat(primary_signal(sorted(shape.signals[i])))}"]
    for step in trace.steps:
        for phrase in phrases_of(step.content):
            terms += phrase.split()
    return Query(style=shape.style, terms=tuple(sorted(set(terms)))[: MAX_QUERY_TERMS * 4])


def similarity(search: str, query_terms: Iterable[str]) -> float:
    """The share of a schema's words that the trace also has: 1.0 when everything the schema looks for is there."""
    words = set(search.split())
    return len(words & set(query_terms)) / len(words) if words else 0.0


def match_steps(detection: dict[str, Any], trace: TraceView, shape: TraceShape) -> tuple[int, float] | None:
    """The step the detection heuristic points at and how well it matches (0-1), or None. A step qualifies by role,
    kind, rank and agent; among those, the one with most of the schema's signals and phrases wins, the earliest on a
    tie (the decisive error is the earliest one)."""
    best: tuple[int, float] | None = None
    wanted_signals, wanted_phrases = set(detection.get("signals", ())), set(detection.get("phrases", ()))
    for i, step in enumerate(trace.steps):
        if (
            shape.roles[i] != detection.get("role")
            or step.kind != detection.get("kind")
            or shape.ranks[i] not in detection.get("ranks", ())
            or (detection.get("agent") and agent_tag(step.agent) != detection["agent"])
        ):
            continue
        parts = []
        if wanted_signals:
            parts.append(len(wanted_signals & shape.signals[i]) / len(wanted_signals))
        if wanted_phrases:
            parts.append(len(wanted_phrases & set(phrases_of(step.content))) / len(wanted_phrases))
        strength = sum(parts) / len(parts) if parts else 0.5  # a purely positional schema is weak evidence
        if strength > 0 and (best is None or strength > best[1]):
            best = (i, round(strength, 4))
    return best
