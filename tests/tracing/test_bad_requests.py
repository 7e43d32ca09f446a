"""Hostile or clumsy requests get a 4xx with a readable JSON body, never a 500 or Django's bare HTML page, and the
depth check that runs inside the OTLP request stays linear (issue 13)."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import import_now, incoming_bytes, sample_file
from tracing import services
from tracing.formats import TraceFormatError
from tracing.formats.base import check_json_depth
from tracing.models import JobStatus, OtlpSpan

pytestmark = pytest.mark.django_db

MB = 1024 * 1024
# The red-team input, scaled to 1 MB: an unterminated string of escaped quotes (11 s for 60 KB with the old regex).
ESCAPED_QUOTES = '{"x": "' + '\\"' * (MB // 2)


@pytest.fixture
def token(project, owner) -> str:
    return services.api_token_create(project=project, name="ci", user=owner)[1]


def _auth(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- the depth check --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [ESCAPED_QUOTES, ESCAPED_QUOTES + "\\", '"' * MB, "[]" * (MB // 2)],
    ids=["escaped-quotes", "trailing-backslash", "quotes", "brackets"],
)
def test_a_megabyte_of_hostile_json_is_depth_checked_in_linear_time(text):
    # Generous bound for a shared CI machine: the old regex took minutes on the first input; bench/json_depth.py
    # measures 25-60 ms.
    started = time.perf_counter()
    check_json_depth(text)
    assert time.perf_counter() - started < 1.0


def test_the_depth_check_counts_brackets_outside_strings_only():
    check_json_depth('{"a": "[[[[[[[[ \\" {{{{", "b": [1, [2]]}', limit=3)
    with pytest.raises(TraceFormatError, match="deeper than 3"):
        check_json_depth('{"a": "\\\\", "b": [[[1]]]}', limit=3)
    with pytest.raises(TraceFormatError, match="deeper than 200"):
        check_json_depth("[" * 201 + "]" * 201)


def test_the_hostile_json_in_an_otlp_request_is_answered_quickly_with_a_400(client, token):
    started = time.perf_counter()
    response = client.generic(
        "POST", "/v1/traces", ESCAPED_QUOTES.encode(), content_type="application/json", **_auth(token)
    )
    assert response.status_code == 400 and "message" in response.json()
    assert time.perf_counter() - started < 5.0


# --- JSON endpoints answer JSON ---------------------------------------------------------------------------------------


def test_listing_jobs_of_a_batch_that_is_not_a_uuid_is_a_400_with_a_reason(client, token):
    response = client.get("/api/jobs", {"batch": "not-a-uuid"}, **_auth(token))
    assert response.status_code == 400 and "UUID" in response.json()["detail"]


def test_too_many_files_in_one_api_upload_is_a_400_in_json(client, token, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [SimpleUploadedFile(f"f{i}.json", b"{}") for i in range(4)]
    response = client.post("/api/uploads", {"files": files}, **_auth(token))
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert "too many files" in response.json()["detail"]


def test_an_otlp_body_over_the_limit_is_a_413_in_the_requests_encoding(client, token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = client.generic(
        "POST", "/v1/traces", b"{" + b" " * 4096 + b"}", content_type="application/json", **_auth(token)
    )
    assert response.status_code == 413 and "over" in response.json()["message"]


def _otlp(*spans: dict) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": []},
                    "scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}],
                }
            ]
        }
    ).encode()


def _span(span_id: str, **attributes: str) -> dict:
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": "agent",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()],
    }


def test_a_nul_character_in_a_span_attribute_is_stored_without_it(client, token, project):
    body = _otlp(_span("eee19b7ec3c1b174", **{"input.value": "before\x00after", "agent\x00name": "x"}))
    response = client.generic("POST", "/v1/traces", body, content_type="application/json", **_auth(token))
    assert response.status_code == 200
    stored = OtlpSpan.objects.get(project=project)
    assert "\x00" not in json.dumps(stored.span) and "beforeafter" in json.dumps(stored.span)


def test_the_same_span_twice_in_one_request_is_stored_once(client, token, project):
    body = _otlp(
        _span("eee19b7ec3c1b174", **{"input.value": "first"}),
        _span("eee19b7ec3c1b174", **{"input.value": "second"}),
    )
    response = client.generic("POST", "/v1/traces", body, content_type="application/json", **_auth(token))
    assert response.status_code == 200
    (stored,) = OtlpSpan.objects.filter(project=project)
    assert "second" in json.dumps(stored.span)


# --- zips -------------------------------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_inside_a_zip_is_refused_with_a_message_that_says_so(project):
    inner = _zip({"run.json": sample_file().read_bytes()})
    jobs = import_now(project, incoming_bytes("outer.zip", _zip({"inner.zip": inner, "renamed.bin": inner})))
    assert [j.status for j in jobs] == [JobStatus.FAILED, JobStatus.FAILED]
    for job in jobs:
        assert "a zip inside a zip is not unpacked" in job.error


def test_many_small_bomb_members_are_refused_by_the_archives_ratio(project):
    members = {
        f"m{i}.json": b"0" * 900_000 for i in range(20)
    }  # each under 1 MB: the old check skipped them all
    jobs = import_now(project, incoming_bytes("bombs.zip", _zip(members)))
    assert len(jobs) == 1 and jobs[0].status == JobStatus.FAILED
    assert "a zip bomb?" in jobs[0].error


# --- the bytes of failed uploads --------------------------------------------------------------------------------------


def test_the_bytes_of_a_failed_upload_are_purged_after_the_grace_period_and_nothing_else(project):
    from tracing.models import RawUpload
    from tracing.services.uploads import failed_uploads_purge
    from tracing.tasks import purge_failed_uploads_task

    (failed,) = import_now(project, incoming_bytes("broken.json", b'{"history": [}'))
    (imported,) = import_now(project, incoming_bytes("good.json", sample_file().read_bytes()))
    assert failed.status == JobStatus.FAILED and imported.status == JobStatus.SUCCEEDED
    failed_file = RawUpload.objects.get(pk=failed.upload_id).file
    assert failed_file.storage.exists(failed_file.name)

    assert purge_failed_uploads_task() == 0  # kept a day by default, to look into
    assert failed_uploads_purge(older_than=0) == 1
    assert not RawUpload.objects.filter(pk=failed.upload_id).exists()
    assert not failed_file.storage.exists(failed_file.name)
    assert RawUpload.objects.filter(pk=imported.upload_id).exists()
    failed.refresh_from_db()
    assert failed.status == JobStatus.FAILED and "not valid JSON" in failed.error  # the job keeps its reason
