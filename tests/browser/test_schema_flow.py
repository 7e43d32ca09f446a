"""The error-schema flow in a real browser: an owner distils verified cases on a worker, finds a candidate by
searching, approves it, runs schema_guided on a new trace and sees on the trace page which schema informed it."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from attribution.models import ErrorSchema, SchemaStatus
from tests.attribution.test_schemas import failing_import, upload
from tests.browser.conftest import log_in
from tests.conftest import wait_for
from tracing import services
from tracing.models import GoldLabel, Role

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_an_owner_distils_approves_and_sees_a_schema_inform_a_verdict(live_server, celery_worker, page):
    user = get_user_model().objects.create_user("ada", password="a-long-test-password")
    project = services.project_create(name="Schemas", owner=user)
    services.membership_set(project=project, user=user, role=Role.OWNER)
    upload(project, failing_import("pandas"), "Algorithm-Generated/one.json")  # one case: a candidate
    (fresh,) = upload(project, json.dumps(failing_import("polars")).encode(), "Algorithm-Generated/new.json")
    GoldLabel.objects.filter(trace=fresh).delete()

    log_in(page, live_server.url, "ada")
    page.goto(f"{live_server.url}/attribution/projects/{project.slug}/schemas/")
    page.click("text=Distil verified cases now")
    wait_for(lambda: ErrorSchema.objects.filter(project=project).exists())
    page.fill("input[name=q]", "modulenotfounderror")
    page.wait_for_selector("#schema-results a")  # htmx search as one types
    page.click("#schema-results a")
    page.wait_for_selector("text=Exemplars (provenance)")
    assert page.locator("text=Candidate").count() >= 1
    page.click("text=Approve (trust it)")
    page.wait_for_selector("text=Audit log")
    assert ErrorSchema.objects.get(project=project).status == SchemaStatus.TRUSTED

    page.goto(f"{live_server.url}/traces/{fresh.pk}/")
    page.wait_for_selector("#verdicts select[name=method]")
    page.select_option("#verdicts select[name=method]", "schema_guided")
    page.click("#verdicts button:has-text('Attribute')")
    page.wait_for_selector("text=Informed by 1 schema", timeout=60_000)
    page.click("text=Informed by 1 schema")
    assert page.locator(".schemas-used a").count() == 1
