"""tau-bench run dumps (as shipped by AgentRx) and their AgentRx ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import Source, TraceFormatError, detect_format
from tracing.formats.agentrx_labels import FORMAT as LABELS
from tracing.formats.taubench import FORMAT as TAU
from tracing.models import Agent, ErrorLabel, GoldLabel, JobStatus, Step, StepKind, Trace

AGENTRX = SHARED / "traces" / "agentrx" if SHARED.exists() else ROOT / "tests" / "fixtures" / "agentrx"
RUNS = AGENTRX / "tau_retail" / "tau_dataset_failed.json"
TAU_LABELS = AGENTRX / "ground_truth" / "tau_ground_truth.json"
TAU_LABELS_SUBSET = AGENTRX / "ground_truth" / "tau_retail.json"


def _source(path: Path) -> Source:
    return Source.from_bytes(f"{path.parent.name}/{path.name}", path.read_bytes())


def _bytes_source(document: object, name: str = "runs.json") -> Source:
    return Source.from_bytes(name, json.dumps(document).encode())


def _traces() -> dict[str, object]:
    return {t.external_id: t for t in TAU.parse(_source(RUNS))}


def _run(task_id: int) -> dict:
    return next(r for r in json.loads(RUNS.read_text()) if r["task_id"] == task_id)


def _minimal_run(**overrides: object) -> dict:
    run = {
        "task_id": 1,
        "reward": 1.0,
        "info": {"task": {"instruction": "Buy a lamp."}},
        "traj": [
            {"role": "system", "content": "policy", "index": 1},
            {"role": "user", "content": "Hi", "index": 2},
            {"role": "assistant", "content": "Hello", "index": 3},
        ],
    }
    run.update(overrides)
    return run


# --- parsing -------------------------------------------------------------------------------------------------------


def test_every_run_becomes_a_trace_with_one_step_per_message():
    runs = json.loads(RUNS.read_text())
    traces = list(TAU.parse(_source(RUNS)))
    if SHARED.exists():
        assert len(traces) == 29 and sum(len(t.steps) for t in traces) == 1064
    assert [t.external_id for t in traces] == [str(r["task_id"]) for r in runs]
    for trace, run in zip(traces, runs):
        assert len(trace.steps) == len(run["traj"]) > 0
        # step i is the message whose 1-based index is i + 1: the index the ground truth's step_number uses
        assert [s.span_id for s in trace.steps] == [str(m["index"]) for m in run["traj"]]
        assert [s.speaker for s in trace.steps] == [m["role"] for m in run["traj"]]
        assert [a.name for a in trace.agents] == ["User", "Assistant"]
        assert trace.outcome == "failed"
        assert trace.question == run["info"]["task"]["instruction"]
        assert trace.warnings == []


def test_the_system_prompt_is_step_one_and_the_assistants_prompt():
    trace = _traces()["2"]
    system = trace.steps[0]
    assert (system.kind, system.agent) == (StepKind.SYSTEM, "Assistant")
    assert system.content.startswith("# Retail agent policy")
    assert next(a for a in trace.agents if a.name == "Assistant").system_prompt == system.content


def test_tool_calls_and_results_are_steps_of_the_assistant():
    trace = _traces()["2"]
    user, call, result = trace.steps[1], trace.steps[2], trace.steps[3]
    assert (user.kind, user.agent) == (StepKind.HUMAN, "User")
    assert user.content.startswith("Hey! I’d like to know how many t-shirt options")
    assert (call.kind, call.agent, call.tool_name, call.tool_arguments) == (
        StepKind.TOOL_CALL,
        "Assistant",
        "list_all_product_types",
        {},
    )
    assert (result.kind, result.agent, result.tool_name, result.parent) == (
        StepKind.TOOL_RESULT,
        "Assistant",
        "list_all_product_types",
        2,
    )
    assert trace.steps[4].tool_arguments == {"product_id": "9523456873"}
    assert trace.ground_truth == "10"
    assert trace.metadata["user_id"] == "yusuf_rossi_9620" and trace.metadata["expected_actions"]


def test_words_written_beside_a_tool_call_stay_in_the_call_step():
    run, trace = _run(34), _traces()["34"]
    message = run["traj"][20]  # index 21: text and a call
    step = trace.steps[20]
    assert message["content"] and message["tool_calls"]
    assert step.kind == StepKind.TOOL_CALL and step.tool_name == "modify_pending_order_items"
    assert step.content.startswith(message["content"]) and "modify_pending_order_items(" in step.content


def test_several_calls_in_one_message_become_several_steps_with_a_warning():
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": f"tool{i}", "arguments": '{"a": 1}'}}
        for i in (1, 2)
    ]
    run = _minimal_run(
        traj=[
            {"role": "system", "content": "p", "index": 1},
            {"role": "assistant", "content": None, "tool_calls": calls, "index": 2},
            {"role": "tool", "tool_call_id": "c2", "name": "tool2", "content": "ok", "index": 3},
        ]
    )
    (trace,) = list(TAU.parse(_bytes_source([run])))
    assert [s.tool_name for s in trace.steps] == ["", "tool1", "tool2", "tool2"]
    assert trace.steps[3].parent == 2
    assert trace.outcome == "succeeded"
    assert any("split into 2 steps" in w for w in trace.warnings)


def test_tool_calls_stored_as_python_text_are_read():
    text = "[{'id': 'c1', 'type': 'function', 'function': {'name': 'think', 'arguments': '{}'}}]"
    run = _minimal_run(traj=[{"role": "assistant", "content": None, "tool_calls": text}])
    (trace,) = list(TAU.parse(_bytes_source([run])))
    assert (trace.steps[0].kind, trace.steps[0].tool_name, trace.steps[0].span_id) == (
        "tool_call",
        "think",
        "1",
    )


# --- labels --------------------------------------------------------------------------------------------------------


def test_the_ground_truth_names_runs_by_task_id_and_steps_by_message_index():
    traces = _traces()
    labelled = {item.target_external_id: item for item in LABELS.parse(_source(TAU_LABELS))}
    assert set(labelled) == set(traces)
    off = set()
    for external_id, item in labelled.items():
        for gold in item.labels:
            if traces[external_id].steps[gold.step].agent != gold.agent:
                off.add(external_id)
    # Task 80 blames the assistant for ending after the user's last message (a system failure): the only label
    # whose step is another agent's.
    assert off <= {"80"}

    # Task 2 holds two failures; the root cause (the second) is decisive.
    assert [(g.step, g.agent, g.category, g.decisive) for g in labelled["2"].labels] == [
        (2, "Assistant", "Instruction Adherence Failure", False),
        (6, "Assistant", "Misinterpretation of Tool Output", True),
    ]
    assert traces["2"].steps[6].content.startswith("Currently, there are 11 available T-shirt options")
    first, *others = labelled["34"].labels
    assert first.decisive and not any(g.decisive for g in others)
    assert first.reason.startswith("At step 17, the assistant uses modify order to cancel")
    assert traces["34"].steps[first.step].tool_name == "modify_pending_order_items"
    assert (others[-1].step, others[-1].agent, others[-1].category) == (
        29,
        "User",
        "Underspecified User Intent",
    )


def test_the_retail_subset_file_carries_the_same_labels():
    full = {i.target_external_id: i.labels for i in LABELS.parse(_source(TAU_LABELS))}
    subset = {i.target_external_id: i.labels for i in LABELS.parse(_source(TAU_LABELS_SUBSET))}
    assert subset and all(full[key] == labels for key, labels in subset.items())


# --- malformed input and detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {"task_id": 1},
        [],
        [3],
        [{"traj": []}],
        [{"task_id": 1, "traj": []}],
        [{"task_id": 1, "traj": "x"}],
        [{"task_id": None, "traj": [{"role": "user"}]}],
        [_minimal_run(traj=[1])],
        [_minimal_run(traj=[{"role": "wizard", "content": "?"}])],
        [_minimal_run(traj=[{"role": "assistant", "tool_calls": "not a list"}])],
        [_minimal_run(traj=[{"role": "assistant", "tool_calls": {"a": 1}}])],
        [_minimal_run(traj=[{"role": "assistant", "tool_calls": [{"function": {}}]}])],
        [_minimal_run(traj=[{"role": "assistant", "tool_calls": ["x"]}])],
        [_minimal_run(), _minimal_run(traj=None)],
    ],
)
def test_malformed_runs_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(TAU.parse(_bytes_source(document)))


@pytest.mark.parametrize(
    "run",
    [
        _minimal_run(info=None, reward=None),
        _minimal_run(info={"task": "text"}, reward="1"),
        _minimal_run(traj=[{"role": "assistant", "content": {"parts": ["a"]}, "tool_calls": "None"}]),
        _minimal_run(
            traj=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}]
        ),
    ],
)
def test_odd_but_readable_runs_are_tolerated(run):
    (trace,) = list(TAU.parse(_bytes_source([run])))
    assert trace.steps and trace.external_id == "1"


def test_repeated_task_ids_keep_their_names_apart():
    traces = list(TAU.parse(_bytes_source([_minimal_run(trial=0), _minimal_run(trial=1)])))
    assert [t.name for t in traces] == ["runs/task 1", "runs/task 1 trial 1"]
    assert traces[1].warnings


def test_detection_claims_only_the_tau_bench_file():
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")):
        score = TAU.detect(_source(path))
        if path.name == "tau_dataset_failed.json":
            assert score >= 0.8 and detect_format(_source(path)).name == "taubench"
        else:
            assert score <= 0.3, path


# --- end to end ----------------------------------------------------------------------------------------------------


def _import(project, path: Path):
    (job,) = import_now(project, incoming_path(path, f"{path.parent.name}/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


@pytest.mark.django_db
@pytest.mark.parametrize("labels_first", [False, True], ids=["traces-first", "labels-first"])
def test_tau_ground_truth_attaches_to_the_right_run_and_step_in_either_order(project, labels_first):
    order = [TAU_LABELS, RUNS] if labels_first else [RUNS, TAU_LABELS]
    jobs = [_import(project, path) for path in order]
    assert {j.detected_format for j in jobs} == {"taubench", "agentrx-labels"}
    runs = json.loads(RUNS.read_text())
    assert Trace.objects.filter(project=project, source_format="taubench").count() == len(runs)
    trace = Trace.objects.get(project=project, external_id="2")
    assert trace.step_count == 32
    gold = GoldLabel.objects.get(trace=trace)
    assert (gold.step_index, gold.agent_name) == (6, "Assistant")
    assert gold.agent == Agent.objects.get(trace=trace, name="Assistant")
    step = Step.objects.get(trace=trace, index=6)
    assert step.content.startswith("Currently, there are 11 available T-shirt options")
    assert GoldLabel.objects.filter(trace__project=project).count() == len(runs)
    # Every failure of the run is kept as an error label, the root cause decisive and matching the gold label.
    errors = list(ErrorLabel.objects.filter(trace=trace).order_by("position"))
    assert [(e.step_index, e.agent_name, e.family, e.decisive) for e in errors] == [
        (2, "Assistant", "AgentRx", False),
        (6, "Assistant", "AgentRx", True),
    ]
    failures = sum(len(e["failures"]) for e in json.loads(TAU_LABELS.read_text()))
    assert ErrorLabel.objects.filter(trace__project=project).count() == failures


@pytest.mark.django_db
def test_a_run_file_with_a_broken_run_stores_nothing(project):
    data = json.dumps([_minimal_run(), _minimal_run(task_id=2, traj=[{"role": "wizard"}])]).encode()
    (job,) = import_now(project, incoming_bytes("runs.json", data))
    assert job.status == JobStatus.FAILED and "task 2" in job.error
    assert not Trace.objects.filter(project=project).exists()


def test_messages_out_of_index_order_are_reported_once():
    traj = [
        {"role": "user", "content": "a", "index": 1},
        {"role": "user", "content": "b", "index": 3},
        {"role": "user", "content": "c", "index": 4},
    ]
    (trace,) = list(TAU.parse(_bytes_source([_minimal_run(traj=traj)])))
    assert [s.span_id for s in trace.steps] == ["1", "3", "4"]
    assert len(trace.warnings) == 1 and "has index 3, not 2" in trace.warnings[0]
