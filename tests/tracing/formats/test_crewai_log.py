"""CrewAI's run log (``Crew(output_log_file=...)``), as JSON and as text.

The files are written the way CrewAI's ``FileHandler.log`` writes them (``_write_log`` below follows its code: a
timestamped dict per call, a JSON list rewritten whole for ``.json`` paths, ``key="value"`` lines with an empty line
after each otherwise), from the calls its crew makes when a task starts and when it completes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.crewai_log import FORMAT as CREWAI
from tracing.models import JobStatus, Step, Trace

RESEARCH = 'Conduct a thorough research about AI LLMs.\nFind the "interesting" facts of 2025.'
REPORT = "Review the context you got and expand each topic into a full section for a report."
RESEARCHER, ANALYST = "AI LLMs Senior Data Researcher", "AI LLMs Reporting Analyst"
# An output that holds what the text form uses as separators: the reader must not split it.
FINDINGS = '1. GPT-5 was released in 2023, agent="Analyst", status="done".\n2. Open models closed the gap.'
SECTIONS = "# AI LLMs in 2025\n\n## GPT-5\nReleased in 2023 ..."


def _calls(*, finish_last: bool = True) -> list[dict]:
    """What one kickoff of a two-task crew logs (``Crew._log_task_start`` and ``_process_task_result``)."""
    calls = [
        {"task_name": "research_task", "task": RESEARCH, "agent": RESEARCHER, "status": "started"},
        {
            "task_name": "research_task",
            "task": RESEARCH,
            "agent": RESEARCHER,
            "status": "completed",
            "output": FINDINGS,
        },
        {"task_name": "reporting_task", "task": REPORT, "agent": ANALYST, "status": "started"},
    ]
    if finish_last:
        calls.append(
            {
                "task_name": "reporting_task",
                "task": REPORT,
                "agent": ANALYST,
                "status": "completed",
                "output": SECTIONS,
            }
        )
    return calls


def _write_log(calls: list[dict], name: str) -> Source:
    """The file CrewAI's FileHandler leaves after these calls, one every 17 seconds."""
    now = datetime(2025, 3, 10, 14, 2, 11)
    entries, text = [], ""
    for kwargs in calls:
        now += timedelta(seconds=17)
        stamp = now.strftime("%Y-%m-%d %H:%M:%S")
        entries.append({"timestamp": stamp, **kwargs})
        message = f"{stamp}: " + ", ".join([f'{key}="{value}"' for key, value in kwargs.items()]) + "\n"
        text += message + "\n"
    data = json.dumps(entries, indent=4) + "\n" if name.endswith(".json") else text
    return Source.from_bytes(name, data.encode())


def _steps(trace) -> list[tuple]:
    return [(s.kind, s.agent, s.recipient, s.content) for s in trace.steps]


@pytest.mark.parametrize("name", ["logs.json", "logs.txt"])
def test_each_kickoff_becomes_a_trace_of_task_handoffs_and_answers(name):
    source = _write_log(_calls() + _calls(finish_last=False), name)
    assert detect_format(source).name == "crewai-log"
    first, second = list(CREWAI.parse(source))
    assert (first.name, second.name) == ("logs/run 1", "logs/run 2")
    assert _steps(first) == [
        ("human", None, RESEARCHER, RESEARCH),
        ("message", RESEARCHER, "", FINDINGS),
        ("human", None, ANALYST, REPORT),
        ("message", ANALYST, "", SECTIONS),
    ]
    assert [a.name for a in first.agents] == [RESEARCHER, ANALYST]
    assert first.question == RESEARCH
    assert first.source_format == "crewai-log"
    # An answer runs from its task's start to its completion.
    answer = first.steps[1]
    assert (answer.started_at, answer.ended_at) == (first.steps[0].started_at, first.steps[1].ended_at)
    assert answer.ended_at - answer.started_at == timedelta(seconds=17)
    # The log never says whether the crew's answer was right; a run whose last task never completed stopped there.
    assert first.outcome == "unknown"
    assert second.outcome == "failed"
    assert second.metadata["outcome_cue"] == "task 'reporting_task' started and never completed"
    assert _steps(second) == _steps(first)[:3]


def test_the_json_and_text_forms_of_one_log_read_the_same():
    calls = _calls()
    as_json, as_text = (list(CREWAI.parse(_write_log(calls, name))) for name in ("logs.json", "logs.txt"))
    assert [_steps(t) for t in as_json] == [_steps(t) for t in as_text]
    assert [[s.started_at for s in t.steps] for t in as_json] == [
        [s.started_at for s in t.steps] for t in as_text
    ]


def test_a_single_kickoff_is_named_after_its_file():
    (trace,) = CREWAI.parse(_write_log(_calls(), "runs/crew_output.txt"))
    assert trace.name == "crew_output"


def test_logs_of_releases_before_task_names_pair_each_completion_with_its_agents_task():
    # Those releases logged agent, task, status, and on completion the output as ``task``.
    calls = [
        {"agent": RESEARCHER, "task": RESEARCH, "status": "started"},
        {"agent": RESEARCHER, "task": FINDINGS, "status": "completed"},
        {"agent": ANALYST, "task": REPORT, "status": "started"},
        {"agent": ANALYST, "task": SECTIONS, "status": "completed"},
    ]
    for name in ("old.json", "old.txt"):
        (trace,) = CREWAI.parse(_write_log(calls, name))
        assert _steps(trace) == [
            ("human", None, RESEARCHER, RESEARCH),
            ("message", RESEARCHER, "", FINDINGS),
            ("human", None, ANALYST, REPORT),
            ("message", ANALYST, "", SECTIONS),
        ], name
        assert trace.outcome == "unknown"


def test_a_failed_task_or_an_error_is_a_system_step_of_its_agent_and_fails_the_run():
    calls = _calls()[:3] + [
        {
            "task_name": "reporting_task",
            "task": REPORT,
            "agent": ANALYST,
            "status": "failed",
            "error": "Rate limit",
        }
    ]
    for name in ("failed.json", "failed.txt"):
        (trace,) = CREWAI.parse(_write_log(calls, name))
        last = trace.steps[-1]
        assert (last.kind, last.agent, last.content) == ("system", ANALYST, "Rate limit"), name
        assert trace.outcome == "failed"
        assert trace.metadata["outcome_cue"] == f"{ANALYST}: failed"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "non-empty list"),
        (
            [{"timestamp": "2025-03-10 14:02:11", "agent": "A", "task": "t", "status": "started"}, "oops"],
            "entry 1",
        ),
        ([{"timestamp": "x", "agent": "A", "task": "t", "status": "started"}, {"agent": "A"}], "entry 1"),
    ],
)
def test_a_json_log_with_a_foreign_entry_is_refused_naming_it(document, message):
    with pytest.raises(TraceFormatError, match=message):
        list(CREWAI.parse(Source.from_bytes("logs.json", json.dumps(document).encode())))


def test_detection_claims_crewai_logs_and_nothing_else():
    for name in ("logs.json", "logs.txt"):
        assert CREWAI.detect(_write_log(_calls(), name)) == 0.95
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".log", ".txt")]
    files += [
        p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.is_file() and p.suffix in (".log", ".txt")
    ]
    assert files
    for path in sorted(set(files)):
        source = Source.from_bytes(path.name, path.read_bytes())
        assert CREWAI.detect(source) == 0.0, path
    # A line that merely looks alike, without CrewAI's statuses, is another log.
    other = Source.from_bytes("x.log", b'2025-03-10 14:02:11: agent="A", note="hello"\n')
    assert CREWAI.detect(other) == 0.0


@pytest.mark.django_db
def test_an_uploaded_crewai_log_imports_its_runs(project):
    source = _write_log(_calls() + _calls(finish_last=False), "logs.txt")
    with source.open() as fh:
        data = fh.read()
    (job,) = import_now(project, incoming_bytes("crew/logs.txt", data))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "crewai-log"
    traces = list(Trace.objects.filter(project=project).order_by("name"))
    assert [(t.name, t.step_count, t.outcome) for t in traces] == [
        ("logs/run 1", 4, "unknown"),
        ("logs/run 2", 3, "failed"),
    ]
    answer = Step.objects.get(trace=traces[0], index=1)
    assert (answer.kind, answer.agent.name, answer.content) == ("message", RESEARCHER, FINDINGS)
    assert Step.objects.get(trace=traces[0], index=0).agent is None


@pytest.mark.django_db
def test_a_broken_json_log_fails_alone_and_stores_nothing(project):
    good = _write_log(_calls(), "good.txt")
    with good.open() as fh:
        good_bytes = fh.read()
    entry = {"timestamp": "2025-03-10 14:02:11", "agent": "A", "task": "t", "status": "started"}
    bad = json.dumps([entry, {**entry, "status": "completed", "output": "o"}, 7]).encode()
    jobs = import_now(project, incoming_bytes("good.txt", good_bytes), incoming_bytes("bad.json", bad))
    by_name = {j.filename: j for j in jobs}
    assert by_name["good.txt"].status == JobStatus.SUCCEEDED
    assert by_name["bad.json"].status == JobStatus.FAILED
    assert "entry 2 is not a CrewAI log entry" in by_name["bad.json"].error
    assert list(Trace.objects.filter(project=project).values_list("name", flat=True)) == ["good"]
