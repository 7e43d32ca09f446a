"""MAST / MAD records: framework logs wrapped in JSON, read by each framework's text reader, with MAST's per-run
failure modes kept in the trace's metadata. The fixtures are hand-written in the dataset's shapes (no MAST data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from attribution import taxonomy
from tests.conftest import ROOT, import_now, incoming_bytes, incoming_path
from tracing import services
from tracing.formats import ParsedGold, Source, TraceFormatError, detect_format
from tracing.formats.mast import FORMAT, MAST_MODES, failure_modes
from tracing.formats.text_chatdev import FORMAT as CHATDEV
from tracing.models import JobStatus, Trace

MAST = ROOT / "tests" / "fixtures" / "mast"


def _source(path: Path) -> Source:
    return Source.from_bytes(path.name, path.read_bytes())


def _parse(path: Path) -> list:
    return list(FORMAT.parse(_source(path)))


def _modes(trace) -> list[str]:
    return [m["code"] for m in trace.metadata["failure_modes"]["modes"]]


# --- detection ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "ag2_record.json",
        "hyperagent_record.json",
        "metagpt_record.json",
        "mad_rows.jsonl",
        "human_labelled.json",
    ],
)
def test_every_record_shape_is_detected_as_mast(name):
    assert detect_format(_source(MAST / name)).name == "mast"


def test_mast_claims_no_other_sample_file():
    others = [p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.is_file() and p.parent.name != "mast"]
    assert others and [p for p in others if FORMAT.detect(_source(p)) > 0.3] == []


# --- each shape ---------------------------------------------------------------------------------------------------


def test_an_ag2_trajectory_record_is_read_by_the_ag2_reader():
    (trace,) = _parse(MAST / "ag2_record.json")
    assert (trace.source_format, trace.metadata["text_reader"]) == ("mast", "text-ag2")
    assert (trace.external_id, trace.name) == ("math_0042", "math_0042")
    assert [s.agent for s in trace.steps] == ["mathproxyagent", "assistant", "mathproxyagent", "assistant"]
    assert trace.steps[1].content.startswith("Each roll costs $3 / 12")
    assert trace.question == "A baker sells 12 rolls for $3.\nHow much do 30 rolls cost?"
    assert "failure_modes" not in trace.metadata  # this shape carries no labels


def test_a_hyperagent_record_of_log_lines_falls_back_to_the_text_log_reader():
    (trace,) = _parse(MAST / "hyperagent_record.json")
    assert trace.metadata["text_reader"] == "text-log"
    assert [a.name for a in trace.agents][:2] == ["Planner", "Inner-Navigator-Assistant"]
    assert trace.metadata["instance_id"] == "astropy__astropy-9999"


def test_a_metagpt_record_keeps_its_run_facts_and_roles():
    (trace,) = _parse(MAST / "metagpt_record.json")
    assert trace.metadata["text_reader"] == "text-metagpt"
    assert [a.name for a in trace.agents] == ["Product Manager", "Architect", "Engineer"]
    assert (trace.metadata["cost"], trace.metadata["log_file"]) == (0.042, "logs/todo-cli-7.txt")
    assert trace.question == "Write a CLI todo list" and trace.external_id == "todo-cli-7"


def test_mad_rows_as_json_lines_keep_dataset_facts_and_mast_modes():
    chatdev, magentic, hyper = _parse(MAST / "mad_rows.jsonl")
    assert [t.metadata["text_reader"] for t in (chatdev, magentic, hyper)] == [
        "text-chatdev",
        "text-magentic",
        "text-log",
    ]
    assert (chatdev.name, chatdev.external_id) == ("ChatDev ProgramDev #101", "101")
    assert {k: chatdev.metadata[k] for k in ("mas_name", "llm_name", "benchmark_name")} == {
        "mas_name": "ChatDev",
        "llm_name": "gpt-4o",
        "benchmark_name": "ProgramDev",
    }
    assert chatdev.metadata["failure_modes"] == {
        "family": "MAST",
        "modes": [
            {"code": "1.1", "name": "Disobey task specification"},
            {"code": "3.2", "name": "No or incomplete verification"},
        ],
    }
    assert _modes(magentic) == ["3.1"]
    assert _modes(hyper) == []  # annotated, and no mode present: kept as an empty list, not dropped


def test_a_human_labelled_json_list_reads_trace_text_and_human_labels():
    appworld, metagpt = _parse(MAST / "human_labelled.json")
    assert appworld.metadata["text_reader"] == "text-appworld" and _modes(appworld) == ["2.4", "3.3"]
    assert appworld.metadata["mast_label_summary"]["total_failures"] == 2
    assert appworld.metadata["round"] == "Round 3" and appworld.external_id == "7"
    assert metagpt.metadata["text_reader"] == "text-metagpt" and _modes(metagpt) == ["1.3"]


def test_a_single_dataset_row_and_a_list_of_rows_read_alike():
    rows = [json.loads(line) for line in (MAST / "mad_rows.jsonl").read_text().splitlines()]
    (single,) = list(FORMAT.parse(Source.from_bytes("row.json", json.dumps(rows[1]).encode())))
    listed = list(FORMAT.parse(Source.from_bytes("rows.json", json.dumps(rows).encode())))
    assert len(listed) == 3
    assert [s.content for s in single.steps] == [s.content for s in listed[1].steps]


def test_a_run_no_reader_can_split_is_kept_whole_with_its_labels():
    row = {
        "mas_name": "Mystery",
        "trace_id": 5,
        "trace": "just one paragraph of prose",
        "mast_annotation": {"2.2": 1},
    }
    (trace,) = list(FORMAT.parse(Source.from_bytes("row.json", json.dumps(row).encode())))
    assert [s.content for s in trace.steps] == ["just one paragraph of prose"]
    assert _modes(trace) == ["2.2"] and "kept whole" in trace.warnings[0]


@pytest.mark.parametrize(
    "labels", [{"1.1": "yes", "1.2": "no", "2.6": True}, ["1.1", "2.6"]], ids=["votes", "codes"]
)
def test_labels_as_words_booleans_or_code_lists_give_the_modes_present(labels):
    assert [m["code"] for m in failure_modes(labels)] == ["1.1", "2.6"]


@pytest.mark.parametrize(
    "document",
    [
        [{"mas_name": "X", "trace": 5, "mast_annotation": {}}],
        {"mas_name": "X", "trace": "", "mast_annotation": {}},
        [{"mas_name": "X", "trace": "a: b", "mast_annotation": {}}, {"something": "else"}],
    ],
    ids=["trace-not-text", "empty-trace", "foreign-record"],
)
def test_malformed_records_raise_a_format_error(document):
    with pytest.raises(TraceFormatError):
        list(FORMAT.parse(Source.from_bytes("x.json", json.dumps(document).encode())))


def test_the_mast_modes_are_the_attribution_taxonomy_s():
    names = {
        c.code.removeprefix("mast."): c.label.split(" ", 2)[2]
        for c in taxonomy.CATEGORIES.values()
        if c.family == "mast"
    }
    assert {code: name.lower() for code, name in MAST_MODES.items()} == names


# --- ChatDev without time prefixes (the MAST copies) --------------------------------------------------------------


def test_a_chatdev_log_without_time_prefixes_gives_real_speakers_and_its_chat_chain():
    source = _source(MAST / "chatdev_bare.log")
    assert detect_format(source).name == "text-chatdev"
    (trace,) = list(CHATDEV.parse(source))
    assert [a.name for a in trace.agents] == [
        "Chief Executive Officer",
        "Chief Product Officer",
        "Programmer",
        "Code Reviewer",
    ]
    reply = next(s for s in trace.steps if "I agree that a Document format" in s.content)
    assert (reply.agent, reply.recipient, reply.kind, reply.raw["phase"]) == (
        "Chief Executive Officer",
        "Chief Product Officer",
        "message",
        "DemandAnalysis",
    )
    assert [link["phase"] for link in trace.metadata["chat_chain"]] == [
        "DemandAnalysis",
        "Coding",
        "CodeReviewComment",
    ]
    assert all(s.agent is None for s in trace.steps if s.speaker in ("ChatDev", "System"))
    assert not any(a.name == "ChatDev" for a in trace.agents)
    assert trace.steps[2].input_tokens == 300 and trace.question.startswith("Write a unit converter")


# --- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_mad_rows_import_end_to_end_and_the_trace_page_shows_the_modes(project, owner_client):
    (job,) = import_now(project, incoming_path(MAST / "mad_rows.jsonl"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.detected_format == "mast" and len(job.trace_ids) == 3
    chatdev = Trace.objects.get(project=project, external_id="101")
    assert chatdev.source_format == "mast" and _modes(chatdev) == ["1.1", "3.2"]
    body = owner_client.get(reverse("tracing:trace_detail", args=[chatdev.pk])).content.decode()
    assert "1.1 Disobey task specification" in body and "3.2 No or incomplete verification" in body
    assert "ProgramDev" in body and "gpt-4o" in body


@pytest.mark.django_db
def test_forcing_the_mast_reader_on_foreign_json_fails_cleanly(project):
    data = json.dumps({"history": []}).encode()
    (job,) = services.ingest_jobs_create(
        project=project,
        files=[incoming_bytes("x.json", data)],
        user=None,
        requested_format="mast",
        enqueue=False,
    )
    job = services.ingest_job_run(job_id=job.pk)
    assert job.status == JobStatus.FAILED
    assert job.error == "x.json: record 1 is not a MAST record (an object with keys history)"


@pytest.mark.django_db
def test_mast_modes_are_stored_as_trace_level_error_labels(project, owner_client):
    (job,) = import_now(project, incoming_path(MAST / "mad_rows.jsonl"))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert not any("neither a step nor a span" in w for w in job.report.get("warnings", []))
    chatdev = Trace.objects.get(project=project, external_id="101")
    labels = list(
        chatdev.error_labels.order_by("position").values_list(
            "family", "category", "step_index", "span_id", "decisive", "source"
        )
    )
    assert labels == [
        ("MAST", "1.1 Disobey task specification", None, "", False, "imported"),
        ("MAST", "3.2 No or incomplete verification", None, "", False, "imported"),
    ]
    assert (
        not chatdev.gold_labels.exists()
    )  # MAST says what failed, not where: nothing to score attribution on
    body = owner_client.get(reverse("tracing:trace_detail", args=[chatdev.pk])).content.decode()
    assert "MAST: 3.2 No or incomplete verification" in body and "for the whole run" in body
    # A re-delivered job writes them once.
    services.gold_write(
        trace=chatdev,
        labels=[ParsedGold(category="1.1", family="MAST", decisive=False)],
        source="imported",
        warnings=[],
    )
    assert chatdev.error_labels.count() == 2
