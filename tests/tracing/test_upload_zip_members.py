"""A zip member that cannot be read (encrypted, an unsupported compression method, corrupt data) fails alone with a
message naming it and the reason; every other member and every other file of the batch imports as usual."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import import_now, incoming_bytes, incoming_path, sample_file
from tracing import services
from tracing.models import IngestJob, JobStatus, RawUpload, Trace

pytestmark = pytest.mark.django_db

GOOD = sample_file("Hand-Crafted")

ENCRYPTED = "encrypted zip member: Culprit cannot read password-protected archives"
DEFLATE64 = (
    "zip member compressed with an unsupported method (Deflate64); re-zip it with the standard Deflate"
)
BAD_CRC = "zip member is corrupt (bad CRC)"


def _good_json(tag: str) -> bytes:
    """The sample trace with a twist, so each good member is new bytes (not a duplicate of another one)."""
    document = json.loads(GOOD.read_bytes())
    document["question"] = f"{document.get('question', '')} [{tag}]"
    return json.dumps(document).encode()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _patch_headers(data: bytes, member: str, *, flag_or: int = 0, method: int | None = None) -> bytes:
    """Set flag bits and/or the compression method of ``member`` in both its local and its central header."""
    out = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    local = info.header_offset
    assert out[local : local + 4] == b"PK\x03\x04"
    central = struct.unpack_from("<I", out, out.rindex(b"PK\x05\x06") + 16)[0]  # the directory's start
    while True:
        name_len = struct.unpack_from("<H", out, central + 28)[0]
        if out[central + 46 : central + 46 + name_len] == member.encode():
            break
        central = out.index(b"PK\x01\x02", central + 4)
    for flags_at, method_at in ((local + 6, local + 8), (central + 8, central + 10)):
        struct.pack_into("<H", out, flags_at, struct.unpack_from("<H", out, flags_at)[0] | flag_or)
        if method is not None:
            struct.pack_into("<H", out, method_at, method)
    return bytes(out)


def _corrupt_data(data: bytes, member: str) -> bytes:
    """Flip bytes in the middle of ``member``'s compressed data (its headers stay valid)."""
    out = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    name_len, extra_len = struct.unpack_from("<HH", out, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    middle = start + info.compress_size // 2
    for i in range(middle, middle + 8):
        out[i] ^= 0xFF
    return bytes(out)


def _batch_zip() -> tuple[bytes, dict[str, str]]:
    """One zip holding good members and one bad member of every kind; the expected reason per bad member."""
    data = _zip(
        {
            "good.json": _good_json("in the zip"),
            "locked.json": _good_json("locked"),
            "deflate64.json": _good_json("deflate64"),
            "broken.json": _good_json("broken"),
            "after.json": _good_json("after the bad ones"),
        }
    )
    data = _patch_headers(data, "locked.json", flag_or=0x1)
    data = _patch_headers(data, "deflate64.json", method=9)
    data = _corrupt_data(data, "broken.json")
    return data, {
        "locked.json": ENCRYPTED,
        "deflate64.json": DEFLATE64,
        "broken.json": "zip member is corrupt (",
    }


def _crc_zip() -> bytes:
    data = _zip({"crc.json": _good_json("crc"), "fine.json": _good_json("fine")}, method=zipfile.ZIP_STORED)
    return _corrupt_data(data, "crc.json")


def _stored_files() -> set[Path]:
    root = Path(django_settings.MEDIA_ROOT) / "uploads"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda data: _patch_headers(data, "bad.json", flag_or=0x1), ENCRYPTED),
        (lambda data: _patch_headers(data, "bad.json", flag_or=0x40), ENCRYPTED),  # strong encryption
        (lambda data: _patch_headers(data, "bad.json", method=9), DEFLATE64),
        (
            lambda data: _patch_headers(data, "bad.json", method=98),
            "zip member compressed with an unsupported method (PPMd); re-zip it with the standard Deflate",
        ),
        (lambda data: _corrupt_data(data, "bad.json"), "zip member is corrupt ("),
    ],
    ids=["encrypted", "strong-encryption", "deflate64", "ppmd", "corrupt-deflate"],
)
def test_an_unreadable_member_fails_alone_and_the_rest_of_the_batch_imports(project, mutate, reason):
    data = mutate(
        _zip({"first.json": _good_json("first"), "bad.json": _good_json("bad"), "z.json": _good_json("z")})
    )
    jobs = import_now(
        project,
        incoming_path(GOOD, "before.json"),
        incoming_bytes("batch.zip", data),
        incoming_bytes("after.json", _good_json("after")),
    )
    by_name = {j.filename: j for j in jobs}
    assert list(by_name) == [
        "before.json",
        "batch.zip/first.json",
        "batch.zip/bad.json",
        "batch.zip/z.json",
        "after.json",
    ]
    bad = by_name.pop("batch.zip/bad.json")
    assert bad.status == JobStatus.FAILED
    assert bad.error.startswith(f"batch.zip/bad.json: {reason}"), bad.error
    assert bad.upload_id is None
    for name, job in by_name.items():
        assert job.status == JobStatus.SUCCEEDED, (name, job.error)
    assert Trace.objects.count() == 4
    assert RawUpload.objects.count() == 4  # nothing stored for the bad member


def test_a_stored_member_with_a_bad_crc_fails_alone_and_leaves_nothing_stored(project, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    jobs = import_now(project, incoming_bytes("crc.zip", _crc_zip()))
    by_name = {j.filename: j for j in jobs}
    assert by_name["crc.zip/crc.json"].status == JobStatus.FAILED
    assert by_name["crc.zip/crc.json"].error == f"crc.zip/crc.json: {BAD_CRC}"
    assert by_name["crc.zip/fine.json"].status == JobStatus.SUCCEEDED, by_name["crc.zip/fine.json"].error
    (upload,) = RawUpload.objects.all()
    assert upload.filename == "crc.zip/fine.json"
    assert {p.name for p in _stored_files()} == {upload.sha256}


def test_the_good_jobs_of_a_batch_with_a_bad_member_are_queued(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    """Through the queue, as the web upload does: the good jobs reach the broker, the bad one does not."""
    sent: list[int] = []
    monkeypatch.setattr("config.broker.send", lambda task, job_id: sent.append(job_id) or True)
    data = _patch_headers(
        _zip({"ok.json": _good_json("ok"), "bad.json": _good_json("bad")}), "bad.json", method=9
    )
    with django_capture_on_commit_callbacks(execute=True):
        jobs = services.ingest_jobs_create(
            project=project,
            files=[incoming_bytes("b.zip", data), incoming_bytes("c.json", _good_json("c"))],
            user=None,
        )
    statuses = {j.filename: j.status for j in jobs}
    assert statuses == {
        "b.zip/ok.json": JobStatus.QUEUED,
        "b.zip/bad.json": JobStatus.FAILED,
        "c.json": JobStatus.QUEUED,
    }
    assert sorted(sent) == sorted(j.pk for j in jobs if j.status == JobStatus.QUEUED)


def test_the_upload_view_answers_with_the_failed_member_and_imports_the_rest(owner_client, project):
    data, expected = _batch_zip()
    crc = _crc_zip()
    response = owner_client.post(
        reverse("tracing:upload", args=[project.slug]),
        {
            "files": [
                SimpleUploadedFile("runs.zip", data),
                SimpleUploadedFile("crc.zip", crc),
                SimpleUploadedFile("plain.json", _good_json("plain")),
            ]
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    page = response.content.decode()
    jobs = {j.filename: j for j in IngestJob.objects.filter(project=project)}
    assert set(jobs) == {
        "runs.zip/good.json",
        "runs.zip/locked.json",
        "runs.zip/deflate64.json",
        "runs.zip/broken.json",
        "runs.zip/after.json",
        "crc.zip/crc.json",
        "crc.zip/fine.json",
        "plain.json",
    }
    expected = {f"runs.zip/{name}": reason for name, reason in expected.items()} | {
        "crc.zip/crc.json": BAD_CRC
    }
    for name, reason in expected.items():
        assert jobs[name].status == JobStatus.FAILED
        assert jobs[name].error.startswith(f"{name}: {reason}"), jobs[name].error
        assert name in page and reason.split(":")[0].split("(")[0].strip() in page
    for name, job in jobs.items():
        if name in expected:
            continue
        assert job.status == JobStatus.QUEUED, (name, job.error)
        done = services.ingest_job_run(job_id=job.pk)
        assert done.status == JobStatus.SUCCEEDED, (name, done.error)
    assert Trace.objects.filter(project=project).count() == 4


def test_an_empty_zip_says_it_holds_no_files(project):
    empty = _zip({})
    assert empty.startswith(b"PK\x05\x06")
    (job,) = import_now(project, incoming_bytes("empty.zip", empty))
    assert job.status == JobStatus.FAILED
    assert job.error == "empty.zip: the archive holds no files"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_json_is_told_to_be_saved_as_utf8(project, encoding):
    data = GOOD.read_text(encoding="utf-8").encode(encoding)
    (job,) = import_now(project, incoming_bytes("wide.json", data))
    assert job.status == JobStatus.FAILED
    assert job.error == "wide.json: UTF-16 text: save it as UTF-8"


def test_a_read_that_fails_half_way_through_storing_leaves_no_file_and_no_row(project, settings, tmp_path):
    """The bytes read fine once (hashed) and fail the second time, half-way through being written to storage."""
    settings.MEDIA_ROOT = tmp_path
    data = b"x" * 300_000
    opens = iter(range(10))

    class FailsHalfWay(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 100_000:
                raise OSError("the disk went away")
            return super().read(size)

    incoming = services.IncomingFile(
        name="flaky.json",
        size=len(data),
        open=lambda: io.BytesIO(data) if next(opens) == 0 else FailsHalfWay(data),
    )
    with pytest.raises(OSError, match="the disk went away"):
        services.raw_upload_store(project=project, incoming=incoming, user=None)
    assert not RawUpload.objects.exists()
    assert not _stored_files()
