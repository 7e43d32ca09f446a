from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import import_now, incoming_bytes, sample_file
from tracing import services
from tracing.formats import ParsedGold, ParsedStep, ParsedTrace
from tracing.models import IngestJob, JobStatus, Role, Trace

pytestmark = pytest.mark.django_db

GOOD = sample_file("Hand-Crafted")


def _big_trace(project, steps: int = 10_000) -> Trace:
    parsed = ParsedTrace(
        name="big",
        source_format="whowhen",
        question="Long run",
        steps=[
            ParsedStep(
                speaker=f"Agent{i % 3}", agent=f"Agent{i % 3}", kind="message", content=f"step body {i}"
            )
            for i in range(steps)
        ],
        gold=[ParsedGold(agent="Agent1", step=min(7654, steps - 1), reason="made it up")],
    )
    return services.trace_create_from_parsed(project=project, upload=None, ordinal=0, parsed=parsed)


def test_pages_need_a_login(client, imported_trace):
    for url in (
        reverse("tracing:trace_detail", args=[imported_trace.pk]),
        reverse("tracing:trace_list", args=[imported_trace.project.slug]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_it_answers_404_for_another_projects_trace(client, make_user, make_project, imported_trace):
    stranger = make_user("stranger")
    make_project("Beta", {stranger: Role.OWNER})
    client.force_login(stranger)
    assert client.get(reverse("tracing:trace_detail", args=[imported_trace.pk])).status_code == 404
    assert client.get(reverse("tracing:trace_list", args=[imported_trace.project.slug])).status_code == 404
    assert client.get(reverse("tracing:upload", args=[imported_trace.project.slug])).status_code == 404


def test_a_viewer_can_read_but_not_upload(client, make_user, project, imported_trace):
    viewer = make_user("viewer")
    services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("tracing:trace_detail", args=[imported_trace.pk])).status_code == 200
    upload = SimpleUploadedFile("a.json", GOOD.read_bytes())
    response = client.post(reverse("tracing:upload", args=[project.slug]), {"files": [upload]})
    assert response.status_code == 403
    assert IngestJob.objects.count() == 1  # only the fixture's
    # The refusal is a page of the site that says why, not a bare "403 Forbidden".
    body = response.content.decode()
    assert "Not allowed" in body and "Viewers cannot upload traces" in body and 'class="topbar"' in body


def test_a_missing_page_is_a_page_of_the_site_with_the_path_escaped(owner_client):
    response = owner_client.get("/no/such/<b>page</b>/")
    body = response.content.decode()
    assert response.status_code == 404
    assert "Page not found" in body and "<b>page</b>" not in body and "Your projects" in body


def test_the_server_error_page_renders_without_a_request():
    from django.template.loader import get_template

    body = get_template("500.html").render({})
    assert "Something went wrong on our side" in body and "/static/" in body


def test_the_browser_s_favicon_request_is_redirected_to_the_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith(".svg")


def test_an_annotator_can_upload(client, make_user, project):
    annotator = make_user("annotator")
    services.membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    client.force_login(annotator)
    response = client.post(
        reverse("tracing:upload", args=[project.slug]),
        {"files": [SimpleUploadedFile("a.json", GOOD.read_bytes())]},
    )
    assert response.status_code == 302


def test_the_project_list_shows_only_my_projects(owner_client, make_project, project):
    make_project("Secret")
    body = owner_client.get(reverse("tracing:project_list")).content.decode()
    assert "Alpha" in body and "Secret" not in body


def test_home_goes_straight_to_my_only_project(owner_client, project):
    response = owner_client.get("/")
    assert response["Location"] == reverse("tracing:trace_list", args=[project.slug])


def test_creating_a_project_makes_me_its_owner(owner_client, owner):
    response = owner_client.post(reverse("tracing:project_list"), {"name": "New one", "description": ""})
    assert response.status_code == 302
    assert owner.memberships.get(project__name="New one").role == Role.OWNER


def test_the_trace_list_searches_filters_and_counts(owner_client, project):
    paths = sorted(GOOD.parent.parent.rglob("*.json"))
    import_now(project, *[incoming_bytes(f"{p.parent.name}/{p.name}", p.read_bytes()) for p in paths])
    _big_trace(project, steps=3)
    Trace.objects.filter(name="big").update(source_format="other")
    url = reverse("tracing:trace_list", args=[project.slug])

    body = owner_client.get(url).content.decode()
    assert f"<strong>{len(paths) + 1}</strong> traces" in body
    assert f"<strong>{len(paths) + 1}</strong> with a gold label" in body

    trace = Trace.objects.filter(source_format="whowhen").first()
    words = trace.question.split()[:4]
    found = owner_client.get(url, {"q": " ".join(words)}).content.decode()
    assert trace.name in found
    assert "1 matching trace" in found or "matching traces" in found

    only_other = owner_client.get(url, {"format": "whowhen"}).content.decode()
    assert f"{len(paths)} matching traces" in only_other
    assert owner_client.get(url, {"gold": "no"}).content.decode().count("No trace matches") == 1


def test_the_trace_list_answers_htmx_with_only_the_results(owner_client, imported_trace):
    url = reverse("tracing:trace_list", args=[imported_trace.project.slug])
    response = owner_client.get(url, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="results">')
    assert "HX-Request" in response["Vary"]


def test_the_viewer_highlights_the_gold_step(owner_client, imported_trace):
    gold = imported_trace.gold_labels.get()
    response = owner_client.get(
        reverse("tracing:trace_detail", args=[imported_trace.pk]), {"step": gold.step_index}
    )
    body = response.content.decode()
    assert re.search(rf'id="step-{gold.step_index}" class="step [^"]*\bgold\b', body)
    assert body.count("gold: decisive error") == 1
    assert gold.agent_name in body and gold.reason in body


def test_a_ten_thousand_step_trace_renders_one_window_of_steps(owner_client, project, settings):
    trace = _big_trace(project)
    url = reverse("tracing:trace_detail", args=[trace.pk])
    body = owner_client.get(url).content.decode()
    assert body.count('class="step kind-') == settings.CULPRIT_STEPS_PER_PAGE
    assert "of 10000" in body

    jumped = owner_client.get(url, {"step": 7654}).content.decode()
    assert 'id="step-7654" class="step kind-message gold target"' in jumped
    assert 'id="step-7649"' not in jumped and 'id="step-7650"' in jumped


def test_trace_content_is_escaped_and_htmx_disabled_inside_steps(owner_client, project):
    hostile = '<script>alert(1)</script><img src=x onerror=alert(2)> <a hx-get="/admin/">x</a>'
    payload = (
        '{"question": "<b>q</b>", "ground_truth": "1", "mistake_agent": "A", "mistake_step": "0",'
        ' "mistake_reason": "<i>r</i>", "history": [{"role": "A", "content": %s}]}'
    )
    import json

    (job,) = import_now(project, incoming_bytes("x.json", (payload % json.dumps(hostile)).encode()))
    body = owner_client.get(reverse("tracing:trace_detail", args=[job.trace_ids[0]])).content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<b>q</b>" not in body and "<i>r</i>" not in body
    assert '<ol class="step-list" hx-disable>' in body


def test_uploading_through_the_page_creates_one_job_per_file(
    owner_client, project, django_capture_on_commit_callbacks
):
    files = [SimpleUploadedFile("good.json", GOOD.read_bytes()), SimpleUploadedFile("empty.json", b"")]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner_client.post(
            reverse("tracing:upload", args=[project.slug]), {"files": files}, HTTP_HX_REQUEST="true"
        )
    body = response.content.decode()
    jobs = list(IngestJob.objects.order_by("pk"))
    assert [j.filename for j in jobs] == ["good.json", "empty.json"]
    assert len(callbacks) == 1  # only the importable file is queued; the empty one already failed
    assert 'hx-trigger="every 1s"' in body
    assert "empty.json: the file is empty" in body
    assert jobs[0].status == JobStatus.QUEUED


def test_an_oversize_file_fails_at_once_in_the_upload_page(owner_client, project, settings):
    settings.CULPRIT_MAX_UPLOAD_BYTES = 100
    response = owner_client.post(
        reverse("tracing:upload", args=[project.slug]),
        {"files": [SimpleUploadedFile("huge.json", b"x" * 500)]},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert "huge.json: the file is 500 bytes, over the 100 bytes limit" in body
    assert 'hx-trigger="every 1s"' not in body  # nothing left to wait for


def test_the_batch_page_stops_polling_when_every_job_is_done(owner_client, project):
    jobs = import_now(
        project, incoming_bytes("bad.json", b"nope"), incoming_bytes("g.json", GOOD.read_bytes())
    )
    url = reverse("tracing:upload_batch", args=[project.slug, jobs[0].batch])
    body = owner_client.get(url).content.decode()
    assert "every 1s" not in body
    assert "bad.json: not JSON" in body
    assert f'href="/traces/{jobs[1].trace_ids[0]}/"' in body


def test_the_upload_form_without_files_is_a_form_error(owner_client, project):
    response = owner_client.post(reverse("tracing:upload", args=[project.slug]), {})
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()


def test_staff_reach_the_admin(client, make_user):
    staff = make_user("staff", is_staff=True, is_superuser=True)
    client.force_login(staff)
    assert client.get("/admin/tracing/trace/").status_code == 200


def test_a_history_restore_gets_the_whole_page_not_a_partial(owner_client, imported_trace):
    """htmx sends Back-after-a-cache-miss as an htmx request but swaps the answer into <body>."""
    url = reverse("tracing:trace_list", args=[imported_trace.project.slug])
    partial = owner_client.get(url, headers={"HX-Request": "true"})
    restore = owner_client.get(url, headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert b"<html" not in partial.content and b"<html" in restore.content
    assert "HX-History-Restore-Request" in restore["Vary"]
