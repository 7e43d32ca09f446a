"""The shortcuts of the import's fourth pass (issue 19) store exactly what the paths they bypass stored: a file read
in a forked parse-ahead process, the COPY values that skip Django's preparation, a step's ``raw`` serialised by
hand, and the depth check's string stripping without a regex. No timings: speed is measured in bench/scale.py."""

from __future__ import annotations

import json
import random
import re
from itertools import accumulate

import pytest
from django.db import connection

from tests.conftest import import_now, incoming_bytes, whowhen_files
from tracing.formats.base import TraceFormatError, check_json_depth
from tracing.models import Agent, ErrorLabel, GoldLabel, JobStatus, Step, Trace
from tracing.services import parse_ahead, writer


def bundle(n: int) -> bytes:
    """n Who&When records as JSON Lines, cycling through both subsets, each its own run."""
    documents = [json.loads(p.read_text()) for p in whowhen_files()[:12]]
    lines = []
    for i in range(n):
        document = documents[i % len(documents)]
        lines.append(
            json.dumps(document | {"trace_name": f"run-{i:03d}", "question": f"{document['question']} #{i}"})
        )
    return ("\n".join(lines) + "\n").encode()


TRACE_FIELDS = ("ordinal", "name", "source_format", "external_id", "question", "ground_truth", "outcome")
TRACE_FIELDS += ("metadata", "step_count", "agent_count", "content_hash", "totals", "search_pending")
STEP_FIELDS = tuple(c for c in writer.STEP_COLUMNS if c not in ("trace_id", "agent_id")) + ("agent__name",)
AGENT_FIELDS = ("name", "system_prompt", "position", "step_count")
GOLD_FIELDS = ("agent_name", "agent__name", "step_index", "category", "reason", "source", "confidence")


def stored(trace_ids: list[int]) -> list[tuple]:
    """Every row the import wrote for these traces, without ids."""
    rows = []
    for pk in trace_ids:
        rows.append(
            (
                Trace.objects.values_list(*TRACE_FIELDS).get(pk=pk),
                list(Step.objects.filter(trace=pk).order_by("index").values_list(*STEP_FIELDS)),
                list(Agent.objects.filter(trace=pk).order_by("position").values_list(*AGENT_FIELDS)),
                list(GoldLabel.objects.filter(trace=pk).order_by("step_index").values_list(*GOLD_FIELDS)),
                ErrorLabel.objects.filter(trace=pk).count(),
            )
        )
    return rows


@pytest.mark.django_db
def test_a_file_read_in_the_parse_ahead_process_stores_the_rows_of_one_read_in_process(
    make_project, owner, monkeypatch
):
    data = bundle(30)
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_ABOVE", len(data) + 1)
    (here,) = import_now(make_project("here", {owner: "owner"}), incoming_bytes("b.jsonl", data))
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_ABOVE", 0)
    monkeypatch.setattr(parse_ahead, "CHUNK", 7)  # several chunks, the last one short
    forked = []
    real_fork = parse_ahead.os.fork
    monkeypatch.setattr(parse_ahead.os, "fork", lambda: forked.append(1) or real_fork())
    (ahead,) = import_now(make_project("ahead", {owner: "owner"}), incoming_bytes("b.jsonl", data))
    assert forked, "the file was not read in a forked process"
    assert here.status == ahead.status == JobStatus.SUCCEEDED, (here.error, ahead.error)
    assert here.report == ahead.report
    assert stored(here.trace_ids) == stored(ahead.trace_ids)
    assert len(here.trace_ids) == 30


@pytest.mark.django_db
def test_a_batch_read_ahead_that_meets_another_job_is_written_one_by_one_from_what_travelled(
    make_project, owner, monkeypatch
):
    """Traces prepared in the parse-ahead process arrive without their parsed steps (``travel_light``): when a
    batch has to be written again one trace at a time (another job wrote some of it first), each is written from
    the rows that travelled, as the batch would have written it."""
    from django.db import IntegrityError

    from tracing.services import ingest

    data = bundle(12)
    (whole,) = import_now(make_project("whole", {owner: "owner"}), incoming_bytes("b.jsonl", data))
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_ABOVE", 0)
    write_new = ingest._write_new

    def racing(job, new, ready=None):
        if len(new) > 1:
            raise IntegrityError("another job on the same bytes wrote these first")
        return write_new(job, new, ready)

    monkeypatch.setattr(ingest, "_write_new", racing)
    (alone,) = import_now(make_project("alone", {owner: "owner"}), incoming_bytes("b.jsonl", data))
    assert alone.status == JobStatus.SUCCEEDED, alone.error
    assert stored(alone.trace_ids) == stored(whole.trace_ids) and len(alone.trace_ids) == 12


@pytest.mark.django_db
def test_a_bad_line_read_ahead_fails_the_file_whole_naming_the_line(project, monkeypatch):
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_ABOVE", 0)
    monkeypatch.setattr(parse_ahead, "CHUNK", 3)
    lines = bundle(12).splitlines()
    lines[9] = b'{"history": [{"content": "cut short'
    (job,) = import_now(project, incoming_bytes("broken.jsonl", b"\n".join(lines) + b"\n"))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("broken.jsonl: line 10 is not valid JSON")
    assert not Trace.objects.filter(project=project).exists()  # the nine before it were taken back out


@pytest.mark.django_db
def test_a_reader_crash_read_ahead_fails_the_file_like_one_in_process(project, monkeypatch):
    monkeypatch.setattr(parse_ahead, "PARSE_AHEAD_ABOVE", 0)
    lines = bundle(4).splitlines()
    document = json.loads(lines[2])
    document["history"][0] = ["not", "a", "message"]  # the reader says so itself
    lines[2] = json.dumps(document).encode()
    (job,) = import_now(project, incoming_bytes("odd.jsonl", b"\n".join(lines) + b"\n"))
    assert job.status == JobStatus.FAILED
    assert job.error == "odd.jsonl: line 3: history[0] is not an object"
    assert not Trace.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_values_that_skip_preparation_are_the_values_django_prepares(project):
    """``rows_insert`` writes a plain value as is where Django's field would have prepared it: the same text in
    the COPY, for every field of the models a batch writes."""
    trace = Trace(project=project, ordinal=3, name="t", question="q", metadata={"a": 1}, totals={}, pk=7)
    objects = [
        trace,
        Agent(trace=trace, name="Orchestrator", system_prompt="", position=2, step_count=5, pk=8),
        GoldLabel(trace=trace, agent=None, agent_name="WebSurfer", step_index=4, source="imported", pk=9),
        ErrorLabel(trace=trace, step_index=1, category="x", decisive=True, pk=10),
    ]
    for obj in objects:
        for field in type(obj)._meta.concrete_fields:
            types = writer._plain_types(field)
            value = getattr(obj, field.attname)
            if types and type(value) in types:
                prepared = field.get_db_prep_save(field.pre_save(obj, True), connection)
                assert value == prepared and str(value) == str(prepared), field
    assert writer._plain_types(Trace._meta.get_field("metadata")) == frozenset()
    assert (
        writer._plain_types(Trace._meta.get_field("created_at")) == frozenset()
    )  # auto_now_add: pre_save sets it


@pytest.mark.parametrize(
    "raw",
    [
        {"name": "Orchestrator", "role": "assistant"},
        {"role": "Orchestrator (-> WebSurfer)"},
        {"name": 'é\u2028"quoted"\\ \n\t', "x\x00y": "nul\x00"},
        {},
        {"name": "a", "n": 1},
        {"nested": {"a": [1, 2.5, None, True]}},
        {"bad": float("nan")},
    ],
)
def test_a_raw_serialised_by_hand_is_what_json_dumps_writes(raw):
    try:
        expected = json.dumps(raw, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        expected = json.dumps(writer.finite(raw), ensure_ascii=False, default=str)
    assert writer._json(raw) == expected.replace("\\u0000", "\\ufffd")
    assert writer._json(raw) == expected.replace("\\u0000", "\\ufffd")  # the second time from the kept texts


def test_a_kept_raw_text_is_never_given_to_equal_values_of_another_type():
    """Kept by their items, the texts of all-string objects must not answer for 1 == 1.0 == True look-alikes."""
    assert writer._json({"n": "1"}) == '{"n": "1"}'
    assert writer._json({"n": 1}) == '{"n": 1}'
    assert writer._json({"n": True}) == '{"n": true}'
    assert writer._json({"n": ["1"]}) == '{"n": ["1"]}'  # not hashable: never kept
    assert writer._json({"n": "1"}) == '{"n": "1"}'


# The depth check as it was, one regex pass for the strings: the reference the faster one must agree with.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")


def depth_of(outside: str) -> int:
    steps = {"[": 1, "{": 1, "]": -1, "}": -1}
    return max(accumulate(steps[c] for c in _NOT_BRACKETS.sub("", outside)), default=0)


def test_the_depth_check_agrees_with_the_regex_it_replaced():
    """Exactly, on any text without a backslash outside strings; on one with such a backslash (broken JSON: the
    parser stops there), it refuses whatever nests too deep before it."""
    rng = random.Random(19)
    alphabet, weights = '"\\[]{}a ,', [8, 2, 10, 10, 10, 10, 20, 5, 5]
    texts = [json.dumps(json.loads(p.read_text())) for p in whowhen_files()[:20]]
    texts += ["".join(rng.choices(alphabet, weights, k=rng.randint(1, 400))) for _ in range(4000)]
    texts += ["[" * 300, '"' + "[" * 300, '"\\"' + "[" * 300, '"\\\\"' + "[" * 300, "\\" + '"' + "[" * 300]
    checked = 0
    for text in texts:
        limit = rng.choice([0, 1, 2, 5, 200])
        outside = _JSON_STRING.sub("", text)  # the characters outside strings, in order
        if "\\" not in outside:
            deep = depth_of(outside) > limit
        elif depth_of(outside.split("\\")[0]) > limit:
            deep = True
        else:
            continue  # only what the parser would never reach nests too deep: either answer is safe
        checked += 1
        if deep:
            with pytest.raises(TraceFormatError, match="nests deeper"):
                check_json_depth(text, limit)
        else:
            check_json_depth(text, limit)
    assert checked > 1500


@pytest.mark.django_db
def test_an_agent_built_positionally_is_the_agent_the_keywords_build(project):
    trace = Trace.objects.create(project=project, ordinal=0, name="t", metadata={}, totals={})
    fast = writer._agent(trace, "Orchestrator", "You plan.", 2, 5)
    slow = Agent(trace=trace, name="Orchestrator", system_prompt="You plan.", position=2, step_count=5)
    assert {k: v for k, v in vars(fast).items() if k != "_state"} == {
        k: v for k, v in vars(slow).items() if k != "_state"
    }
    assert fast.trace is trace and fast._state.adding


def test_agent_rows_written_as_text_fill_every_column_of_the_table():
    assert writer.AGENT_COLUMNS == tuple(f.column for f in Agent._meta.concrete_fields)


HOSTILE_TEXTS = [
    "plain",
    "a\\b\\\\c \\N \\. \\t",  # backslashes, and what COPY would read as NULL or an escape if left alone
    "tab\there\nnew line\r\ncarriage\bback\vvertical\fform",
    "\\.\n\\.",  # the old end-of-data marker on a line of its own
    "ünïcödé ✓ 漢字 \U0001f600",
    "",
]


@pytest.mark.django_db
def test_steps_copied_as_prepared_text_store_what_copying_value_by_value_stores(project, monkeypatch):
    """A prepared trace's steps go to COPY as text made in advance (``copy_tails``); a trace whose tails are missing
    goes value by value through psycopg's ``write_row``. Both store the same rows, whatever the text holds."""
    from datetime import datetime, timedelta, timezone

    from tracing.formats import ParsedAgent, ParsedStep, ParsedTrace

    def parsed(name: str) -> ParsedTrace:
        steps = []
        for i, text in enumerate(HOSTILE_TEXTS * 2):
            moment = datetime(
                2026, 1, 2, 3, 4, 5, 123456 * (i % 2), tzinfo=timezone(timedelta(hours=5, minutes=30))
            )
            steps.append(
                ParsedStep(
                    speaker=f"Agent {text[:5]}" if i % 3 else "",
                    agent=["Planner", "Coder\t2", None][i % 3],
                    kind=["message", "tool_call", "tool_result"][i % 3],
                    content=text,
                    recipient=text[:10],
                    tool_name=text[:20] if i % 3 == 1 else "",
                    tool_arguments={"path": text, "n": i, "nested": [1.5, None, True, {"k\\": "v\n"}]}
                    if i % 2
                    else None,
                    parent=i - 1 if i % 3 == 2 else None,
                    span_id=f"span-{i}-{text[:3]}",
                    started_at=moment if i % 4 else None,
                    ended_at=moment + timedelta(seconds=i) if i % 4 else None,
                    input_tokens=i * 10 if i % 2 else None,
                    output_tokens=i,
                    raw={"role": text, "name": "x"} if i % 2 else [text, i, {"a": text}],
                )
            )
        return ParsedTrace(
            name=name,
            source_format="whowhen",
            steps=steps,
            agents=[ParsedAgent("Planner", "You plan.\n\\ok"), ParsedAgent("Coder\t2", "")],
        )

    fast = writer.trace_prepare(parsed("fast"))
    assert fast.copy_tails is not None
    # As it crosses from the parse-ahead process: the steps' content travels once, as COPY text.
    light = writer.trace_prepare(parsed("light")).travel_light()
    assert light.parsed.steps == [None] * len(HOSTILE_TEXTS) * 2
    assert {tuple(row) for row in light.rows} == {("agent_id", "span_id")}
    monkeypatch.setattr(writer, "_copy_tails", lambda rows: None)
    slow = writer.trace_prepare(parsed("slow"))
    assert slow.copy_tails is None and slow.travel_light().parsed.steps[0] is not None  # nothing to drop
    # One batch: two traces as COPY text, one value by value.
    writer.traces_create_prepared(project=project, upload=None, items=[(0, fast), (1, slow), (2, light)])
    by_name = {
        name: list(Step.objects.filter(trace__name=name).order_by("index").values_list(*STEP_FIELDS))
        for name in ("fast", "slow", "light")
    }
    assert len(by_name["fast"]) == len(HOSTILE_TEXTS) * 2
    assert by_name["fast"] == by_name["slow"] == by_name["light"]
    content = STEP_FIELDS.index("content")
    assert [row[content] for row in by_name["fast"]] == HOSTILE_TEXTS * 2
    assert {row[-1] for row in by_name["fast"]} == {"Planner", "Coder\t2", None}  # agent__name


@pytest.mark.django_db
def test_large_columns_are_compressed_with_lz4_where_the_server_has_it():
    """Migrations tracing 0022 and attribution 0014: pglz was a fifth of the server's time importing many small
    traces. A server built without lz4 keeps pglz (nothing to check then)."""
    from tracing.migrations._postgresql import LZ4_SUPPORTED

    with connection.cursor() as cursor:
        cursor.execute(LZ4_SUPPORTED)
        if cursor.fetchone() is None:
            pytest.skip("this PostgreSQL has no lz4")
        cursor.execute(
            "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute "
            "WHERE (attrelid::regclass::text, attname) IN (('tracing_step', 'content'), "
            "('tracing_agent', 'system_prompt'), ('attribution_verdict', 'details'))"
        )
        assert dict(cursor.fetchall()) == {
            "tracing_step.content": "l",
            "tracing_agent.system_prompt": "l",
            "attribution_verdict.details": "l",
        }
