"""AgentRx Magentic-One trajectories and AgentRx ground-truth label files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.agentrx_labels import FORMAT as LABELS
from tracing.formats.agentrx_magentic import FORMAT as MAGENTIC
from tracing.formats.base import ParsedLabels
from tracing.models import GoldLabel, JobStatus, Step, StepKind, Trace

# The shared collection when it is beside the project, else the small copies made from it.
AGENTRX = SHARED / "traces" / "agentrx" if SHARED.exists() else ROOT / "tests" / "fixtures" / "agentrx"
MAGENTIC_FILES = sorted((AGENTRX / "magentic").glob("*.json"))
GROUND_TRUTH = AGENTRX / "ground_truth"
MAGENTIC_LABELS = GROUND_TRUTH / "magentic_one_ground_truth.json"
BOX_OFFICE = "2dfc4c37-fec1-4518-84a7-10095d30ad75"  # 20 messages; root cause: the Assistant at step 17
TIZIN = "42576abe-0deb-4869-8c63-225c2d75a95a"  # 5 messages; root cause: the Orchestrator's plan at step 2


def _source(path: Path, name: str | None = None) -> Source:
    return Source.from_bytes(name or f"{path.parent.name}/{path.name}", path.read_bytes())


def _bytes_source(document: object, name: str = "x.json") -> Source:
    return Source.from_bytes(name, json.dumps(document).encode())


def _labels(path: Path = MAGENTIC_LABELS) -> dict[str, ParsedLabels]:
    return {item.target_external_id: item for item in LABELS.parse(_source(path))}


def _decisive(labelled: ParsedLabels):
    (gold,) = [label for label in labelled.labels if label.decisive]
    return gold


def _all_shared_files() -> list[Path]:
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))


# --- Magentic-One trajectories -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MAGENTIC_FILES, ids=lambda p: p.stem[:12])
def test_every_magentic_sample_parses_into_one_failed_trace_with_a_step_per_message(path):
    messages = json.loads(path.read_text())
    (trace,) = list(MAGENTIC.parse(_source(path)))
    assert len(trace.steps) == len(messages) > 0
    assert [s.speaker for s in trace.steps] == [m["role"] for m in messages]
    assert [s.content for s in trace.steps] == [m["content"] for m in messages]
    assert trace.external_id == path.stem
    assert trace.outcome == "failed"
    assert trace.question == next(m["content"] for m in messages if m["role"] == "human")
    assert "Orchestrator" in {a.name for a in trace.agents}
    assert not any("(" in a.name for a in trace.agents)


def test_magentic_speakers_split_into_agent_kind_and_recipient_as_in_who_and_when():
    (trace,) = list(MAGENTIC.parse(_source(AGENTRX / "magentic" / f"{BOX_OFFICE}.json")))
    by_speaker = {s.speaker: s for s in trace.steps}
    assert trace.steps[0].kind == StepKind.HUMAN
    thought = by_speaker["Orchestrator (thought)"]
    assert (thought.agent, thought.kind) == ("Orchestrator", StepKind.THOUGHT)
    handoff = by_speaker["Orchestrator (-> WebSurfer)"]
    assert (handoff.agent, handoff.kind, handoff.recipient) == ("Orchestrator", StepKind.MESSAGE, "WebSurfer")
    assert by_speaker["Orchestrator (termination condition)"].kind == StepKind.THOUGHT
    assert [a.name for a in trace.agents] == ["human", "Orchestrator", "WebSurfer", "Assistant"]
    assert len(trace.steps) == 20


def test_the_ground_truth_names_magentic_trajectories_by_their_file_stem():
    entries = json.loads(MAGENTIC_LABELS.read_text())
    ids = {entry["trajectory_id"] for entry in entries}
    assert {p.stem for p in MAGENTIC_FILES} <= ids
    if SHARED.exists():
        assert len(entries) == 44 and len(MAGENTIC_FILES) == 3


# --- ground-truth labels -------------------------------------------------------------------------------------------


def test_the_root_cause_failure_becomes_the_label_with_a_zero_based_step():
    labels = _labels()
    (gold,) = labels[BOX_OFFICE].labels
    assert (gold.agent, gold.step, gold.category) == ("Assistant", 16, "Misinterpretation of Tool Output")
    assert gold.reason.startswith("Assistant omitted a movie name")
    (gold,) = labels[TIZIN].labels
    assert (gold.agent, gold.step) == ("Orchestrator", 1)
    assert labels[TIZIN].warnings == []


def test_the_label_lands_on_the_step_its_reason_describes():
    (trace,) = list(MAGENTIC.parse(_source(AGENTRX / "magentic" / f"{BOX_OFFICE}.json")))
    (gold,) = _labels()[BOX_OFFICE].labels
    step = trace.steps[gold.step]
    assert step.agent == "Assistant"
    assert step.content.startswith("Here are the top 10 highest-grossing worldwide movies of 2020")


def test_every_failure_is_a_label_of_the_agentrx_family_with_the_root_cause_decisive():
    labelled = _labels()["5f982798-16b9-4051-ab57-cfc7ebdb2a91"]
    assert [(g.agent, g.step, g.category, g.decisive) for g in labelled.labels] == [
        ("Websurfer", 12, "Instruction/Plan Adherence Failure", False),
        ("Websurfer", 16, "Instruction/Plan Adherence Failure", False),
        ("FileSurfer", 32, "Invention of new information", True),
    ]
    assert {g.family for g in labelled.labels} == {"AgentRx"}
    assert not any("also labelled" in w for w in labelled.warnings)
    case = [w for w in labelled.warnings if "differs in case" in w]
    assert len(case) == 2 and all("'Websurfer'" in w and "'WebSurfer'" in w for w in case)


def test_a_root_cause_id_given_as_text_still_finds_its_failure():
    document = [
        {
            "trajectory_id": "t1",
            "root_cause": {"failure_id": "2"},
            "failures": [
                {"failure_id": 1, "step_number": 3, "failed_agent": "WebSurfer", "failure_category": "A"},
                {
                    "failure_id": 2,
                    "step_number": 5,
                    "failed_agent": "Orchestrator (thought)",
                    "failure_category": "B",
                    "step_reason": "why",
                },
            ],
        }
    ]
    (labelled,) = list(LABELS.parse(_bytes_source(document)))
    gold = _decisive(labelled)
    assert (gold.agent, gold.step, gold.category, gold.reason) == ("Orchestrator", 4, "B", "why")
    assert [(g.agent, g.step, g.decisive) for g in labelled.labels] == [
        ("WebSurfer", 2, False),
        ("Orchestrator", 4, True),
    ]
    assert labelled.warnings == []


@pytest.mark.parametrize("root_cause", [None, {}, {"failure_id": 9}])
def test_without_a_usable_root_cause_the_earliest_failure_is_decisive(root_cause):
    document = [
        {
            "trajectory_id": 7,
            "root_cause": root_cause,
            "failures": [
                {"failure_id": 1, "step_number": 8, "failed_agent": "User"},
                {"failure_id": 2, "step_number": 4, "failed_agent": "Assistant"},
            ],
        }
    ]
    (labelled,) = list(LABELS.parse(_bytes_source(document)))
    assert labelled.target_external_id == "7"
    assert [(g.agent, g.step, g.decisive) for g in labelled.labels] == [
        ("User", 7, False),
        ("Assistant", 3, True),
    ]
    assert any("earliest failure (step 4)" in w for w in labelled.warnings)


@pytest.mark.parametrize("path", sorted(GROUND_TRUTH.glob("*.json")), ids=lambda p: p.name)
def test_every_ground_truth_file_gives_every_failure_with_one_decisive_per_trajectory(path):
    entries = json.loads(path.read_text())
    parsed = list(LABELS.parse(_source(path)))
    assert [p.target_external_id for p in parsed] == [str(e["trajectory_id"]) for e in entries]
    assert [len(p.labels) for p in parsed] == [len(e["failures"]) for e in entries]
    assert all(sum(g.decisive for g in p.labels) == 1 and all(g.step >= 0 for g in p.labels) for p in parsed)


# --- malformed input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {"history": []},
        [],
        [1, 2],
        [{"content": "no role"}],
        "text",
        None,
    ],
)
def test_malformed_magentic_files_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(MAGENTIC.parse(_bytes_source(document)))


@pytest.mark.parametrize(
    "document",
    [
        {"failures": []},
        [],
        ["x"],
        [{"failures": []}],
        [{"trajectory_id": None, "failures": []}],
        [{"trajectory_id": "a", "failures": "none"}],
        [{"trajectory_id": "a", "failures": [1]}],
        [{"trajectory_id": "a", "failures": [{"step_number": "three"}]}],
        [{"trajectory_id": "a", "failures": [{"step_number": 0}]}],
        [{"trajectory_id": True, "failures": []}],
    ],
)
def test_malformed_label_files_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(LABELS.parse(_bytes_source(document)))


@pytest.mark.parametrize(
    "document",
    [
        [{"trajectory_id": "a", "failures": []}],
        [{"trajectory_id": "a", "failures": [{"step_number": "2", "failed_agent": None}], "root_cause": "x"}],
    ],
)
def test_odd_but_readable_label_files_are_tolerated(document):
    (labelled,) = list(LABELS.parse(_bytes_source(document)))
    assert labelled.target_external_id == "a"
    assert labelled.warnings


def test_nothing_is_yielded_when_a_late_label_entry_is_broken():
    document = [
        {"trajectory_id": "a", "failures": []},
        {"trajectory_id": "b", "failures": [{"step_number": -1}]},
    ]
    parsed = LABELS.parse(_bytes_source(document))
    with pytest.raises(TraceFormatError, match="trajectory b"):
        next(parsed)


# --- detection -----------------------------------------------------------------------------------------------------


def test_detection_claims_only_agentrx_files():
    for path in _all_shared_files():
        source = _source(path)
        magentic, labels = MAGENTIC.detect(source), LABELS.detect(source)
        is_magentic = path.parent.name == "magentic" and "agentrx" in path.parts
        is_labels = path.parent.name == "ground_truth" and "agentrx" in path.parts
        assert (magentic >= 0.8) if is_magentic else (magentic <= 0.3), path
        assert (labels >= 0.8) if is_labels else (labels <= 0.3), path
        if is_magentic or is_labels:
            assert detect_format(source).name == ("agentrx-magentic" if is_magentic else "agentrx-labels")


def test_a_plain_chat_message_list_is_not_claimed_as_magentic_one():
    chat = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert MAGENTIC.detect(_bytes_source(chat)) < 0.5


# --- end to end ----------------------------------------------------------------------------------------------------


def _import(project, path: Path):
    (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


@pytest.mark.django_db
@pytest.mark.parametrize("labels_first", [False, True], ids=["traces-first", "labels-first"])
def test_ground_truth_attaches_to_the_magentic_trace_in_either_order(project, labels_first):
    trace_file = AGENTRX / "magentic" / f"{BOX_OFFICE}.json"
    order = [MAGENTIC_LABELS, trace_file] if labels_first else [trace_file, MAGENTIC_LABELS]
    jobs = [_import(project, path) for path in order]
    assert {j.detected_format for j in jobs} == {"agentrx-magentic", "agentrx-labels"}
    trace = Trace.objects.get(project=project, external_id=BOX_OFFICE)
    assert trace.step_count == 20
    gold = GoldLabel.objects.get(trace=trace)
    assert (gold.step_index, gold.agent_name, gold.category) == (
        16,
        "Assistant",
        "Misinterpretation of Tool Output",
    )
    assert gold.agent is not None and gold.agent.name == "Assistant"
    assert Step.objects.get(trace=trace, index=16).speaker == "Assistant"


@pytest.mark.django_db
def test_every_magentic_sample_imports_with_its_agents(project):
    for path in MAGENTIC_FILES:
        job = _import(project, path)
        trace = Trace.objects.get(pk=job.trace_ids[0])
        assert trace.step_count == len(json.loads(path.read_text()))
        assert trace.agent_count > 0 and trace.outcome == "failed"


@pytest.mark.django_db
def test_a_broken_label_file_stores_nothing(project):
    data = json.dumps(
        [
            {"trajectory_id": BOX_OFFICE, "failures": [{"step_number": 3}]},
            {"trajectory_id": "b", "failures": "oops"},
        ]
    ).encode()
    (job,) = import_now(project, incoming_bytes("labels.json", data))
    assert job.status == JobStatus.FAILED
    assert "trajectory b" in job.error
    _import(project, AGENTRX / "magentic" / f"{BOX_OFFICE}.json")
    assert not GoldLabel.objects.exists()
