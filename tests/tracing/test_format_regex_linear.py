"""Patterns run over uploaded text take time linear in it: hostile inputs of ~200 KB parse at once, and real lines
match as before.

The old patterns (kept below as references) backtracked quadratically: "\\n" * 50,000 after a few headers took the
generic text-log parser about a minute, " " * 50,000 in a step body took ``kind_from_cues`` half a minute, and a
Langfuse root span named "[" * 50,000 took seconds. No timing assertions: at 200 KB the old code would run for
minutes, so these tests finishing in the normal suite time is the proof.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from tracing.formats import Source
from tracing.formats.langfuse import FORMAT as LANGFUSE
from tracing.formats.langfuse import _bracketed
from tracing.formats.text_generic import _TASK_LINE
from tracing.formats.text_generic import FORMAT as GENERIC
from tracing.formats.textlog import kind_from_cues

SIZE = 200_000

# The patterns as they were, to compare with on short strings (where they are fast).
OLD_TASK_LINE = re.compile(
    r"^[#*\s]*(?:task|question|task_prompt|instruction|enter your prompt)\**\s*:\**\s*(?P<text>\S[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)
OLD_RESULT_BODY = re.compile(
    r"^\s*(?:exitcode:|\*{3,} Response from calling (?:tool|function)|Observation:|#*\s*Tool Output:"
    r"|\[FunctionExecutionResult\()",
    re.IGNORECASE,
)
OLD_CALL_BODY = re.compile(
    r"^\s*(?:\*{3,} Suggested (?:tool|function) call|#*\s*Using tool:|Action:|\[FunctionCall\()",
    re.IGNORECASE,
)
OLD_THOUGHT_BODY = re.compile(r"^\s*#*\s*(?:Thought|Thinking|Reasoning)\s*:", re.IGNORECASE)
OLD_BRACKETED = re.compile(r"\[([^\]]+)\]\s*$")

HEADERS = "".join(f"### Agent{i}\nhello from agent {i}\n" for i in range(1, 7))


def _generic(text: str):
    (trace,) = list(GENERIC.parse(Source.from_bytes("run.log", text.encode())))
    return trace


def _langfuse(root_name: str):
    document = {
        "trace": {"id": "t1", "name": "trip"},
        "observations": [
            {
                "id": "root",
                "type": "SPAN",
                "name": root_name,
                "startTime": "2025-01-01T00:00:00Z",
                "input": "plan",
            },
            {
                "id": "llm",
                "type": "GENERATION",
                "name": "chat",
                "parentObservationId": "root",
                "startTime": "2025-01-01T00:00:01Z",
                "output": "done",
            },
        ],
    }
    (trace,) = list(LANGFUSE.parse(Source.from_bytes("trip.json", json.dumps(document).encode())))
    return trace


# --- hostile inputs -------------------------------------------------------------------------------------------------


def test_blank_lines_after_headers_parse_without_a_task_line():
    trace = _generic(HEADERS + "\n" * SIZE)
    assert [s.agent for s in trace.steps] == [f"Agent{i}" for i in range(1, 7)]
    assert trace.question == ""


def test_blank_lines_then_a_task_line_find_the_task():
    trace = _generic(HEADERS + "\n" * SIZE + "**Task:** find the bug\n")
    assert trace.question == "find the bug"


def test_blank_and_marker_lines_before_a_task_line_find_the_task():
    trace = _generic(HEADERS + "#*\t \n" * (SIZE // 5) + "## Question: why?\n")
    assert trace.question == "why?"


@pytest.mark.parametrize("blank", [" ", "\t", "\n", " \t\r\n\x0b\x0c\xa0"])
def test_a_long_blank_body_gives_its_kind_from_cues_at_once(blank):
    body = blank * (SIZE // len(blank))
    assert kind_from_cues("", body, "Alice") == "message"
    assert kind_from_cues("", body + "Thought: check first", "Alice") == "thought"
    assert kind_from_cues("", body + "## Tool Output: 42", "Alice") == "tool_result"
    assert kind_from_cues("", body + "#" + body + "Using tool: search", "Alice") == "tool_call"
    assert kind_from_cues("", body + "#" + body + "#Thought: no", "Alice") == "message"


def test_a_generic_log_turn_opening_with_a_long_indent_is_a_thought():
    trace = _generic("Alice:\n" + " " * SIZE + "Thought: I should check\nthen act\nBob:\nhello\nAlice:\nok\n")
    assert [(s.agent, s.kind) for s in trace.steps] == [
        ("Alice", "thought"),
        ("Bob", "message"),
        ("Alice", "message"),
    ]


@pytest.mark.parametrize(
    ("root_name", "agent"),
    [
        ("[" * SIZE, "[" * SIZE),  # no closing bracket: the agent is the whole name, as before
        ("[" * SIZE + "]", "[" * (SIZE - 1)),  # from the first "[" after the last "]"
        ("]" * SIZE + "[planner] \n", "planner"),
        ("x [" * (SIZE // 3) + "y", "x [" * (SIZE // 3) + "y"),
        ("[a]" * (SIZE // 3) + " [planner]", "planner"),
    ],
)
def test_a_langfuse_root_name_full_of_brackets_names_the_agent_at_once(root_name, agent):
    trace = _langfuse(root_name)
    assert {s.agent for s in trace.steps} == {agent}


# --- real lines whose results must not change -----------------------------------------------------------------------

TASK_TEXTS = [
    (
        "## Task: Review the blog paragraph for factual accuracy.\n",
        "Review the blog paragraph for factual accuracy.",
    ),
    ("**task_prompt**: Develop a basic Gomoku game.\n", "Develop a basic Gomoku game."),
    ("Enter your prompt: Find the population of Lyon in 2020\n", "Find the population of Lyon in 2020"),
    ("intro\n\n  * Question :  what is 2+2?  \nmore", "what is 2+2?  "),
    ("### \n\n**Instruction:**\n\nsummarise the paper\n", "summarise the paper"),
    ("TASK:** *bold start\n", "*bold start"),
    ("task:*\n", "*"),
    ("the task: not at line start\n", None),
    ("Tasks: plural is not a task\n", None),
    ("task:\n\n\n", None),
    ("# task_prompt :\tx\n## Task: second\n", "x"),
]


@pytest.mark.parametrize(("text", "task"), TASK_TEXTS)
def test_task_lines_match_as_before(text, task):
    match = _TASK_LINE.search(text)
    assert (match.group("text") if match else None) == task
    old = OLD_TASK_LINE.search(text)
    assert (old.group("text") if old else None) == task


CUE_BODIES = [
    ("exitcode: 0 (execution succeeded)\nCode output: 42", "tool_result"),
    ("***** Response from calling tool (call_u4TqL1c9yPz0aB7e) *****\n{}", "tool_result"),
    ("  Observation: the page says 42", "tool_result"),
    ("## Tool Output:\n42", "tool_result"),
    ("[FunctionExecutionResult(content='42', call_id='1')]", "tool_result"),
    ("***** Suggested tool call (call_u4TqL1c9yPz0aB7e): search *****", "tool_call"),
    ("## Using tool: search", "tool_call"),
    ("Action: search[lyon]", "tool_call"),
    ("[FunctionCall(id='1', name='search', arguments='{}')]", "tool_call"),
    ("## Thought:\nI need the data first", "thought"),
    ("\n\t thinking : hmm", "thought"),
    ("#  Reasoning:", "thought"),
    ("The thought: is not at the start", "message"),
    ("#Thought without a colon", "message"),
    ("** Response from calling tool", "message"),
    ("", "message"),
]


@pytest.mark.parametrize(("body", "kind"), CUE_BODIES)
def test_step_bodies_get_the_same_kinds_as_before(body, kind):
    assert kind_from_cues("", body, "Alice") == kind


ROOT_NAMES = [
    ("agent_run [hello_agent]", "hello_agent"),
    ("invocation [hello_app]", "hello_app"),
    ("invocation [hello_app]  \n", "hello_app"),
    ("workflow [a] [b]", "b"),
    ("workflow [a [b]", "a [b"),
    ("workflow []", None),
    ("workflow [x] tail", None),
    ("[", None),
    ("]", None),
    ("", None),
    ("[\u3000]\u3000", "\u3000"),
]


@pytest.mark.parametrize(("name", "inside"), ROOT_NAMES)
def test_bracketed_root_names_give_the_same_agent_as_before(name, inside):
    assert _bracketed(name) == inside
    old = OLD_BRACKETED.search(name)
    assert (old[1] if old else None) == inside


def test_random_short_strings_match_as_the_old_patterns_did():
    rng = random.Random(20250101)
    task_alphabet = [
        *"#* \t\n\r\xa0:abT",
        "task",
        "question",
        "task_prompt",
        "instruction",
        "enter your prompt",
    ]
    cue_alphabet = [*"#* \t\n\xa0:([ab", "exitcode:", "*** Response from calling tool", "Observation:"]
    cue_alphabet += ["Tool Output:", "Using tool:", "Action:", "[FunctionCall(", "Thought", "REASONING"]
    bracket_alphabet = [*"[]  \t\n\x0b\x1c\x85\xa0\u2028ab"]
    for _ in range(3000):
        text = "".join(rng.choice(task_alphabet) for _ in range(rng.randint(0, 30)))
        new, old = _TASK_LINE.search(text), OLD_TASK_LINE.search(text)
        assert (new and new.group("text")) == (old and old.group("text")), text
        body = "".join(rng.choice(cue_alphabet) for _ in range(rng.randint(0, 12)))
        expected = (
            "tool_result"
            if OLD_RESULT_BODY.match(body)
            else "tool_call"
            if OLD_CALL_BODY.match(body)
            else "thought"
            if OLD_THOUGHT_BODY.match(body)
            else "message"
        )
        assert kind_from_cues("", body, "Alice") == expected, body
        name = "".join(rng.choice(bracket_alphabet) for _ in range(rng.randint(0, 20)))
        old_bracket = OLD_BRACKETED.search(name)
        assert _bracketed(name) == (old_bracket[1] if old_bracket else None), name
