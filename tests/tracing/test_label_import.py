"""Label files from public datasets attach whole: clean runs, text with NUL, agent spellings, colliding trace names."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.urls import reverse

from tests.conftest import ROOT, import_now, incoming_bytes, incoming_path
from tracing.formats import ParsedGold, ParsedLabels, ParsedStep, ParsedTrace
from tracing.models import ErrorLabel, GoldLabel, IngestJob, JobStatus, PendingLabel, Trace
from tracing.services import labels_attach, trace_create_from_parsed
from tracing.services.agent_names import agent_resolve

TRAIL = ROOT / "tests" / "fixtures" / "trail"
SMALL = "0ebe673d64647ec44c370638b82d3c78"
TRACE_FILE = TRAIL / "gaia" / f"{SMALL}.trace.json"
CASES = TRAIL / "label_cases"

pytestmark = pytest.mark.django_db


def _import(project, path, name=None):
    (job,) = import_now(project, incoming_path(path, name or f"{path.parent.name}/{path.name}"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


# --- TRAIL label files listing no error ---------------------------------------------------------------------------


@pytest.mark.parametrize("labels_first", [False, True], ids=["trace-first", "labels-first"])
def test_a_trail_label_file_with_no_errors_marks_the_run_as_labelled_clean(
    project, labels_first, owner_client
):
    order = [CASES / "no_errors" / f"{SMALL}.labels.json", TRACE_FILE]
    jobs = [_import(project, p) for p in (order if labels_first else order[::-1])]
    labels_job = next(j for j in jobs if j.detected_format == "trail-labels")
    assert labels_job.report["labels"] == 0
    assert "the TRAIL annotators found no error in this run" in labels_job.report["warnings"]
    trace = Trace.objects.get(project=project, external_id=SMALL)
    assert trace.metadata["labelled_errors"] == 0
    assert trace.metadata["trail_scores"] == [{"reliability_score": 5, "overall": 5.0}]
    assert not GoldLabel.objects.filter(trace=trace).exists() and not PendingLabel.objects.exists()
    body = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert "the label file lists no error in this run" in body


# --- NUL characters -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels_first", [False, True], ids=["trace-first", "labels-first"])
def test_label_text_with_nul_characters_imports_with_them_replaced(project, labels_first):
    order = [CASES / "nul_text" / f"{SMALL}.labels.json", TRACE_FILE]
    jobs = [_import(project, p) for p in (order if labels_first else order[::-1])]
    labels_job = next(j for j in jobs if j.detected_format == "trail-labels")
    assert "replaced 4 NUL character(s) in the label text with U+FFFD" in labels_job.report["warnings"]
    gold = GoldLabel.objects.get(trace__external_id=SMALL)
    assert gold.step_index == 3 and "frame\ufffdby\ufffdframe" in gold.reason and "\x00" not in gold.reason


def test_nul_characters_anywhere_in_a_trace_s_metadata_are_stored(project):
    parsed = ParsedTrace(
        name="nul",
        source_format="text-log",
        metadata={"note": "a\x00b", "k\x00": ["\x00"]},
        steps=[ParsedStep(speaker="A", agent="A", kind="message", content="x\x00y")],
    )
    trace = trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)
    trace.refresh_from_db()
    assert trace.metadata == {"note": "a\ufffdb", "k\ufffd": ["\ufffd"]}


# --- agent names in labels ----------------------------------------------------------------------------------------


def _agents(*names: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=n) for n in names]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("WebSurfer", "WebSurfer"),
        ("Websurfer", "WebSurfer"),
        ("web_surfer", "WebSurfer"),
        ("Web Surfer", "WebSurfer"),
        ("orchestrator", "MagenticOneOrchestrator"),
        ("Executor", "ComputerTerminal"),
        ("Surfer", None),  # names both surfers: resolves to neither
        ("Librarian", None),
    ],
)
def test_label_agent_names_resolve_by_case_spacing_alias_and_unique_suffix(given, expected):
    agents = _agents("MagenticOneOrchestrator", "WebSurfer", "FileSurfer", "ComputerTerminal")
    found = agent_resolve(given, agents)
    assert (found.name if found else None) == expected


def _magentic_trace(project) -> Trace:
    steps = [
        ParsedStep(speaker=s, agent=s, kind="message", content=f"turn {i}")
        for i, s in enumerate(["Orchestrator", "WebSurfer", "Orchestrator", "WebSurfer"])
    ]
    parsed = ParsedTrace(name="run", source_format="agentrx-magentic", steps=steps, external_id="traj-1")
    return trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def test_an_agentrx_label_spelled_websurfer_lands_on_the_trace_s_websurfer(project):
    trace = _magentic_trace(project)
    labels = ParsedLabels(
        target_external_id="traj-1",
        labels=[ParsedGold(agent="Websurfer", step=3)],
        source_format="agentrx-labels",
    )
    _, written, warnings = labels_attach(project=project, labels=labels, job_id=None)
    gold = GoldLabel.objects.get(trace=trace)
    assert written == 1 and (gold.agent_name, gold.agent.name, gold.step_index) == (
        "WebSurfer",
        "WebSurfer",
        3,
    )
    assert "label agent 'Websurfer' resolved to trace agent 'WebSurfer'" in warnings


def test_a_label_agent_the_trace_does_not_know_is_kept_as_given(project):
    trace = _magentic_trace(project)
    labels = ParsedLabels(
        target_external_id="traj-1",
        labels=[ParsedGold(agent="Librarian", step=1)],
        source_format="agentrx-labels",
    )
    labels_attach(project=project, labels=labels, job_id=None)
    gold = GoldLabel.objects.get(trace=trace)
    assert (gold.agent_name, gold.agent) == ("Librarian", None)


# --- trace names --------------------------------------------------------------------------------------------------


def _named(name: str, external_id: str = "") -> bytes:
    return json.dumps(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": f"{name} {external_id}"}]
    ).encode()


def test_two_traces_with_one_name_get_the_trace_or_file_id_appended(project):
    first = trace_create_from_parsed(
        project=project,
        upload=None,
        ordinal=0,
        parsed=ParsedTrace(
            name="autogen-2025-06-06",
            source_format="langfuse",
            external_id="abc123",
            steps=[ParsedStep(speaker="A", agent="A", kind="message", content="one")],
        ),
    )
    second = trace_create_from_parsed(
        project=project,
        upload=None,
        ordinal=0,
        parsed=ParsedTrace(
            name="autogen-2025-06-06",
            source_format="langfuse",
            external_id="def456",
            steps=[ParsedStep(speaker="A", agent="A", kind="message", content="two")],
        ),
    )
    assert (first.name, second.name) == ("autogen-2025-06-06", "autogen-2025-06-06 [def456]")
    (job_a,) = import_now(project, incoming_bytes("chat/run.json", _named("a")))
    (job_b,) = import_now(project, incoming_bytes("other/run.json", _named("b")))
    a, b = (Trace.objects.get(pk=j.trace_ids[0]) for j in (job_a, job_b))
    assert a.name == "run" and b.name == f"run [{b.upload.sha256[:8]}#0]"
    assert Trace.objects.filter(project=project).values("name").distinct().count() == 4


# --- several errors per trace (TRAIL) -----------------------------------------------------------------------------

MULTI = CASES / "multi" / f"{SMALL}.labels.json"


@pytest.mark.parametrize("labels_first", [False, True], ids=["trace-first", "labels-first"])
def test_every_trail_error_is_kept_and_the_earliest_high_impact_one_in_run_order_is_gold(
    project, labels_first
):
    order = [MULTI, TRACE_FILE]
    jobs = {path: _import(project, path) for path in (order if labels_first else order[::-1])}
    trace = Trace.objects.get(project=project, external_id=SMALL)
    # The label file's report says where its labels went, also when they had to wait for the trace.
    report = IngestJob.objects.get(pk=jobs[MULTI].pk).report
    assert report["labels"] == 1 and not any("wait for it" in w for w in report["warnings"])
    if labels_first:
        assert f"attached to trace {trace.name!r} (#{trace.pk}) when it was imported" in report["warnings"]
    errors = list(ErrorLabel.objects.filter(trace=trace).order_by("position"))
    # File order: step 8 HIGH, step 2 LOW, step 3 HIGH, an unknown span. Run order puts step 3 first of the HIGHs.
    assert [(e.step_index, e.impact, e.category, e.decisive) for e in errors] == [
        (8, "HIGH", "Formatting Errors", False),
        (2, "LOW", "Instruction Non-compliance", False),
        (3, "HIGH", "Tool-related", True),
        (None, "MEDIUM", "Goal Deviation", False),
    ]
    assert errors[3].span_id == "ffffffffffffffff" and errors[3].agent_name == ""
    assert all(e.family == "TRAIL" and e.evidence and e.description for e in errors)
    assert {e.agent_name for e in errors[:3]} == {"manager"}
    gold = GoldLabel.objects.get(trace=trace)
    assert (gold.step_index, gold.agent_name, gold.category) == (3, "manager", "Tool-related")
    assert gold.reason == (
        "The agent reverses the text in its head instead of with code.\n\n"
        "Evidence: reverses the text by hand\n\nImpact: HIGH"
    )
    assert trace.metadata["labelled_errors"] == 4


def test_the_same_trail_errors_attached_twice_are_stored_once(project):
    _import(project, TRACE_FILE)
    labels = json.loads(MULTI.read_text())
    for name in ("a/x.labels.json", "b/x.labels.json"):  # the same labels in two files (different bytes)
        labels["note"] = name
        (job,) = import_now(project, incoming_bytes(name, json.dumps(labels).encode()))
        assert job.status == JobStatus.SUCCEEDED, job.error
    assert ErrorLabel.objects.count() == 4 and GoldLabel.objects.count() == 1


def test_the_trace_page_marks_every_labelled_step_with_its_category(project, owner_client):
    _import(project, TRACE_FILE)
    _import(project, MULTI)
    trace = Trace.objects.get(project=project, external_id=SMALL)
    body = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    # Each badge reads as the category's human name, with TRAIL's own wording kept in its title.
    for category, name in (
        ("Formatting Errors", "Badly formatted output or tool call"),
        ("Instruction Non-compliance", "Did not follow its instructions"),
    ):
        assert f'<span class="category" title="TRAIL: {category}">{name} (TRAIL: {category})</span>' in body
    assert (
        '<span class="category" title="TRAIL: Tool-related">Made up a tool, a tool call or its result '
        "(TRAIL: Tool-related)</span> · HIGH · decisive"
    ) in body
    assert (
        'title="TRAIL: Goal Deviation">Drifted from the goal (TRAIL: Goal Deviation)</span> (MEDIUM) at span '
        "ffffffffffffffff, not a step of this trace"
    ) in body
    assert "4 in the label file" in body
    # The gold label taken from the decisive error (no family of its own) reads the same way.
    assert (
        'title="Tool-related">Made up a tool, a tool call or its result (TRAIL: Tool-related)</span>)' in body
    )


@pytest.mark.parametrize(
    ("family", "category", "shown"),
    [
        (
            "TRAIL",
            "Instruction non complience",
            "Did not follow its instructions (TRAIL: Instruction Non-compliance)",
        ),
        ("TRAIL", " Formatting Error", "Badly formatted output or tool call (TRAIL: Formatting Errors)"),
        ("TRAIL", "Tool Selection", "Chose the wrong tool (TRAIL: Tool Selection Errors)"),
        (
            "TRAIL",
            "Incorrect Memory Usage",
            "TRAIL: Incorrect Memory Usage",
        ),  # not in the taxonomy: as written
        ("MAST", "2.6 Reasoning-action mismatch", "Acted against its own reasoning (MAST 2.6)"),
        ("Who&When", "action.misalignment", "Action: did something other than it planned (misalignment)"),
    ],
)
def test_error_badges_name_loosely_spelled_categories(project, owner_client, family, category, shown):
    trace = trace_create_from_parsed(
        project=project,
        upload=None,
        ordinal=0,
        parsed=ParsedTrace(
            name="t",
            source_format="whowhen",
            steps=[ParsedStep(speaker="A", agent="A", kind="message", content="hi")],
        ),
    )
    ErrorLabel.objects.create(trace=trace, step_index=0, agent_name="A", family=family, category=category)
    body = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert f'<span class="category" title="{family.replace("&", "&amp;")}: {category}">{shown}</span>' in body


def test_the_trace_list_s_gold_badge_names_its_category(project, owner_client):
    _import(project, TRACE_FILE)
    _import(project, MULTI)
    body = owner_client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode()
    assert (
        'title="Imported: Made up a tool, a tool call or its result (TRAIL: Tool-related) (Tool-related)">'
        'manager <span class="at">@ 3</span></span>'
    ) in body


def test_label_text_is_escaped_on_the_trace_page(project, owner_client):
    _import(project, TRACE_FILE)
    document = json.loads(MULTI.read_text())
    document["errors"][0]["category"] = "<script>alert(1)</script>"
    document["errors"][0]["evidence"] = '<img src=x onerror="alert(2)">'
    (job,) = import_now(project, incoming_bytes(f"gaia/{SMALL}.labels.json", json.dumps(document).encode()))
    assert job.status == JobStatus.SUCCEEDED, job.error
    trace = Trace.objects.get(project=project, external_id=SMALL)
    body = owner_client.get(reverse("tracing:trace_detail", args=[trace.pk])).content.decode()
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<img src=x" not in body and "&lt;img src=x" in body


# --- the upload page's account of a label file --------------------------------------------------------------------

AGENTRX = ROOT / "tests" / "fixtures" / "agentrx"


def test_a_label_file_for_runs_not_imported_yet_says_how_many_wait_and_groups_its_warnings(
    project, owner_client
):
    labels = _import(project, AGENTRX / "ground_truth" / "magentic_one_ground_truth.json")
    assert labels.report["waiting"] == 3 and labels.report["labels"] == 0
    url = reverse("tracing:upload_batch", args=[project.slug, labels.batch])
    body = owner_client.get(url).content.decode()
    assert "3 runs not in the project yet: their labels attach when they are imported" in body
    # Three "no trace … yet" warnings are one kind: the first is shown, the others folded under it.
    assert body.count("in this project yet: its labels wait for it") == 3
    assert "and 2 more like it" in body and "of 1 kind" not in body

    run = _import(project, AGENTRX / "magentic" / "2dfc4c37-fec1-4518-84a7-10095d30ad75.json")
    report = IngestJob.objects.get(pk=labels.pk).report
    assert report["waiting"] == 2 and report["labels"] >= 1
    assert GoldLabel.objects.filter(trace_id=run.trace_ids[0]).exists()
    body = owner_client.get(reverse("tracing:upload", args=[project.slug])).content.decode()
    assert "label attached" in body or "labels attached" in body
    assert "2 waiting for their traces" in body


def test_warnings_group_by_kind_in_order_of_first_appearance():
    from tracing.templatetags.ingest_report import warning_groups

    groups = warning_groups(
        [
            "no trace 'a' in this project yet: its labels wait for it",
            "step 13: failed_agent 'Websurfer' differs in case from 'WebSurfer'",
            'no trace "b-2" in this project yet: its labels wait for it',
            "step 7: failed_agent 'Websurfer' differs in case from 'WebSurfer'",
            "the run has no question",
        ]
    )
    assert [(g["first"][:8], len(g["more"])) for g in groups] == [
        ("no trace", 1),
        ("step 13:", 1),
        ("the run ", 0),
    ]


def test_the_upload_pages_load_only_the_traces_they_name(project, owner_client):
    from tracing.selectors import with_traces

    bundle = "\n".join(
        json.dumps({"question": f"q{i}", "history": [{"role": "Planner", "content": f"step {i}"}]})
        for i in range(12)
    )
    (job,) = import_now(project, incoming_bytes("bundle.jsonl", bundle.encode()))
    assert job.status == JobStatus.SUCCEEDED, job.error
    (shown,) = with_traces([IngestJob.objects.get(pk=job.pk)])
    assert len(shown.traces) == 5 and shown.more_traces == 7
    body = owner_client.get(reverse("tracing:upload_batch", args=[project.slug, job.batch])).content.decode()
    assert "and 7 more traces" in body
