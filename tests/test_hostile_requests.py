"""Requests an audit sent that got a server error, a bare "Bad Request" page or no error at all: each now gets a
4xx that says what was wrong (JSON from the API), and nothing changes."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from django.urls import reverse

from annotations.forms import AnswerForm
from tracing import services
from tracing.models import ApiToken

pytestmark = pytest.mark.django_db


def test_an_export_until_the_last_day_of_the_calendar_is_no_error(owner_client, project, imported_trace):
    from datetime import date

    from annotations.selectors.exports import ExportFilters, export_case_count

    def count(until):
        return export_case_count(project=project, filters=ExportFilters(date_to=until))

    assert count(date(9999, 12, 31)) == count(date(9999, 12, 30)) == count(None) == 1
    url = reverse("annotations:export_preview", args=[project.slug])
    assert owner_client.get(url, {"date_to": "9999-12-31", "sources": "imported"}).status_code == 200


def test_a_further_error_whose_step_is_not_an_ascii_number_is_a_form_error():
    data = QueryDict(mutable=True)
    data.update({"step_index": "1"})
    for name, value in (("step", "\u00b2"), ("agent", ""), ("category", ""), ("note", "")):
        data.setlist(f"error_{name}", [value])
    form = AnswerForm(data)
    assert not form.is_valid()
    assert "Further error 1 has no step." in str(form.errors)


def test_an_invitation_id_that_is_not_an_ascii_number_revokes_nothing(owner_client, project):
    answer = owner_client.post(reverse("annotations:invitations", args=[project.slug]), {"revoke": "\u00b2"})
    assert answer.status_code < 500


def test_an_upload_batch_that_is_not_this_projects_is_not_found(owner_client, project):
    url = reverse("tracing:upload_batch", args=[project.slug, "00000000-0000-0000-0000-000000000000"])
    assert owner_client.get(url).status_code == 404
    assert owner_client.get(url, HTTP_HX_REQUEST="true").status_code == 404


@pytest.mark.parametrize("revoke", ["0", "-3", "abc", ""])
def test_a_revoke_that_names_no_token_creates_none(owner_client, project, revoke):
    answer = owner_client.post(reverse("tracing:project_tokens", args=[project.slug]), {"revoke": revoke})
    assert answer.status_code == 400
    assert not ApiToken.objects.filter(project=project).exists()
    assert b"Revoke" in answer.content or b"revoke" in answer.content


def test_a_run_with_an_unknown_method_says_which_field(owner_client, project):
    answer = owner_client.post(reverse("attribution:run_list", args=[project.slug]), {"method": "bogus"})
    assert answer.status_code == 400
    assert b"Method: Select a valid choice" in answer.content


def test_too_many_parameters_or_a_multipart_body_without_boundary_get_a_reason(client, owner, project):
    _, token = services.api_token_create(project=project, name="ci", user=owner)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    query = "&".join(f"p{i}=1" for i in range(1200))
    answer = client.get(f"/api/traces?{query}", **auth)
    assert answer.status_code == 400
    assert "too many parameters" in answer.json()["detail"]
    answer = client.post("/api/uploads", b"--x\r\n", content_type="multipart/form-data", **auth)
    assert answer.status_code == 400
    assert "multipart" in answer.json()["detail"]
    page = client.get(f"/accounts/login/?{query}")
    assert page.status_code == 400 and b"too many parameters" in page.content


def test_a_preview_of_filters_out_of_range_says_what_is_wrong(owner_client, project, imported_trace):
    url = reverse("annotations:export_preview", args=[project.slug])
    answer = owner_client.get(
        url, {"sources": "imported", "test_percent": "150", "seed": "0"}, HTTP_HX_REQUEST="true"
    )
    assert answer.status_code == 200
    assert b"Test split %: Ensure this value is less than or equal to 100." in answer.content
