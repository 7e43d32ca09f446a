"""Raw text logs of multi-agent frameworks: one format per framework and the generic text-log fallback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.base import ParsedTrace
from tracing.formats.text_ag2 import FORMAT as AG2
from tracing.formats.text_appworld import FORMAT as APPWORLD
from tracing.formats.text_chatdev import FORMAT as CHATDEV
from tracing.formats.text_crewai import FORMAT as CREWAI
from tracing.formats.text_generic import FORMAT as GENERIC
from tracing.formats.text_magentic import FORMAT as MAGENTIC
from tracing.formats.text_metagpt import FORMAT as METAGPT
from tracing.formats.text_openmanus import FORMAT as OPENMANUS
from tracing.models import Agent, JobStatus, Step, StepKind, Trace

LOGS = ROOT / "tests" / "fixtures" / "textlogs"
SPECIFIC = {
    "magentic": MAGENTIC,
    "ag2": AG2,
    "chatdev": CHATDEV,
    "metagpt": METAGPT,
    "openmanus": OPENMANUS,
    "appworld": APPWORLD,
    "crewai": CREWAI,
}
ALL_LOGS = sorted(LOGS.glob("*.log"))

# What each fixture holds: format, step count, agents in order of appearance, outcome.
EXPECTED = {
    "magentic": (
        "text-magentic",
        15,
        ["user", "MagenticOneOrchestrator", "researcher", "coder", "executor"],
        "unknown",
    ),
    "ag2": ("text-ag2", 10, ["User_proxy", "Planner", "Researcher", "Executor", "Engineer"], "failed"),
    "chatdev": (
        "text-chatdev",
        16,
        [
            "Chief Executive Officer",
            "Chief Product Officer",
            "Programmer",
            "Code Reviewer",
            "Software Test Engineer",
            "Human",
        ],
        "unknown",
    ),
    "metagpt": (
        "text-metagpt",
        9,
        ["Product Manager", "Architect", "Project Manager", "Engineer", "QaEngineer"],
        "failed",
    ),
    "openmanus": ("text-openmanus", 17, ["User", "PlanningFlow", "Manus", "Data_Analysis"], "succeeded"),
    "appworld": ("text-appworld", 13, ["Supervisor", "spotify"], "failed"),
    "crewai": (
        "text-crewai",
        13,
        ["Senior Research Analyst", "Tech Content Writer", "Chief Editor"],
        "unknown",
    ),
    "unknown_framework": (
        "text-log",
        8,
        ["Senior Research Analyst", "Tech Content Writer", "Chief Editor"],
        "unknown",
    ),
}


def _source(path: Path) -> Source:
    return Source.from_bytes(path.name, path.read_bytes())


def _text_source(text: str | bytes, name: str = "run.log") -> Source:
    return Source.from_bytes(name, text.encode() if isinstance(text, str) else text)


def _parse(fmt, path: Path) -> ParsedTrace:
    (trace,) = list(fmt.parse(_source(path)))
    return trace


def _by_kind(trace: ParsedTrace, kind: str) -> list:
    return [s for s in trace.steps if s.kind == kind]


# --- detection -----------------------------------------------------------------------------------------------------


def test_every_framework_has_a_fixture_log_of_realistic_size():
    assert {p.stem for p in ALL_LOGS} == set(EXPECTED)
    for path in ALL_LOGS:
        assert 2_000 < path.stat().st_size < 8_192, path.name


@pytest.mark.parametrize("stem", sorted(SPECIFIC))
def test_each_format_claims_its_own_log_and_no_other(stem):
    for path in ALL_LOGS:
        score = SPECIFIC[stem].detect(_source(path))
        if path.stem == stem:
            assert score >= 0.8, f"{stem} on its own log: {score}"
        else:
            assert score <= 0.3, f"{stem} on {path.name}: {score}"


@pytest.mark.parametrize("path", ALL_LOGS, ids=lambda p: p.stem)
def test_detection_picks_the_framework_and_the_fallback_scores_exactly_one_half(path):
    assert GENERIC.detect(_source(path)) == 0.5
    assert detect_format(_source(path)).name == EXPECTED[path.stem][0]


def test_no_text_format_claims_the_shared_json_samples():
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".json", ".jsonl")]
    assert files
    for path in files:
        source = Source.from_bytes(path.name, path.read_bytes())
        for fmt in [*SPECIFIC.values(), GENERIC]:
            assert fmt.detect(source) == 0.0, f"{fmt.name} on {path}"


def test_the_fallback_scores_zero_on_json_and_on_text_without_headers():
    assert GENERIC.detect(_text_source('{"history": [{"role": "user", "content": "Alice: hi"}]}')) == 0.0
    assert GENERIC.detect(_text_source('[\n  {"name": "Alice: hi"},\n  {"name": "Bob: yo"}\n]')) == 0.0
    assert GENERIC.detect(_text_source("Just a paragraph of prose.\nAnother line of it.\n")) == 0.0
    assert GENERIC.detect(_text_source(b"\xff\xfeA\x00l\x00")) == 0.0
    # A log whose first line is a bracketed timestamp starts with "[" but is not JSON.
    assert (
        GENERIC.detect(_text_source("[2024-01-01 10:00:00] Alice: hi\n[2024-01-01 10:00:05] Bob: hello\n"))
        == 0.5
    )


# --- the specific formats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", sorted(SPECIFIC))
def test_each_fixture_parses_into_one_trace_with_its_turns_agents_and_outcome(stem):
    fmt_name, step_count, agents, outcome = EXPECTED[stem]
    trace = _parse(SPECIFIC[stem], LOGS / f"{stem}.log")
    assert trace.source_format == fmt_name
    assert trace.name == stem
    assert len(trace.steps) == step_count
    assert [a.name for a in trace.agents] == agents
    assert trace.outcome == outcome
    assert all(s.speaker and s.content for s in trace.steps)
    # Every step has its agent, except ChatDev's own bookkeeping (phase tables, code updates), which no agent says,
    # and the tasks a CrewAI crew hands its agents (its author wrote them).
    assert all(
        s.agent
        or (stem == "chatdev" and s.speaker in ("ChatDev", "System"))
        or (stem == "crewai" and s.kind == "human")
        for s in trace.steps
    )
    assert {s.kind for s in trace.steps} <= {
        "message",
        "thought",
        "tool_call",
        "tool_result",
        "human",
        "system",
    }
    assert _by_kind(trace, "tool_call") or _by_kind(trace, "tool_result")


def test_magentic_tool_events_thoughts_tokens_and_the_task():
    trace = _parse(MAGENTIC, LOGS / "magentic.log")
    assert trace.question.startswith("How many studio albums did Mercedes Sosa publish")
    call = trace.steps[3]
    assert (call.kind, call.agent, call.tool_name) == ("tool_call", "researcher", "web_search")
    assert call.tool_arguments == {"query": "Mercedes Sosa discography wikipedia"}
    assert (call.input_tokens, call.output_tokens) == (812, 24)
    failed_fetch = trace.steps[6]
    assert (failed_fetch.kind, failed_fetch.tool_name, failed_fetch.raw["is_error"]) == (
        "tool_result",
        "fetch_page",
        True,
    )
    assert trace.steps[9].kind == "thought" and trace.steps[9].agent == "coder"
    executor = trace.steps[12]
    assert (executor.kind, executor.tool_name) == ("tool_result", "code_execution")
    assert "IndexError: list index out of range" in executor.content
    assert trace.steps[-1].content.startswith("FINAL ANSWER: 2")
    assert trace.metadata["summary"]["Finish reason"] == "None"


def test_the_first_magentic_one_release_splits_speakers_like_who_and_when():
    log = """[2024-11-10T14:16:50.100000], UserProxy:

Read the third record of fake_data.xlsx
---------------------------------------------------------------------------
[2024-11-10T14:16:52.200000], Orchestrator (thought):

Initial plan: ask the file surfer.
---------------------------------------------------------------------------
[2024-11-10T14:16:53.300000], Orchestrator (-> file_surfer):

Please open fake_data.xlsx and read row 3.
---------------------------------------------------------------------------
[2024-11-10T14:16:57.676137], file_surfer:

| 2024-03-31 | 470 | 199 |
"""
    (trace,) = MAGENTIC.parse(_text_source(log))
    assert MAGENTIC.detect(_text_source(log)) >= 0.8
    assert [(s.agent, s.kind, s.recipient) for s in trace.steps] == [
        ("UserProxy", "human", ""),
        ("Orchestrator", "thought", ""),
        ("Orchestrator", "message", "file_surfer"),
        ("file_surfer", "message", ""),
    ]
    assert trace.steps[1].speaker == "Orchestrator (thought)"
    assert (
        trace.steps[1].content == "Initial plan: ask the file surfer."
    )  # the dashed separator is not content
    assert trace.steps[3].started_at == datetime(2024, 11, 10, 14, 16, 57, 676137, tzinfo=UTC)


def test_ag2_tool_calls_code_execution_human_feedback_and_termination():
    trace = _parse(AG2, LOGS / "ag2.log")
    assert trace.question.startswith("What was the percentage change in the closing price of NVDA")
    assert all(s.recipient == "chat_manager" for s in trace.steps)
    call, result = trace.steps[2], trace.steps[3]
    assert (call.kind, call.agent, call.tool_name) == ("tool_call", "Researcher", "stock_price")
    assert call.tool_arguments == {"symbol": "NVDA", "dates": ["2024-01-02", "2024-03-28"]}
    assert (result.kind, result.agent, result.tool_name) == ("tool_result", "Executor", "stock_price")
    code = trace.steps[5]
    assert (code.kind, code.tool_name, code.raw["code_language"]) == (
        "tool_result",
        "code_execution",
        "python",
    )
    assert code.content.startswith("exitcode: 1 (execution failed)")
    feedback = trace.steps[7]
    assert (feedback.kind, feedback.agent) == ("human", "User_proxy")
    assert feedback.content.startswith("The price went up a lot")
    assert trace.metadata["termination"] == "Maximum turns (10) reached"
    assert trace.metadata["empty_headers_skipped"] == 1


def test_chatdev_role_play_turns_phases_tokens_and_human_comments():
    trace = _parse(CHATDEV, LOGS / "chatdev.log")
    assert trace.question == "Develop a basic Gomoku game."
    assert trace.external_id == "20230920135038"
    cpo = trace.steps[2]
    assert (cpo.agent, cpo.recipient, cpo.raw["phase"], cpo.raw["turn"]) == (
        "Chief Product Officer",
        "Chief Executive Officer",
        "DemandAnalysis",
        0,
    )
    assert (cpo.input_tokens, cpo.output_tokens) == (431, 4)
    assert cpo.content.endswith("<INFO> Application")
    # ChatDev writes the day before the month: "2023-20-09" is 20 September.
    assert cpo.started_at == datetime(2023, 9, 20, 13, 50, 40, tzinfo=UTC)
    tests = next(s for s in trace.steps if s.tool_name == "run_tests")
    assert tests.kind == "tool_result" and "AttributeError" in tests.content
    human = _by_kind(trace, "human")
    assert [h.content.strip().splitlines()[-1] for h in human] == [
        "Clicking the board crashes the game. Please fix it."
    ]
    review = next(s for s in trace.steps if s.raw.get("phase") == "CodeReviewModification")
    assert (review.agent, review.recipient) == ("Programmer", "Code Reviewer")


def test_metagpt_roles_act_as_their_profiles_and_the_crash_is_one_system_step():
    trace = _parse(METAGPT, LOGS / "metagpt.log")
    assert trace.question == "Create a 2048 game with a high score board"
    prd = trace.steps[1]
    assert (prd.speaker, prd.agent, prd.raw["action"]) == (
        "Alice(Product Manager)",
        "Product Manager",
        "WritePRD",
    )
    assert (prd.input_tokens, prd.output_tokens) == (1021, 489)
    assert '"Project Name": "game_2048"' in prd.content
    run = trace.steps[6]
    assert (run.kind, run.tool_name, run.agent) == ("tool_result", "RunCode", "QaEngineer")
    assert "FAILED (errors=1)" in run.content
    crash = trace.steps[-1]
    assert (crash.kind, crash.agent, crash.speaker) == ("system", "QaEngineer", "metagpt.utils.common")
    assert crash.content.count("| ERROR") == 3 and "tenacity.RetryError" in crash.content
    assert trace.metadata["outcome_cue"] == "Traceback (most recent call last)"


def test_metagpt_debug_logs_give_the_human_requirement_a_step():
    log = (
        "2024-01-02 10:00:00.001 | DEBUG    | metagpt.environment:publish_message:117 - publish_message: "
        '{"id": "1", "content": "write a snake game", "role": "Human", "send_to": ["<all>"]}\n'
        "2024-01-02 10:00:00.002 | INFO     | metagpt.roles.role:_act:373 - "
        "Alice(Product Manager): ready to WritePRD\n"
        "## Original Requirements\nA snake game.\n"
    )
    (trace,) = METAGPT.parse(_text_source(log))
    assert [(s.kind, s.agent) for s in trace.steps] == [("human", "Human"), ("message", "Product Manager")]
    assert trace.question == "write a snake game"


def test_openmanus_thoughts_tool_calls_results_and_the_terminate_verdict():
    trace = _parse(OPENMANUS, LOGS / "openmanus.log")
    assert trace.question.startswith("Find the population of Lyon in 2020")
    assert trace.external_id == "plan_1743588845"
    assert trace.steps[0].kind == "human"
    thought = trace.steps[2]
    assert (thought.kind, thought.agent, thought.input_tokens) == ("thought", "Manus", 1862)
    call = trace.steps[3]
    assert (call.kind, call.tool_name) == ("tool_call", "browser_use")
    assert call.tool_arguments == {"action": "web_search", "query": "Lyon Marseille population 2020 INSEE"}
    failed_click = trace.steps[6]
    assert failed_click.kind == "tool_result" and "Element with index 43 not found" in failed_click.content
    python = next(s for s in trace.steps if s.tool_name == "python_execute" and s.kind == "tool_result")
    assert python.agent == "Data_Analysis" and "No such file or directory" in python.content
    # The agent declared success although the chart was never saved: the log's own verdict is kept, with its cue.
    assert trace.metadata["outcome_cue"] == "terminate status: success"
    error = trace.steps[-1]
    assert (error.kind, error.agent) == ("system", "PlanningFlow")
    assert "Request timed out" in error.content


def test_appworld_nested_loops_attribute_requests_code_and_outputs():
    trace = _parse(APPWORLD, LOGS / "appworld.log")
    assert trace.external_id == "3d9a636_2"
    assert trace.question.startswith('What is the title of the most-played song in my "Road Trip"')
    request = trace.steps[1]
    assert (request.agent, request.kind, request.recipient) == ("Supervisor", "message", "spotify")
    login = trace.steps[2]
    assert (login.agent, login.kind, login.tool_name) == ("spotify", "tool_call", "spotify.login")
    assert login.content.startswith("# First log in to Spotify.")  # nesting indentation removed
    failure = trace.steps[3]
    assert (failure.agent, failure.kind) == ("spotify", "tool_result")
    assert "NameError: name 'get_password' is not defined" in failure.content
    reply = trace.steps[9]
    assert (reply.agent, reply.kind, reply.recipient) == ("spotify", "message", "Supervisor")
    final = trace.steps[11]
    assert (final.agent, final.tool_name) == ("Supervisor", "supervisor.complete_task")
    assert trace.metadata["evaluation"]["success"] is False


def test_appworld_files_with_several_tasks_give_one_trace_per_task():
    one = (LOGS / "appworld.log").read_text()
    two = one + one.replace("Task 1/1 (3d9a636_2)", "Task 2/2 (b0a8eae_1)").replace(
        '"success": false', '"success": true'
    )
    traces = list(APPWORLD.parse(_text_source(two.replace("Task 1/1", "Task 1/2"), "batch.log")))
    assert [(t.name, t.external_id, t.outcome) for t in traces] == [
        ("batch/3d9a636_2", "3d9a636_2", "failed"),
        ("batch/b0a8eae_1", "b0a8eae_1", "succeeded"),
    ]
    assert all(len(t.steps) == 13 for t in traces)


def test_an_appworld_task_that_crashed_before_any_turn_is_skipped_with_a_warning():
    one = (LOGS / "appworld.log").read_text().replace("Task 1/1", "Task 1/2")
    crashed = one + "\n******************** Task 2/2 (zzz_9) ********************\nDo a thing.\n"
    (trace,) = APPWORLD.parse(_text_source(crashed, "batch.log"))
    assert trace.external_id == "3d9a636_2"
    assert trace.warnings == ["task zzz_9 has no turns and was skipped"]


# --- the generic fallback ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_LOGS, ids=lambda p: p.stem)
def test_the_fallback_imports_every_fixture_with_several_agents(path):
    (trace,) = GENERIC.parse(_source(path))
    assert trace.source_format == "text-log"
    assert len(trace.agents) >= 2 and len(trace.steps) >= 2
    assert trace.warnings[-1].startswith(
        "imported by the generic text-log fallback: speakers guessed from header lines like '"
    )


def test_an_unknown_framework_imports_through_the_fallback_with_sensible_speakers():
    path = LOGS / "unknown_framework.log"
    assert detect_format(_source(path)).name == "text-log"
    (trace,) = GENERIC.parse(_source(path))
    assert [a.name for a in trace.agents] == [
        "Senior Research Analyst",
        "Tech Content Writer",
        "Chief Editor",
    ]
    assert [s.agent for s in trace.steps].count("Senior Research Analyst") == 4
    assert trace.question.startswith("Find the three most cited papers on retrieval-augmented generation")
    assert [s.kind for s in trace.steps[:3]] == ["message", "thought", "thought"]
    assert "429 Client Error: Too Many Requests" in trace.steps[2].content
    assert trace.warnings == [
        "imported by the generic text-log fallback: speakers guessed from header lines like "
        "'### Senior Research Analyst'"
    ]


@pytest.mark.parametrize(
    ("log", "speakers"),
    [
        ("**Alice**: I will plan.\n**Bob**: I will code.\n**Alice**: Done.\n", ["Alice", "Bob", "Alice"]),
        ("### Critic\nThe draft is weak.\n\n### Writer\nRevised draft.\n", ["Critic", "Writer"]),
        ("[Planner] Step one.\n[Coder] print(1)\n[Planner] Good.\n", ["Planner", "Coder", "Planner"]),
        ("<alice> hi there\n<bob> hello\n<alice> bye\n", ["alice", "bob", "alice"]),
        (">> Navigator\nFound the file.\n>> Editor\nPatched it.\n", ["Navigator", "Editor"]),
        ("Planner (to Coder):\n\nWrite it.\n\nCoder (to Planner):\n\nDone.\n", ["Planner", "Coder"]),
        (
            "2024-05-01 10:00:00.123 | INFO     | planner - make a plan\n"
            "2024-05-01 10:00:01.456 | INFO     | coder - write code\n",
            ["planner", "coder"],
        ),
        (
            "AI User (Stock Trader): Instruction: import pandas.\nInput: None\n"
            "AI Assistant (Python Programmer): Solution: import pandas as pd\nNext request.\n",
            ["AI User (Stock Trader)", "AI Assistant (Python Programmer)"],
        ),
        (
            "HyperAgent_x - INFO - Planner's Response: Thought: look at the file\n"
            "HyperAgent_x - INFO - Navigator->Planner: Here is the file\n",
            ["Planner", "Navigator"],
        ),
    ],
)
def test_the_fallback_finds_the_usual_header_shapes(log, speakers):
    source = _text_source(log)
    assert GENERIC.detect(source) == 0.5
    (trace,) = GENERIC.parse(source)
    assert [s.speaker for s in trace.steps] == speakers


def test_the_fallback_keeps_recipients_and_thought_tags_from_speakers():
    log = "Navigator->Planner: found it\nPlanner (thought): next, the editor\nPlanner: Editor, patch line 3\n"
    (trace,) = GENERIC.parse(_text_source(log))
    assert [(s.agent, s.recipient, s.kind) for s in trace.steps] == [
        ("Navigator", "Planner", "message"),
        ("Planner", "", "thought"),
        ("Planner", "", "message"),
    ]


def test_the_fallback_ignores_labels_of_tool_output_and_code():
    log = (
        "Alice: please run it\nTraceback (most recent call last):\nKeyError: 'x'\nObservation: failed\n"
        "Bob: it failed\nclass Foo:\nArguments: {}\n"
    )
    (trace,) = GENERIC.parse(_text_source(log))
    assert [s.speaker for s in trace.steps] == ["Alice", "Bob"]
    assert "KeyError: 'x'" in trace.steps[0].content


# --- bad input -----------------------------------------------------------------------------------------------------


def _variants(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [
        b"",
        b"   \n\n",
        b"\xff\xfe\x00garbage",
        "caf\u00e9 ".encode("latin-1") * 20,
        b"nothing here looks like a header\njust prose\n",
        b'{"history": []}',
        data[: len(data) // 2],
        data[: len(data) // 3] + b"\xc3",
        data.replace(b"\n", b"\r\n"),
        b"\x1b[33m" + data.replace(b"\n", b"\x1b[0m\n", 5),
        data[len(data) // 2 :],
    ]


@pytest.mark.parametrize("fmt", [*SPECIFIC.values(), GENERIC], ids=lambda f: f.name)
def test_malformed_logs_raise_a_format_error_or_parse(fmt):
    for path in ALL_LOGS:
        for data in _variants(path):
            source = Source.from_bytes("bad.log", data)
            assert 0.0 <= fmt.detect(source) <= 1.0
            try:
                traces = list(fmt.parse(source))
            except TraceFormatError as exc:
                assert str(exc)
                continue
            assert traces and all(t.steps for t in traces)


def test_non_utf8_text_and_empty_files_get_plain_reasons():
    for fmt in [*SPECIFIC.values(), GENERIC]:
        with pytest.raises(TraceFormatError, match="not UTF-8 text"):
            list(fmt.parse(_text_source(b"Alice: caf\xe9\nBob: ok\n")))
        with pytest.raises(TraceFormatError, match="empty"):
            list(fmt.parse(_text_source(b"\n \n")))
        with pytest.raises(TraceFormatError, match="no .* (turns|header)"):
            list(fmt.parse(_text_source("nothing here looks like a turn\n")))


def test_terminal_colour_codes_are_removed_with_a_warning():
    data = (
        (LOGS / "ag2.log")
        .read_text()
        .replace("User_proxy (to chat_manager):", "\x1b[33mUser_proxy\x1b[0m (to chat_manager):")
    )
    (trace,) = AG2.parse(_text_source(data))
    assert trace.steps[0].agent == "User_proxy"
    assert trace.warnings == ["removed 4 terminal colour code(s) from the log"]


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ALL_LOGS, ids=lambda p: p.stem)
def test_each_log_imports_end_to_end_with_its_format_steps_and_agents(project, path):
    fmt_name, step_count, agents, outcome = EXPECTED[path.stem]
    (job,) = import_now(project, incoming_path(path))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == fmt_name
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert trace.step_count == step_count == Step.objects.filter(trace=trace).count()
    assert (
        list(Agent.objects.filter(trace=trace).order_by("position").values_list("name", flat=True)) == agents
    )
    assert trace.outcome == outcome
    assert all(
        step.agent_id or step.speaker in ("ChatDev", "System", "Crew task")
        for step in Step.objects.filter(trace=trace)
    )
    if fmt_name == "text-log":
        assert any("generic text-log fallback" in w for w in job.report["warnings"])


@pytest.mark.django_db
def test_an_imported_ag2_log_keeps_tool_calls_and_recipients(project):
    (job,) = import_now(project, incoming_path(LOGS / "ag2.log"))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    call = Step.objects.get(trace=trace, index=2)
    assert (call.kind, call.tool_name, call.recipient) == (StepKind.TOOL_CALL, "stock_price", "chat_manager")
    assert call.tool_arguments == {"symbol": "NVDA", "dates": ["2024-01-02", "2024-03-28"]}
    assert Step.objects.get(trace=trace, index=0).kind == StepKind.HUMAN


@pytest.mark.django_db
def test_a_text_log_that_is_not_utf8_fails_with_a_clear_message(project):
    (job,) = import_now(
        project, incoming_bytes("latin1.log", "Alice: caf\u00e9\nBob: ok\n".encode("latin-1"))
    )
    assert job.status == JobStatus.FAILED
    assert "not UTF-8" in job.error or "not a recognised trace format" in job.error
    assert Trace.objects.count() == 0
