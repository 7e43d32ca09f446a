"""The heuristic's answers are pinned: a faster heuristic (issue 19) must give every shared trace exactly the same
verdict, scores, reason, signals and learned-model features as the one the accuracy figures in docs/attribution.md
were measured with.

The traces are read straight from the shared files through the product's own parsers, without a database, into the
same ``TraceView`` that ``attribution.selectors.trace_view`` builds from the rows an import writes. Each trace's
results are hashed; ``tests/fixtures/heuristic_golden.json`` holds the readable part (agent, step, confidence,
category) and a digest per trace, and one digest of them all.

Regenerate the fixture only when an answer is *meant* to change (and say so in docs/attribution.md):

    python -m tests.attribution.test_heuristic_golden
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from attribution.graph import build_graph
from attribution.learning.features import trace_features
from attribution.methods.base import StepView, TraceView
from attribution.methods.heuristic import METHOD, analyse
from tracing.formats import ParsedTrace, Source, TraceFormatError, detect_format

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT.parent / "shared" / "data"
FIXTURE = ROOT / "tests" / "fixtures" / "heuristic_golden.json"
# Every collection of ../shared/data that holds whole traces (label-only files parse to no trace and are skipped).
COLLECTIONS = ("who_and_when", "traces")


def _clean(text: str | None) -> str:
    # What the import writes (tracing.services.writer._clean): PostgreSQL text holds no NUL.
    return (text or "").replace("\x00", "\ufffd")


def view_of(parsed: ParsedTrace, trace_id: int = 0) -> TraceView:
    """The ``TraceView`` that ``trace_view`` reads back after ``parsed`` is imported (same truncations)."""
    steps = []
    for index, step in enumerate(parsed.steps):
        parent = step.parent if step.parent is not None and 0 <= step.parent < index else None
        steps.append(
            StepView(
                index=index,
                agent=(step.agent or "")[:200],
                kind=step.kind,
                content=_clean(step.content),
                speaker=_clean(step.speaker)[:300],
                recipient=_clean(step.recipient)[:200],
                tool_name=_clean(step.tool_name)[:200],
                parent=parent,
            )
        )
    return TraceView(
        trace_id=trace_id,
        name=parsed.name[:300],
        question=parsed.question,
        ground_truth=parsed.ground_truth,
        outcome=parsed.outcome,
        steps=tuple(steps),
        agents=tuple(dict.fromkeys(s.agent for s in steps if s.agent)),
        system_prompts={a.name[:200]: a.system_prompt for a in parsed.agents if a.system_prompt},
        source_format=parsed.source_format,
    )


def shared_views() -> Iterator[tuple[str, TraceView]]:
    """(key, view) for every trace of the shared collections, in a fixed order; nothing when they are absent."""
    for collection in COLLECTIONS:
        for path in sorted((DATA / collection).rglob("*.json")):
            source = Source(path.name, lambda p=path: p.open("rb"), path.stat().st_size)
            try:
                fmt = detect_format(source)
            except TraceFormatError:  # a file no reader claims holds no trace to pin
                continue
            for n, parsed in enumerate(fmt.parse(source)):
                if isinstance(parsed, ParsedTrace) and parsed.steps:
                    yield f"{path.relative_to(DATA)}#{n}", view_of(parsed)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode()).hexdigest()


def _floats(values) -> list[str]:
    # repr keeps every bit: "the same answer" means the same float, not a close one.
    return [repr(float(v)) for v in values]


def results_of(view: TraceView) -> dict:
    """Everything a faster heuristic must keep: both verdicts (with and without the ground truth), the analysis the
    learned method reads (signals, ancestors, priors, log odds, candidates, who is blamed for each step), the
    dependency graph the pages draw, and the learned model's dense features."""
    out: dict = {}
    for with_gt in (True, False):
        result = METHOD.run(view, llm=None, with_ground_truth=with_gt)
        out[f"run_{with_gt}"] = {
            "agent": result.agent,
            "step": result.step,
            "confidence": repr(result.confidence),
            "category": result.category,
            "reason": result.reason,
            "scores": _floats(result.scores),
            "details": result.details,
        }
        a = analyse(view, with_ground_truth=with_gt)
        ctx = a.ctx
        out[f"analysis_{with_gt}"] = {
            "signals": [(s.step, s.signal, repr(s.weight), s.text) for s in a.signals],
            "found": sorted(a.found),
            "priors": _floats(a.priors),
            "raw": _floats(a.raw),
            "candidates": a.candidates,
            "blamed": [ctx.blamed(i) for i in range(len(view.steps))],
            "roles": [ctx.role(s) for s in view.steps],
            "actions": [ctx.is_action(s) for s in view.steps],
            "style": ctx.style,
            "final": ctx.final,
            "closer": ctx.closer,
        }
        features = trace_features(view, with_ground_truth=with_gt, analysis=a)
        out[f"features_{with_gt}"] = hashlib.sha256(features.dense.tobytes()).hexdigest()
    graph = build_graph(view)
    out["graph"] = {
        "nodes": [(n, d["agent"], d["kind"]) for n, d in sorted(graph.nodes(data=True))],
        "edges": [
            (u, v, d["kind"], list(d["kinds"]), d.get("via", "")) for u, v, d in graph.edges(data=True)
        ],
    }
    return out


def summary_of(view: TraceView, results: dict) -> dict:
    run = results["run_True"]
    return {
        "steps": len(view.steps),
        "agent": run["agent"],
        "step": run["step"],
        "confidence": round(float(run["confidence"]), 4),
        "category": run["category"],
        "digest": _digest(results)[:16],
    }


def golden() -> dict:
    traces = {key: summary_of(view, results_of(view)) for key, view in shared_views()}
    return {"digest": _digest(traces), "traces": traces}


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.skipif(not (DATA / "who_and_when").exists(), reason="the shared collections are not beside us")
def test_every_shared_trace_gets_exactly_the_pinned_answer(expected):
    actual = golden()
    changed = {
        key: {"now": actual["traces"].get(key), "pinned": pinned}
        for key, pinned in expected["traces"].items()
        if actual["traces"].get(key) != pinned
    }
    assert not changed, json.dumps(dict(list(changed.items())[:5]), indent=1)
    assert set(actual["traces"]) == set(expected["traces"])
    assert actual["digest"] == expected["digest"]


def test_the_pinned_answers_cover_both_who_and_when_subsets_and_span_trees(expected):
    keys = list(expected["traces"])
    assert sum(k.startswith("who_and_when/Hand-Crafted/") for k in keys) >= 30
    assert sum(k.startswith("who_and_when/Algorithm-Generated/") for k in keys) >= 80
    assert any(k.startswith("traces/trail/") for k in keys)
    assert all(
        not math.isnan(t["confidence"]) and 0 <= t["step"] < t["steps"] for t in expected["traces"].values()
    )


if __name__ == "__main__":  # regenerate the fixture
    import django

    django.setup()
    FIXTURE.write_text(json.dumps(golden(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
