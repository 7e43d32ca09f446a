"""TRAIL span trees (smolagents via OpenInference) and TRAIL label files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, SHARED, import_now, incoming_bytes, incoming_path
from tracing.formats import ParsedGold, Source, TraceFormatError, detect_format
from tracing.formats.trail import FORMAT as TRAIL
from tracing.formats.trail_labels import FORMAT as LABELS
from tracing.models import ErrorLabel, GoldLabel, JobStatus, Step, Trace
from tracing.services.labels import decisive_index

# The shared collection when it is beside the project, else the small copy made from it.
TRAIL_DIR = SHARED / "traces" / "trail" if SHARED.exists() else ROOT / "tests" / "fixtures" / "trail"
TRACE_FILES = sorted(TRAIL_DIR.rglob("*.trace.json"))
# label_cases/ holds hand-written cases for tests/tracing/test_label_import.py, not samples.
LABEL_FILES = sorted(p for p in TRAIL_DIR.rglob("*.labels.json") if "label_cases" not in p.parts)

# Facts read off the sample files: steps, agents, and the decisive label (span, step index, agent, category).
EXPECTED = {
    "08be1639c58e086cf0bb8c269039973d": (
        9,
        ["manager"],
        ("2ea5094b76cd15e7", 3, "manager", "Tool Selection Errors"),
    ),
    "0ebe673d64647ec44c370638b82d3c78": (
        9,
        ["manager"],
        ("29f141a7c2556206", 2, "manager", "Instruction Non-compliance"),
    ),
    "2c77a8feec544cc61a00a387ad792a13": (
        19,
        ["manager"],
        ("b312dd6a2aeb3347", 13, "manager", "Tool-related"),
    ),
    "3215fc75e81bdb73706a4fb37b66427f": (
        20,
        ["manager", "search_agent"],
        ("fdca808d8e936b13", 11, "search_agent", "Task Orchestration"),
    ),
    "72822db6e120878d916b515c2501246b": (
        12,
        ["CodeAgent"],
        ("12f1a231cfc60c28", 4, "CodeAgent", "Formatting Errors"),
    ),
    "da17836ad8ecb77066313bdcbf25547a": (
        16,
        ["CodeAgent"],
        ("4c0ac82fea77e6c9", 7, "CodeAgent", "Resource Abuse"),
    ),
}
SMALL = "0ebe673d64647ec44c370638b82d3c78"  # the one trace kept in tests/fixtures


def _source(path: Path) -> Source:
    return Source.from_bytes(f"{path.parent.name}/{path.name}", path.read_bytes())


def _trace_id(path: Path) -> str:
    return path.name.split(".")[0]


def _path(trace_id: str, kind: str = "trace") -> Path:
    return next(TRAIL_DIR.rglob(f"{trace_id}.{kind}.json"))


def _span_ids(path: Path) -> set[str]:
    ids: set[str] = set()
    stack = list(json.loads(path.read_text())["spans"])
    while stack:
        span = stack.pop()
        ids.add(span["span_id"])
        stack.extend(span.get("child_spans", []))
    return ids


def test_the_shared_trail_samples_are_all_here():
    if SHARED.exists():
        assert {_trace_id(p) for p in TRACE_FILES} == set(EXPECTED) == {_trace_id(p) for p in LABEL_FILES}
    assert SMALL in {_trace_id(p) for p in TRACE_FILES}


# --- traces ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TRACE_FILES, ids=_trace_id)
def test_every_trail_trace_parses_into_one_trace_with_agents_steps_and_parent_links(path):
    steps, agents, _ = EXPECTED[_trace_id(path)]
    (trace,) = list(TRAIL.parse(_source(path)))
    assert trace.external_id == _trace_id(path) == json.loads(path.read_text())["trace_id"]
    assert trace.name == f"{path.parent.name}/{_trace_id(path)}"  # gaia/<id> or swe_bench/<id>
    assert len(trace.steps) == steps
    assert [a.name for a in trace.agents] == agents
    assert all(step.agent in agents for step in trace.steps)
    assert any(step.parent is not None for step in trace.steps)
    assert all(step.parent is None or step.parent < i for i, step in enumerate(trace.steps))
    # Every step keeps a span id from the file (or the ":input" opener made from one).
    assert {s.span_id.removesuffix(":input") for s in trace.steps} <= _span_ids(path)


def _trail_document() -> dict:
    return json.loads(_path(SMALL).read_text())


def _parse(document: dict) -> object:
    (trace,) = list(TRAIL.parse(Source.from_bytes(f"{SMALL}.trace.json", json.dumps(document).encode())))
    return trace


def _manager_step_1(document: dict) -> dict:
    agent = document["spans"][0]["child_spans"][1]["child_spans"][1]
    assert agent["span_name"] == "CodeAgent.run"
    return next(s for s in agent["child_spans"] if s["span_name"] == "Step 1")


def test_a_managed_agent_is_named_from_its_task_and_its_boss_is_the_manager():
    # The fixture's manager calls no team member; give its Step 1 one, shaped as in the 3215fc75 sample.
    document = _trail_document()
    step = _manager_step_1(document)
    tool = {
        "span_id": "cafe000000000002",
        "span_name": "SearchInformationTool",
        "timestamp": "2025-03-19T16:41:05Z",
        "span_attributes": {
            "openinference.span.kind": "TOOL",
            "tool.name": "web_search",
            "input.value": '{"args": [], "kwargs": {"query": "left"}}',
            "output.value": "Address: google: left",
        },
    }
    step["child_spans"].append(
        {
            "span_id": "cafe000000000001",
            "span_name": "ToolCallingAgent.run",
            "timestamp": "2025-03-19T16:41:04Z",
            "duration": "PT2S",
            "status_code": "Ok",
            "child_spans": [tool],
            "span_attributes": {
                "openinference.span.kind": "AGENT",
                "output.value": "left means right",
                "input.value": json.dumps({"task": "You're a helpful agent named 'search_agent'.\n..."}),
            },
        }
    )
    trace = _parse(document)
    assert [a.name for a in trace.agents] == ["manager", "search_agent"]
    search = [s for s in trace.steps if s.agent == "search_agent"]
    assert [s.kind for s in search] == ["message", "tool_call", "tool_result", "message"]
    assert search[0].span_id == "cafe000000000001:input" and search[-1].span_id == "cafe000000000001"
    assert search[1].tool_name == "web_search" and search[1].tool_arguments == {"query": "left"}
    assert trace.steps[search[0].parent].agent == "manager"


def test_a_step_span_s_output_follows_the_model_call_that_produced_it():
    (trace,) = list(TRAIL.parse(_source(_path(SMALL))))
    kinds = [(s.kind, s.speaker) for s in trace.steps]
    assert kinds[0] == ("message", "CodeAgent.run")  # the manager's task opens the run
    assert trace.steps[0].span_id == "a8b04c65d3a15955:input"
    code_call = next(i for i, s in enumerate(trace.steps) if s.span_id == "9dfa48b84b860b85")
    observation = next(i for i, s in enumerate(trace.steps) if s.span_id == "80036c1d5ca204f4")  # "Step 1"
    assert code_call < observation
    assert trace.steps[observation].content.startswith("Execution logs:")
    assert trace.steps[code_call].kind == "llm_call" and trace.steps[code_call].input_tokens
    final = next(s for s in trace.steps if s.span_id == "a8b04c65d3a15955")
    assert final.content == "right" and final.speaker == "CodeAgent.run (output)"
    assert final.kind == "message"  # an agent's output is its answer, an action of its own


def test_a_step_span_s_output_is_the_tool_result_of_the_model_call_that_acted():
    """What a ``Step N`` span observed (the code's execution log) is the output of the model call that wrote the
    code: a tool result hanging from that call, so the methods charge it to the call and never blame the log itself
    (TRAIL's annotators never do: every labelled error is on a model call or a tool call)."""
    from attribution.methods.heuristic import METHOD
    from tests.attribution.test_heuristic_golden import view_of

    (trace,) = list(TRAIL.parse(_source(_path(SMALL))))
    observations = [
        s for s in trace.steps if s.speaker.startswith("Step ") and s.speaker.endswith("(output)")
    ]
    assert observations and {s.kind for s in observations} == {"tool_result"}
    for observation in observations:
        assert trace.steps[observation.parent].kind == "llm_call"
    result = METHOD.run(view_of(trace))
    assert trace.steps[result.step].kind not in ("tool_result", "human", "system")


def test_the_harness_spans_give_the_question_and_the_right_answer_but_no_steps():
    (trace,) = list(TRAIL.parse(_source(_path(SMALL))))
    assert trace.question.startswith(".rewsna eht sa")
    assert trace.ground_truth == "Right"
    assert trace.metadata["task_id"] == "2d83110e-a098-4ebb-9987-066c06fa42d0"
    assert not {"main", "answer_single_question", "get_examples_to_answer"} & {s.speaker for s in trace.steps}
    assert trace.agents[0].system_prompt.startswith(
        "You are an expert assistant who can solve any task using code"
    )


def test_failed_spans_carry_their_error_and_fail_the_run():
    document = _trail_document()
    step = _manager_step_1(document)
    step.update(status_code="Error", status_message="AgentExecutionError: Code execution failed")
    agent = document["spans"][0]["child_spans"][1]["child_spans"][1]
    agent.update(
        status_code="Error",
        status_message="",
        events=[
            {
                "Name": "exception",
                "Attributes": {"exception.type": "AgentGenerationError", "exception.message": "429"},
            }
        ],
    )
    trace = _parse(document)
    assert trace.outcome == "failed"
    observation = next(s for s in trace.steps if s.span_id == step["span_id"])
    assert observation.content.endswith("ERROR: AgentExecutionError: Code execution failed")
    final = next(s for s in trace.steps if s.span_id == agent["span_id"])
    assert final.content == "right\n\nERROR: AgentGenerationError: 429"


def test_missing_parent_spans_and_a_repeated_span_id_import_with_warnings():
    # As in the 72822db6 sample: the agent span was not exported and one LLM span appears twice.
    document = _trail_document()
    agent = document["spans"][0]["child_spans"][1]["child_spans"][1]
    children = agent["child_spans"]
    for child in children:
        child["parent_span_id"] = "0000000000000000"
    children.append(copy.deepcopy(children[0]))
    builder = document["spans"][0]["child_spans"][1]["child_spans"][0]
    assert builder["span_name"] == "create_agent_hierarchy"  # its log says which agent class it built
    document["spans"] = [{**builder, "parent_span_id": None}, *children]
    trace = _parse(document)
    assert any(f"{children[0]['span_id']} appears more than once" in w for w in trace.warnings)
    assert any("1 parent span(s) are missing from the file (0000000000000000)" in w for w in trace.warnings)
    assert [s.span_id for s in trace.steps].count(children[0]["span_id"]) == 1
    assert {a.name for a in trace.agents} == {"CodeAgent"}
    assert trace.question.startswith("Below I will present you a task")


def _malformed() -> list[object]:
    base = _trail_document()
    no_id = copy.deepcopy(base)
    del no_id["spans"][0]["child_spans"][1]["span_id"]
    bad_children = copy.deepcopy(base)
    bad_children["spans"][0]["child_spans"] = {"not": "a list"}
    not_a_span = copy.deepcopy(base)
    not_a_span["spans"][0]["child_spans"].append("span")
    return [
        [],
        "spans",
        {"trace_id": "x"},
        {"trace_id": "x", "spans": []},
        {"trace_id": "x", "spans": "no"},
        no_id,
        bad_children,
        not_a_span,
        {"trace_id": "x", "spans": [{"span_id": "a", "span_name": "main"}]},
    ]


@pytest.mark.parametrize("document", _malformed(), ids=lambda d: str(d)[:40])
def test_malformed_trail_traces_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(TRAIL.parse(Source.from_bytes("x.trace.json", json.dumps(document).encode())))


def test_odd_values_inside_spans_are_tolerated():
    document = _trail_document()
    llm = document["spans"][0]["child_spans"][1]["child_spans"][1]["child_spans"][0]
    llm["span_attributes"]["llm.token_count.prompt"] = None
    llm["span_attributes"]["output.value"] = ["not", "a", "message"]
    llm["duration"] = "soon"
    llm["events"] = [None, {"Attributes": "x"}]
    llm["span_attributes"].pop("llm.output_messages.0.message.content")
    document["spans"][0]["span_attributes"] = "not a dict"
    document["spans"][0]["logs"] = [None, {"body": "text"}]
    trace = _parse(document)
    assert len(trace.steps) == 9 and trace.steps[1].input_tokens is None


# --- labels ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LABEL_FILES, ids=_trace_id)
def test_every_label_file_targets_its_trace_and_keeps_every_error_in_file_order(path):
    document = json.loads(path.read_text())
    (labels,) = list(LABELS.parse(_source(path)))
    assert labels.target_external_id == document["trace_id"] == _trace_id(path)
    assert [(g.span_id, g.category, g.impact, g.reason, g.evidence) for g in labels.labels] == [
        (e["location"], e["category"], e["impact"], e["description"], e["evidence"])
        for e in document["errors"]
    ]
    # The reader marks none decisive: the writer picks one once spans are steps (run order is not file order).
    assert all(
        g.family == "TRAIL" and not g.decisive and g.agent == "" and g.step is None for g in labels.labels
    )
    assert labels.warnings == [] and labels.metadata["labelled_errors"] == len(document["errors"])


@pytest.mark.django_db
@pytest.mark.parametrize("path", LABEL_FILES, ids=_trace_id)
def test_every_label_file_imports_all_errors_and_its_earliest_high_impact_one_is_gold(project, path):
    trace_path = path.with_name(path.name.replace(".labels.", ".trace."))
    for file in (trace_path, path):
        (job,) = import_now(project, incoming_path(file, f"{file.parent.name}/{file.name}"))
        assert job.status == JobStatus.SUCCEEDED, job.error
    span, step, agent, category = EXPECTED[_trace_id(path)][2]
    gold = GoldLabel.objects.get(trace__project=project)
    assert (gold.step_index, gold.agent_name, gold.category) == (step, agent, category)
    errors = list(ErrorLabel.objects.filter(trace=gold.trace).order_by("position"))
    assert len(errors) == len(json.loads(path.read_text())["errors"])
    (decisive,) = [e for e in errors if e.decisive]
    assert (decisive.span_id, decisive.step_index, decisive.category, decisive.impact) == (
        span,
        step,
        category,
        decisive.impact,
    )
    high = [e.step_index for e in errors if e.impact == "HIGH"]
    assert decisive.step_index == min(high or [e.step_index for e in errors])


def test_every_label_location_is_a_span_that_became_a_step_of_its_trace():
    locations = found = 0
    for path in LABEL_FILES:
        trace_path = path.with_name(path.name.replace(".labels.", ".trace."))
        (trace,) = list(TRAIL.parse(_source(trace_path)))
        step_spans = {s.span_id for s in trace.steps}
        for error in json.loads(path.read_text())["errors"]:
            locations += 1
            found += error["location"] in step_spans
    assert found == locations
    if SHARED.exists():
        assert locations == 19


def test_a_label_file_without_a_trace_id_is_matched_by_its_file_name():
    document = json.loads(_path(SMALL, "labels").read_text())
    del document["trace_id"]
    source = Source.from_bytes(f"gaia/{SMALL}.labels.json", json.dumps(document).encode())
    assert detect_format(source).name == "trail-labels"
    (labels,) = list(LABELS.parse(source))
    assert labels.target_external_id == SMALL


def _steps(*indexes):
    return [None if i is None else SimpleNamespace(index=i) for i in indexes]


def test_the_decisive_error_is_the_earliest_high_impact_one_in_run_order():
    labels = [
        ParsedGold(impact=impact, family="TRAIL", decisive=False)
        for impact in ("HIGH", "LOW", "HIGH", "HIGH")
    ]
    assert (
        decisive_index(labels, _steps(9, 1, 4, 4)) == 2
    )  # step 4 beats step 9; file order breaks the tie at 4


def test_without_a_high_impact_error_the_earliest_error_in_run_order_is_decisive():
    labels = [ParsedGold(impact=impact, decisive=False) for impact in ("MEDIUM", "LOW", "HIGH")]
    assert decisive_index(labels, _steps(5, 2, None)) == 1  # the HIGH one names no step of the trace
    assert decisive_index(labels, _steps(None, None, None)) is None


def test_a_label_its_source_marks_decisive_stays_decisive():
    labels = [ParsedGold(impact="HIGH", decisive=False), ParsedGold(impact="LOW", decisive=True)]
    assert decisive_index(labels, _steps(1, 7)) == 1


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"errors": "none"},
        {"trace_id": "t", "errors": ["x"]},
        {"trace_id": "t", "errors": [{"category": "A", "location": None}]},
        {"trace_id": "t", "errors": [{"category": "A"}]},
    ],
    ids=str,
)
def test_malformed_label_files_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(LABELS.parse(Source.from_bytes("t.labels.json", json.dumps(document).encode())))


# --- detection ---------------------------------------------------------------------------------------------------


def _all_sample_files() -> list[Path]:
    root = SHARED if SHARED.exists() else ROOT / "tests" / "fixtures"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))


def test_only_trail_files_score_high_with_the_trail_detectors():
    for path in _all_sample_files():
        source = _source(path)
        trace_score, label_score = TRAIL.detect(source), LABELS.detect(source)
        if path.name.endswith(".trace.json") and "trail" in path.parts:
            assert trace_score >= 0.8 and label_score <= 0.3, path
            assert detect_format(source).name == "trail"
        elif path.name.endswith(".labels.json") and "trail" in path.parts:
            assert label_score >= 0.8 and trace_score <= 0.3, path
            assert detect_format(source).name == "trail-labels"
        else:
            assert trace_score <= 0.3 and label_score <= 0.3, path


# --- end to end --------------------------------------------------------------------------------------------------


def _import_trace(project) -> Trace:
    path = _path(SMALL)
    (job,) = import_now(project, incoming_path(path, f"gaia/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "trail"
    return Trace.objects.get(pk=job.trace_ids[0])


def _import_labels(project):
    path = _path(SMALL, "labels")
    (job,) = import_now(project, incoming_path(path, f"gaia/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "trail-labels"
    return job


def _assert_labelled(trace: Trace) -> None:
    gold = GoldLabel.objects.get(trace=trace)
    step = Step.objects.get(trace=trace, index=gold.step_index)
    assert step.span_id == "29f141a7c2556206" and gold.step_index == 2
    assert gold.agent_name == "manager" and gold.category == "Instruction Non-compliance"


def test_imported_trail_steps_keep_span_ids_parents_and_tokens(project):
    trace = _import_trace(project)
    assert trace.external_id == SMALL and trace.step_count == 9
    steps = list(Step.objects.filter(trace=trace).order_by("index"))
    assert [s.parent_index for s in steps][:3] == [None, 0, 0]
    assert steps[2].span_id == "29f141a7c2556206" and steps[2].input_tokens and steps[2].started_at


def test_trail_labels_attach_to_the_step_built_from_the_labelled_span_after_the_trace(project):
    trace = _import_trace(project)
    job = _import_labels(project)
    assert job.report["labels"] == 1
    _assert_labelled(trace)


def test_trail_labels_imported_before_their_trace_attach_when_it_arrives(project):
    _import_labels(project)
    trace = _import_trace(project)
    _assert_labelled(trace)


def test_a_trail_file_without_any_text_fails_its_job_with_a_plain_reason(project):
    data = b'{"trace_id": "x", "spans": [{"span_id": "a", "span_name": "main", "child_spans": []}]}'
    (job,) = import_now(project, incoming_bytes("x.trace.json", data))
    assert job.status == JobStatus.FAILED
    assert (
        job.error
        == "x.trace.json: no span in this TRAIL trace carries any text: there are no steps to import"
    )
