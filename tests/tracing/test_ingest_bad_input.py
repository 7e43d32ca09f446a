from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.conftest import import_now, incoming_bytes, incoming_path, sample_file
from tracing import services
from tracing.models import GoldLabel, IngestJob, JobStatus, RawUpload, Step, Trace

pytestmark = pytest.mark.django_db

GOOD = sample_file("Hand-Crafted")


def _assert_nothing_imported() -> None:
    assert Trace.objects.count() == 0
    assert Step.objects.count() == 0
    assert GoldLabel.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.json", b"", "the file is empty"),
        ("blank.json", b"   \n\t ", "the file is empty"),
        ("binary.json", bytes(range(256)) * 4, "binary data, not a JSON or text trace"),
        ("notes.txt", b"hello, this is not a trace", "not JSON and not a recognised trace format"),
        (
            "shape.json",
            b'{"foo": 1, "bar": [1, 2]}',
            "JSON of an unknown shape (an object with keys foo, bar)",
        ),
        ("list.json", b"[1, 2, 3]", "JSON of an unknown shape (a list of 3 item(s))"),
        ("object.json", b"{}", "JSON of an unknown shape (an empty object)"),
        ("broken.json", b'{"history": [}', "not valid JSON"),
        ("nohistory.json", b'{"question": "q", "history": []}', "the 'history' list is empty"),
        # The format it was meant to be, and what that reader says, instead of every format's name.
        (
            "historyless.json",
            b'{"history": 5}',
            "it looks like Who&When JSON, whose reader says: a Who&When file must be an object with a 'history' list",
        ),
        ("spans.json", b'{"resourceSpans": 5}', "it looks like OpenTelemetry OTLP/JSON, whose reader says: "),
        (
            "other.json",
            b'{"foo": 1}',
            "formats Culprit reads fits (the upload page lists them)",
        ),
    ],
)
def test_a_bad_file_fails_with_its_name_and_the_reason(project, name, data, reason):
    (job,) = import_now(project, incoming_bytes(name, data))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith(f"{name}: ")
    assert reason in job.error
    assert "Traceback" not in job.error
    _assert_nothing_imported()


def test_a_truncated_file_is_reported_as_truncated(project):
    data = GOOD.read_bytes()
    (job,) = import_now(project, incoming_bytes("cut.json", data[: len(data) // 2]))
    assert job.status == JobStatus.FAILED
    assert "truncated" in job.error and job.error.startswith("cut.json: ")
    _assert_nothing_imported()


def test_an_out_of_range_gold_step_fails_the_file_and_writes_nothing(project):
    document = json.loads(GOOD.read_text())
    document["mistake_step"] = str(len(document["history"]) + 5)
    (job,) = import_now(project, incoming_bytes("range.json", json.dumps(document).encode()))
    assert job.status == JobStatus.FAILED
    assert "outside the history" in job.error
    _assert_nothing_imported()


def test_a_file_over_the_size_limit_fails_without_being_stored(project, settings):
    settings.CULPRIT_MAX_UPLOAD_BYTES = 1000
    (job,) = import_now(project, incoming_path(GOOD, "big.json"))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("big.json: the file is ") and "over the" in job.error and "limit" in job.error
    assert RawUpload.objects.count() == 0
    _assert_nothing_imported()


def test_other_files_in_the_same_upload_still_import(project):
    jobs = import_now(
        project,
        incoming_bytes("empty.json", b""),
        incoming_path(GOOD, "good.json"),
        incoming_bytes("junk.json", b"{{{"),
    )
    assert [j.status for j in jobs] == [JobStatus.FAILED, JobStatus.SUCCEEDED, JobStatus.FAILED]
    assert Trace.objects.count() == 1
    assert len({j.batch for j in jobs}) == 1


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_becomes_one_job_per_member_and_a_bad_member_fails_alone(project):
    data = _zip(
        {
            "runs/a.json": GOOD.read_bytes(),
            "runs/bad.json": b"nope",
            "__MACOSX/._a.json": b"junk",
            "runs/.hidden": b"x",
        }
    )
    jobs = import_now(project, incoming_bytes("batch.zip", data))
    by_name = {j.filename: j for j in jobs}
    assert set(by_name) == {"batch.zip/runs/a.json", "batch.zip/runs/bad.json"}
    assert by_name["batch.zip/runs/a.json"].status == JobStatus.SUCCEEDED
    assert by_name["batch.zip/runs/bad.json"].status == JobStatus.FAILED
    assert by_name["batch.zip/runs/bad.json"].error.startswith("batch.zip/runs/bad.json: ")
    assert Trace.objects.get().name == "runs/a"


def test_a_zip_member_over_the_limit_is_refused_before_it_is_inflated(project, settings):
    settings.CULPRIT_MAX_UPLOAD_BYTES = 50_000
    data = _zip({"bomb.json": b"0" * 10_000_000})
    assert len(data) < 50_000
    (job,) = import_now(project, incoming_bytes("bomb.zip", data))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("bomb.zip/bomb.json: the file is 9.5 MB, over the")


def test_a_corrupt_zip_fails_with_a_clear_message(project):
    data = _zip({"a.json": GOOD.read_bytes()})[:200]
    (job,) = import_now(project, incoming_bytes("broken.zip", data))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("broken.zip: not a valid zip archive")


def test_the_same_bytes_again_report_the_existing_trace(project):
    (first,) = import_now(project, incoming_path(GOOD, "one.json"))
    (second,) = import_now(project, incoming_path(GOOD, "again.json"))
    assert second.status == JobStatus.DUPLICATE
    assert second.trace_ids == first.trace_ids
    assert Trace.objects.count() == 1


def test_the_same_bytes_in_another_project_import_again(project, make_project):
    other = make_project("Beta")
    import_now(project, incoming_path(GOOD))
    (job,) = import_now(other, incoming_path(GOOD))
    assert job.status == JobStatus.SUCCEEDED
    assert Trace.objects.count() == 2


def test_a_re_delivered_task_does_not_import_twice(project):
    (job,) = services.ingest_jobs_create(
        project=project, files=[incoming_path(GOOD)], user=None, enqueue=False
    )
    services.ingest_job_run(job_id=job.pk)
    again = services.ingest_job_run(job_id=job.pk)
    assert again.status == JobStatus.SUCCEEDED
    assert Trace.objects.count() == 1


def test_a_job_whose_worker_died_mid_import_is_finished_by_the_retry(project):
    (job,) = services.ingest_jobs_create(
        project=project, files=[incoming_path(GOOD)], user=None, enqueue=False
    )
    # What a kill -9 after the claim leaves behind: the job claimed, its transaction rolled back.
    IngestJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, attempts=1)
    done = services.ingest_job_run(job_id=job.pk)
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2
    assert Trace.objects.count() == 1


def test_a_job_that_keeps_dying_fails_with_a_readable_reason(project):
    (job,) = services.ingest_jobs_create(
        project=project, files=[incoming_path(GOOD, "x.json")], user=None, enqueue=False
    )
    IngestJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, attempts=services.MAX_INGEST_ATTEMPTS
    )
    done = services.ingest_job_run(job_id=job.pk)
    assert done.status == JobStatus.FAILED
    assert done.error == "x.json: gave up after 3 interrupted attempts"
    _assert_nothing_imported()


def test_an_explicit_unknown_format_is_a_clear_error(project):
    (job,) = services.ingest_jobs_create(
        project=project,
        files=[incoming_path(GOOD, "x.json")],
        user=None,
        enqueue=False,
        requested_format="nosuch",
    )
    done = services.ingest_job_run(job_id=job.pk)
    assert done.status == JobStatus.FAILED
    assert "unknown format 'nosuch'" in done.error


def test_a_zip_bomb_is_refused_by_its_compression_ratio(project):
    data = _zip({"bomb.json": b"0" * 20_000_000})
    (job,) = import_now(project, incoming_bytes("bomb.zip", data))
    assert job.status == JobStatus.FAILED
    assert "over the 200:1 limit (a zip bomb?)" in job.error
    _assert_nothing_imported()


def test_a_zip_over_the_total_unpacked_size_is_refused_whole(project, settings):
    settings.CULPRIT_MAX_ZIP_TOTAL_BYTES = len(GOOD.read_bytes()) * 2
    data = _zip({f"r{i}.json": GOOD.read_bytes() for i in range(3)})
    (job,) = import_now(project, incoming_bytes("many.zip", data))
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("many.zip: the archive unpacks to ")
    _assert_nothing_imported()


def test_too_many_zip_members_are_refused(project, settings):
    settings.CULPRIT_MAX_ZIP_MEMBERS = 2
    (job,) = import_now(project, incoming_bytes("lots.zip", _zip({f"{i}.json": b"{}" for i in range(3)})))
    assert job.error == "lots.zip: the archive holds 3 files, over the 2 limit"


def test_json_nested_too_deep_is_refused_before_parsing(project):
    (job,) = import_now(
        project, incoming_bytes("deep.json", b'{"history": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    )
    assert job.status == JobStatus.FAILED
    assert "nests deeper than 200 levels" in job.error


def test_nul_characters_and_nan_values_are_stored_not_fatal(project):
    document = json.loads(GOOD.read_text())
    document["history"][0]["content"] = "before\u0000after"
    document["history"][0]["score"] = float("nan")
    data = (
        json.dumps(document).replace('"before', '"be\\u0000fore').encode()
    )  # NaN is written bare by json.dumps
    (job,) = import_now(project, incoming_bytes("odd.json", data))
    assert job.status == JobStatus.SUCCEEDED, job.error
    step = Step.objects.get(trace_id=job.trace_ids[0], index=0)
    assert step.content == "be\ufffdfore\ufffdafter"
    assert step.raw["score"] == "NaN"  # kept as the text the file had
