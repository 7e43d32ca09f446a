from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import WHO_AND_WHEN, import_now, incoming_path, whowhen_files
from tracing.formats import Source, detect_format
from tracing.formats.base import normalise_speaker
from tracing.models import Agent, GoldLabel, JobStatus, LabelSource, Step, StepKind, Trace

FILES = whowhen_files()


def _rel(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize(
    ("raw", "agent", "recipient", "tag"),
    [
        ("Orchestrator (-> WebSurfer)", "Orchestrator", "WebSurfer", ""),
        ("Orchestrator (thought)", "Orchestrator", "", "thought"),
        ("Orchestrator (termination condition)", "Orchestrator", "", "termination condition"),
        ("WebSurfer", "WebSurfer", "", ""),
        ("  Excel_Expert ", "Excel_Expert", "", ""),
        ("(thought)", "(thought)", "", ""),
    ],
)
def test_it_normalises_speaker_strings(raw, agent, recipient, tag):
    speaker = normalise_speaker(raw)
    assert (speaker.agent, speaker.recipient, speaker.tag) == (agent, recipient, tag)


def test_the_shared_collection_is_all_here():
    # The importer test below must cover both subsets; a missing folder would quietly shrink it to the demo set.
    if WHO_AND_WHEN.exists():
        assert len(FILES) == 123
    assert {p.parent.name for p in FILES} == {"Algorithm-Generated", "Hand-Crafted"}


@pytest.mark.django_db
@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_it_imports_every_who_and_when_file_with_its_steps_and_gold_label(project, path):
    document = json.loads(path.read_text())
    (job,) = import_now(project, incoming_path(path, _rel(path)))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "whowhen"
    trace = Trace.objects.get(pk=job.trace_ids[0])

    assert trace.step_count == len(document["history"])
    steps = list(
        Step.objects.filter(trace=trace).order_by("index").values_list("index", "speaker", "content")
    )
    assert [s[0] for s in steps] == list(range(len(document["history"])))
    for (_index, speaker, content), message in zip(steps, document["history"]):
        assert content == message["content"]
        assert speaker in (message.get("name"), message["role"])

    gold = GoldLabel.objects.get(trace=trace)
    assert gold.source == LabelSource.IMPORTED
    assert gold.step_index == int(document["mistake_step"])
    assert gold.agent_name == document["mistake_agent"]
    assert gold.reason == document["mistake_reason"]
    assert trace.question == document["question"]
    assert trace.ground_truth == str(document["ground_truth"])
    assert trace.outcome == "failed"


@pytest.mark.django_db
def test_it_splits_magentic_one_speakers_into_agent_kind_and_recipient(project):
    path = next(p for p in FILES if p.parent.name == "Hand-Crafted")
    (job,) = import_now(project, incoming_path(path))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    names = set(Agent.objects.filter(trace=trace).values_list("name", flat=True))
    assert "Orchestrator" in names
    assert not any("(" in name for name in names)
    thought = Step.objects.filter(trace=trace, speaker="Orchestrator (thought)").first()
    assert thought.agent.name == "Orchestrator" and thought.kind == StepKind.THOUGHT
    handoff = Step.objects.filter(trace=trace, speaker__startswith="Orchestrator (->").first()
    assert handoff.agent.name == "Orchestrator" and handoff.kind == StepKind.MESSAGE and handoff.recipient
    human = Step.objects.get(trace=trace, index=0)
    assert human.kind == StepKind.HUMAN


@pytest.mark.django_db
def test_it_keeps_algorithm_generated_system_prompts_and_terminal_output(project):
    path = next(p for p in FILES if p.parent.name == "Algorithm-Generated")
    document = json.loads(path.read_text())
    (job,) = import_now(project, incoming_path(path))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    prompts = dict(Agent.objects.filter(trace=trace).values_list("name", "system_prompt"))
    for agent, prompt in document["system_prompt"].items():
        assert prompts[agent] == prompt
    terminal_steps = Step.objects.filter(trace=trace, agent__name="Computer_terminal")
    assert all(step.kind == StepKind.TOOL_RESULT for step in terminal_steps)
    assert trace.metadata["subset"] == "Algorithm-Generated"


def test_detection_names_who_and_when_with_high_confidence():
    path = FILES[0]
    source = Source.from_bytes(path.name, path.read_bytes())
    assert detect_format(source).name == "whowhen"


def _jsonl(paths: list[Path]) -> bytes:
    lines = []
    for path in paths:
        document = json.loads(path.read_text())
        document["trace_name"] = _rel(path)
        lines.append(json.dumps(document))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.django_db
def test_a_who_and_when_jsonl_file_gives_one_trace_per_line(project):
    from tests.conftest import incoming_bytes

    paths = FILES[:3]
    (job,) = import_now(project, incoming_bytes("export.jsonl", _jsonl(paths)))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "whowhen-jsonl"
    traces = list(Trace.objects.filter(pk__in=job.trace_ids).order_by("ordinal"))
    assert [t.name for t in traces] == [_rel(p) for p in paths]
    for trace, path in zip(traces, paths):
        document = json.loads(path.read_text())
        assert trace.step_count == len(document["history"])
        assert trace.gold_labels.get().step_index == int(document["mistake_step"])


@pytest.mark.django_db
def test_a_bad_line_in_jsonl_fails_the_file_before_anything_is_written(project):
    from tests.conftest import incoming_bytes

    data = _jsonl(FILES[:2]) + b'{"history": [\n'
    (job,) = import_now(project, incoming_bytes("cut.jsonl", data))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("cut.jsonl: line 3 is not valid JSON")
    assert Trace.objects.count() == 0
