"""Property-based: malformed, truncated, deeply nested and random inputs never escape as anything but a clear
TraceFormatError from any parser, and never as a 500 from the upload view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DEMO_DATA, ROOT, SHARED
from tracing import services
from tracing.formats import Source, TraceFormatError, all_formats, detect_format
from tracing.models import IngestJob, JobStatus

FIXTURES = ROOT / "tests" / "fixtures"


def _samples() -> list[Path]:
    files = (
        sorted(
            p
            for p in SHARED.rglob("*")
            if p.is_file() and p.suffix in (".json", ".jsonl", ".log", ".txt") and p.stat().st_size < 400_000
        )
        if SHARED.exists()
        else []
    )
    files += sorted(p for p in FIXTURES.rglob("*") if p.is_file() and p.stat().st_size < 400_000)
    return (files or sorted(DEMO_DATA.rglob("*.json")))[:: max(1, len(files) // 40)]


SAMPLES = _samples()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "history",
                    "content",
                    "role",
                    "name",
                    "spans",
                    "trace_id",
                    "span_id",
                    "child_spans",
                    "resourceSpans",
                    "scopeSpans",
                    "observations",
                    "trace",
                    "post",
                    "patch",
                    "messages",
                    "traj",
                    "reward",
                    "failures",
                    "trajectory_id",
                    "errors",
                    "location",
                    "mistake_step",
                    "mistake_agent",
                    "parent_id",
                    "context",
                    "attributes",
                    "x",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)


def _parse_everything(name: str, data: bytes) -> None:
    source = Source.from_bytes(name, data)
    try:
        fmt = detect_format(source)
        for _ in fmt.parse(source):
            pass
    except TraceFormatError:
        pass
    for fmt in all_formats():  # every parser, not only the detected one, must fail cleanly on foreign input
        try:
            fmt.detect(Source.from_bytes(name, data))
            for _ in fmt.parse(Source.from_bytes(name, data)):
                pass
        except TraceFormatError:
            pass


@settings(max_examples=80, deadline=None)
@given(value=json_values)
def test_random_json_never_escapes_as_anything_but_a_format_error(value):
    _parse_everything("random.json", json.dumps(value).encode())


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2000))
def test_random_bytes_never_escape_as_anything_but_a_format_error(data):
    _parse_everything("random.bin", data)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
@settings(max_examples=5, deadline=None)
@given(cut=st.floats(min_value=0.05, max_value=0.98))
def test_truncated_real_files_fail_cleanly(path, cut):
    data = path.read_bytes()
    _parse_everything(path.name, data[: int(len(data) * cut)])


@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_absurd_nesting_is_a_format_error_not_a_crash(opener, closer):
    _parse_everything("deep.json", opener * 100_000 + closer * 100_000)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(st.binary(max_size=800), json_values.map(lambda v: json.dumps(v).encode())),
    name=st.sampled_from(["a.json", "b.jsonl", "c.zip", "d.log", "e"]),
)
def test_the_upload_view_never_answers_500(owner_client, project, data, name):
    response = owner_client.post(
        reverse("tracing:upload", args=[project.slug]),
        {"files": [SimpleUploadedFile(name, data)]},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    for job in IngestJob.objects.filter(project=project, status=JobStatus.QUEUED):
        done = services.ingest_job_run(job_id=job.pk)
        assert done.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.DUPLICATE)
        assert "internal error" not in done.error, done.error
