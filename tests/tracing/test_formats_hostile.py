"""Hostile inputs to the format helpers: speaker names that made the old regex backtrack quadratically, span trees
whose parent links form loops, and long chains of content-less spans (linear by construction: no timing here)."""

from __future__ import annotations

import json
import re

import pytest

from tracing.formats import Source
from tracing.formats.base import Speaker, normalise_speaker
from tracing.formats.otlp_json import FORMAT
from tracing.formats.spans import Span, steps_from_spans

# The regex normalise_speaker used before it was rewritten as string scans: the reference for equal results.
_OLD_SPEAKER = re.compile(r"^(?P<name>.*?)\s*\((?:\s*->\s*(?P<to>[^)]*)|(?P<tag>[^)]*))\)\s*$")


def old_normalise_speaker(raw: str) -> Speaker:
    text = (raw or "").strip()
    match = _OLD_SPEAKER.match(text)
    if not match or not match["name"]:
        return Speaker(agent=text)
    if match["to"] is not None:
        return Speaker(agent=match["name"], recipient=match["to"].strip())
    return Speaker(agent=match["name"], tag=match["tag"].strip().lower())


REAL_NAMES = [
    "Orchestrator (thought)",
    "Orchestrator (-> WebSurfer)",
    "Orchestrator (->WebSurfer)",
    "Orchestrator ( -> FileSurfer )",
    "Orchestrator (termination condition)",
    "WebSurfer",
    "  Excel_Expert ",
    "Assistant (to user_proxy)",
    "user_proxy (to chat_manager)",
    "Assistant (to user_proxy (proxy))",
    "Agent ((nested))",
    "Agent (a) (b)",
    "Agent (unclosed",
    "Agent closed)",
    "Planner (-> Writer -> Critic)",
    "A (THOUGHT)",
    "A (->)",
    "A ( - > B)",
    "(thought)",
    "()",
    "a()",
    "Orch\n(x)",
    "Orch\nX (x)",
    "Orch (x\ny)",
    "Ünïcode (Tâg)",
    "a\u00a0(b)",
    "",
    ")",
]


@pytest.mark.parametrize("raw", REAL_NAMES)
def test_speaker_names_normalise_as_the_old_regex_did(raw):
    assert normalise_speaker(raw) == old_normalise_speaker(raw)


def test_a_hostile_speaker_name_is_kept_whole():
    # "a( ( ( …" with no closing bracket: the old regex took seconds on this, string scans take one pass.
    hostile = "a" + "( " * 50_000
    assert normalise_speaker(hostile) == Speaker(agent=hostile.strip())


def test_a_long_name_that_closes_splits_at_the_first_bracket():
    inner = " (" * 50_000 + "x"
    assert normalise_speaker("a" + inner + ")") == Speaker(agent="a", tag=inner[2:].strip())
    assert normalise_speaker("Boss (-> " + "w" * 1000 + ")") == Speaker(agent="Boss", recipient="w" * 1000)


# ---- span trees -------------------------------------------------------------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def otlp_span(span_id: str, parent: str, start: int, *, output: str = "", agent: str = "") -> dict:
    attributes = []
    if output:
        attributes.append({"key": "output.value", "value": {"stringValue": output}})
    if agent:
        attributes.append({"key": "gen_ai.agent.name", "value": {"stringValue": agent}})
    return {
        "traceId": TRACE_ID,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": f"span {span_id}",
        "startTimeUnixNano": str(1_718_000_000_000_000_000 + start * 1_000_000),
        "endTimeUnixNano": str(1_718_000_000_000_000_000 + start * 1_000_000 + 500_000),
        "attributes": attributes,
    }


def parse_spans(spans: list[dict]):
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }
    (trace,) = FORMAT.parse(Source.from_bytes("spans.json", json.dumps(document).encode()))
    return trace


def sid(n: int) -> str:
    return f"{n:016x}"


@pytest.mark.parametrize("loop_size", [2, 3])
def test_spans_in_a_parent_loop_keep_their_steps(loop_size):
    root = otlp_span(sid(1), "", 0, output="root says")
    members = [sid(100 + i) for i in range(loop_size)]
    loop = [
        otlp_span(
            member, members[i - 1], 10 + i, output=f"loop {i}"
        )  # member i's parent is member i-1, 0's the last
        for i, member in enumerate(members)
    ]
    trace = parse_spans([root, *loop])
    assert [s.span_id for s in trace.steps] == [sid(1), *members]
    # The loop is broken at its earliest member, shown as a root; the others keep their links.
    assert [s.parent for s in trace.steps] == [None, None, *range(1, loop_size)]


def test_a_trace_that_is_all_one_loop_still_imports():
    members = [sid(100 + i) for i in range(3)]
    spans = [otlp_span(m, members[i - 1], 10 + i, output=f"loop {i}") for i, m in enumerate(members)]
    trace = parse_spans(spans)
    assert [s.span_id for s in trace.steps] == members
    assert [s.parent for s in trace.steps] == [None, 0, 1]


def test_a_parent_loop_is_reported_as_a_warning():
    spans = [
        Span(span_id="root", parent_id=None, name="root", output="hi"),
        Span(span_id="a", parent_id="b", name="a", output="A"),
        Span(span_id="b", parent_id="a", name="b", output="B"),
        Span(span_id="c", parent_id="b", name="c", output="C"),  # hangs from the loop, not in it
        Span(span_id="self", parent_id="self", name="self", output="S"),  # its own parent: a root, as before
    ]
    warnings: list[str] = []
    steps, _ = steps_from_spans(spans, warnings=warnings)
    assert sorted(s.span_id for s in steps) == ["a", "b", "c", "root", "self"]
    (warning,) = warnings
    assert warning.startswith("2 span(s) have parent links that form a loop")


def test_a_tree_without_loops_gives_no_warning():
    spans = [
        Span(span_id="root", parent_id=None, name="root", output="hi"),
        Span(span_id="a", parent_id="root", name="a", output="A"),
        Span(span_id="self", parent_id="self", name="self", output="S"),
    ]
    warnings: list[str] = []
    steps_from_spans(spans, warnings=warnings)
    assert warnings == []


def test_a_long_chain_of_empty_spans_hangs_its_last_step_from_the_top():
    n = 5_000
    spans = [otlp_span(sid(1), "", 0, output="plan", agent="Boss")]
    spans += [otlp_span(sid(i), sid(i - 1), i) for i in range(2, n)]
    spans.append(otlp_span(sid(n), sid(n - 1), n, output="done"))
    trace = parse_spans(spans)
    assert [(s.span_id, s.agent, s.parent, s.content) for s in trace.steps] == [
        (sid(1), "Boss", None, "plan"),
        (sid(n), "Boss", 0, "done"),
    ]


def test_an_agent_named_mid_chain_acts_in_the_step_below_it():
    n = 3_000
    spans = [Span(span_id="0", parent_id=None, name="app", output="start")]
    spans += [Span(span_id=str(i), parent_id=str(i - 1), name=f"c{i}") for i in range(1, n)]
    spans[n // 2].agent = "Worker"
    spans.append(Span(span_id=str(n), parent_id=str(n - 1), name="leaf", kind="llm", output="answer"))
    steps, agents = steps_from_spans(spans)
    assert [(s.span_id, s.agent, s.parent, s.kind) for s in steps] == [
        ("0", "app", None, "message"),
        (str(n), "Worker", 0, "llm_call"),
    ]
    assert [a.name for a in agents] == ["app", "Worker"]


def test_a_parent_loop_in_an_uploaded_file_is_in_the_trace_s_import_warnings():
    members = [sid(200), sid(201)]
    spans = [otlp_span(sid(1), "", 0, output="root")] + [
        otlp_span(m, members[i - 1], 10 + i, output=f"loop {i}") for i, m in enumerate(members)
    ]
    trace = parse_spans(spans)
    assert any("form a loop" in w for w in trace.warnings)
    assert len(trace.steps) == 3
