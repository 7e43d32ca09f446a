"""Hostile Who&When files read by the streaming reader (files over ``STREAM_ABOVE``) and, where the two paths must
agree, by the whole-file reader: the same file fails with the same message naming the file and the reason, or
imports the same, and no label ever lands on a step other than the one the file names."""

from __future__ import annotations

import json

import pytest

from tests.conftest import import_now, incoming_bytes
from tracing.formats import whowhen
from tracing.models import GoldLabel, JobStatus, Step, Trace

pytestmark = pytest.mark.django_db

PATHS = ["streamed", "whole"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "streamed":
        monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    return request.param


def _document(history=None, **keys) -> dict:
    steps = [{"role": f"Agent{i}", "content": f"step {i}"} for i in range(11)]
    document = {
        "question": "q",
        "history": steps if history is None else history,
        "mistake_agent": "Agent7",
        "mistake_step": "7",
        "mistake_reason": "r",
    }
    document.update(keys)
    return document


def _import(project, data: bytes, name: str = "run.json"):
    (job,) = import_now(project, incoming_bytes(name, data))
    return job


def _nothing_written():
    return not Trace.objects.exists() and not Step.objects.exists() and not GoldLabel.objects.exists()


# --- defect 2: history items that are not objects ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "index", "what"),
    [
        (["hello", None, 42], 0, "a string"),
        ([{"role": "Agent0", "content": "c"}, None], 1, "null"),
        ([{"role": "Agent0", "content": "c"}, {"role": "Agent1", "content": "c"}, 42], 2, "a number"),
        ([{"role": "Agent0", "content": "c"}, [1, 2]], 1, "a list"),
        ([{"role": "Agent0", "content": "c"}, True], 1, "a boolean"),
    ],
)
def test_a_history_item_that_is_not_an_object_fails_the_file_naming_it(project, path, items, index, what):
    steps = [{"role": f"Agent{i}", "content": f"step {i}"} for i in range(len(items), 11)]
    job = _import(project, json.dumps(_document(items + steps)).encode())
    assert job.status == JobStatus.FAILED
    assert job.error == (
        f"run.json: history[{index}] is {what}, not a {{role, content}} object: every history item must be one step"
    )
    assert _nothing_written()


def test_an_odd_item_late_in_the_history_fails_the_file_and_no_label_is_written(project, path):
    history = _document()["history"]
    history[9] = "a stray line"
    job = _import(project, json.dumps(_document(history)).encode())
    assert job.status == JobStatus.FAILED
    assert "history[9] is a string" in job.error
    assert _nothing_written()


def test_a_well_formed_file_puts_the_label_on_the_step_it_names(project, path):
    job = _import(project, json.dumps(_document()).encode())
    assert job.status == JobStatus.SUCCEEDED, job.error
    trace = Trace.objects.get(pk=job.trace_ids[0])
    assert trace.step_count == 11
    (label,) = GoldLabel.objects.filter(trace=trace)
    step = Step.objects.get(trace=trace, index=label.step_index)
    assert (label.step_index, step.speaker, step.content) == (7, "Agent7", "step 7")


# --- defect 8: the streamed path's messages agree with the whole-file path's ---------------------------------------


def test_nan_and_infinities_are_kept_as_words_not_called_truncation(project, path):
    history = _document()["history"]
    history[3]["score"] = "@NAN@"
    history[4]["score"] = "@NEG@"
    history[5]["score"] = "@BIG@"
    history[6]["content"] = "NaN, Infinity and -Infinity in a string stay as they are"
    data = (
        json.dumps(_document(history))
        .replace('"@NAN@"', "NaN")
        .replace('"@NEG@"', "-Infinity")
        .replace('"@BIG@"', "1e999")
        .encode()
    )
    job = _import(project, data)
    assert job.status == JobStatus.SUCCEEDED, job.error
    trace = Trace.objects.get(pk=job.trace_ids[0])
    steps = {s.index: s for s in Step.objects.filter(trace=trace)}
    assert [steps[i].raw["score"] for i in (3, 4, 5)] == ["NaN", "-Infinity", "inf"]
    assert steps[6].content == "NaN, Infinity and -Infinity in a string stay as they are"
    assert GoldLabel.objects.get(trace=trace).step_index == 7


def test_deep_nesting_fails_with_the_loaders_depth_message(project, path):
    data = json.dumps(_document()).replace('"step 3"', "[" * 5000 + "]" * 5000).encode()
    job = _import(project, data)
    assert job.status == JobStatus.FAILED
    assert job.error == "run.json: the JSON nests deeper than 200 levels"
    assert _nothing_written()


@pytest.mark.parametrize(
    ("escaped", "stored"),
    [
        ("a\\ud800b", "a\ufffdb"),  # a lone high half
        ("a\\udc00b", "a\ufffdb"),  # a lone low half
        ("a\\ud800\\ud800b", "a\ufffd\ufffdb"),
        ("a\\ud83d\\ude00b", "a\U0001f600b"),  # a pair is one character
        ("a\\\\ud800b", "a\\ud800b"),  # an escaped backslash, then text
    ],
)
def test_lone_surrogate_escapes_become_the_replacement_character(project, path, escaped, stored):
    data = json.dumps(_document()).replace('"step 2"', f'"{escaped}"').encode()
    job = _import(project, data)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert Step.objects.get(trace_id=job.trace_ids[0], index=2).content == stored


@pytest.mark.parametrize("given", [[1], {"step": 1}, "seven"])
def test_a_bad_mistake_step_is_reported_with_what_was_given(project, path, given):
    job = _import(project, json.dumps(_document(mistake_step=given)).encode())
    assert job.status == JobStatus.FAILED
    assert job.error == f"run.json: mistake_step must be a step number, got {given!r}"
    assert _nothing_written()


def test_a_syntax_error_is_not_called_truncation(project, monkeypatch):
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    data = json.dumps(_document()).replace('"step 5"', '"step 5" oops').encode()
    job = _import(project, data)
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("run.json: not valid JSON (")
    assert "truncated" not in job.error
    assert _nothing_written()


def test_a_truncated_streamed_file_still_says_so(project, monkeypatch):
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    data = json.dumps(_document()).encode()
    job = _import(project, data[: len(data) // 2])
    assert job.status == JobStatus.FAILED
    assert job.error == "run.json: the JSON ends unexpectedly: the file looks truncated"


def test_two_history_lists_fail_a_streamed_file_rather_than_shift_the_label(project, monkeypatch):
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    text = json.dumps(_document())
    data = text.replace(
        '"question": "q",', '"question": "q", "history": [{"role": "X", "content": "x"}],'
    ).encode()
    job = _import(project, data)
    assert job.status == JobStatus.FAILED
    assert job.error == "run.json: the file has more than one 'history' key"
    assert _nothing_written()


def test_pieces_of_any_size_read_the_same(project, monkeypatch):
    """Escapes, constants and quotes cut by the end of a piece: the streamed reader reads pieces of a few bytes as
    it reads the whole file."""
    from tracing.formats import whowhen_stream

    history = _document()["history"]
    history[1]["content"] = 'q"uo\\te \\" NaN \\\\"'
    history[2]["content"] = "\ud83d\ude00 é \\ud800"
    history[3]["score"] = "@NAN@"
    data = json.dumps(_document(history)).replace('"@NAN@"', "-Infinity").encode()
    (whole,) = import_now(project, incoming_bytes("whole.json", data))
    monkeypatch.setattr(whowhen, "STREAM_ABOVE", 100)
    for size in (1, 3, 7):
        monkeypatch.setattr(whowhen_stream, "CHUNK_BYTES", size)
        streamed = import_now(project, incoming_bytes(f"streamed{size}.json", data))[0]
        assert streamed.status == JobStatus.DUPLICATE, (
            streamed.error
        )  # the same content as the whole-file import
    assert whole.status == JobStatus.SUCCEEDED
