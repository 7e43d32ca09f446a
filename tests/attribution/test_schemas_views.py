"""Schema pages: browse and search, the detail page with exemplars, statistics and audit log, owners-only writes, and
the verdict panel naming the schemas that informed a verdict."""

from __future__ import annotations

import pytest
from django.utils.html import escape

from attribution import services
from attribution.models import ErrorSchema, SchemaAction, SchemaScope, SchemaStatus
from attribution.schemas import services as schema_services
from tests.attribution.test_schemas import cases, failing_import, upload
from tracing.models import GoldLabel, Role


@pytest.fixture
def schema(project) -> ErrorSchema:
    cases(project, 2)
    schema_services.schemas_distill(project=project)
    return ErrorSchema.objects.get(project=project)


def url(project, schema=None, action: str = "") -> str:
    base = f"/attribution/projects/{project.slug}/schemas/"
    return base + (f"{schema.pk}/" if schema else "") + (f"{action}/" if action else "")


@pytest.mark.django_db
def test_members_browse_and_search_schemas(client, project, schema, make_user):
    viewer = make_user("viewer")
    project.memberships.create(user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    page = client.get(url(project))
    assert page.status_code == 200 and escape(schema.title).encode() in page.content
    assert b"Distil verified cases now" not in page.content  # owners only
    assert escape(schema.title).encode() not in client.get(url(project) + "?q=nosuchthing").content
    found = client.get(url(project) + "?q=modulenotfounderror&status=trusted", HTTP_HX_REQUEST="true")
    assert (
        escape(schema.title).encode() in found.content and b"<html" not in found.content
    )  # the partial only
    detail = client.get(url(project, schema))
    assert detail.status_code == 200
    for exemplar in schema.exemplars.all():
        assert exemplar.trace.name.encode() in detail.content
    assert b"Audit log" in detail.content and b"Approve" not in detail.content


@pytest.mark.django_db
def test_viewers_and_annotators_cannot_change_schemas(client, project, schema, make_user):
    for role in (Role.VIEWER, Role.ANNOTATOR):
        user = make_user(f"u-{role}")
        project.memberships.create(user=user, role=role)
        client.force_login(user)
        for action in ("approve", "retire", "edit"):
            assert (
                client.post(url(project, schema, action), {"title": "x", "scope": "project"}).status_code
                == 403
            )
        assert client.post(url(project) + "distill/").status_code == 403
    schema.refresh_from_db()
    assert schema.status == SchemaStatus.TRUSTED and not schema.edited


@pytest.mark.django_db
def test_another_projects_schema_is_not_found(client, project, schema, make_project, make_user):
    stranger = make_user("stranger")
    other = make_project("Other", {stranger: Role.OWNER})
    client.force_login(stranger)
    assert client.get(url(project, schema)).status_code == 404
    assert client.get(f"/attribution/projects/{other.slug}/schemas/{schema.pk}/").status_code == 404
    assert client.post(f"/attribution/projects/{other.slug}/schemas/{schema.pk}/retire/").status_code == 404


@pytest.mark.django_db
def test_owners_approve_edit_retire_and_restore_with_an_audit_trail(owner_client, project, owner):
    cases(project, 1)
    schema_services.schemas_distill(project=project)
    schema = ErrorSchema.objects.get(project=project)
    assert schema.status == SchemaStatus.CANDIDATE
    owner_client.post(url(project, schema, "approve"))
    schema.refresh_from_db()
    assert schema.status == SchemaStatus.TRUSTED and schema.approved_by == owner
    response = owner_client.post(
        url(project, schema, "edit"),
        {
            "title": "Missing module on first code",
            "context": "<b>pip</b> not run",
            "detection_text": "the crash",
            "category": "system.tool_execution_error",
            "scope": SchemaScope.PROJECT,
        },
    )
    assert response.status_code == 302
    schema.refresh_from_db()
    assert schema.title == "Missing module on first code" and schema.edited
    page = owner_client.get(url(project, schema))
    assert b"&lt;b&gt;pip&lt;/b&gt;" in page.content and b"<b>pip</b>" not in page.content  # escaped
    owner_client.post(url(project, schema, "retire"), {"reason": "too broad"})
    schema.refresh_from_db()
    assert schema.status == SchemaStatus.RETIRED
    owner_client.post(url(project, schema, "restore"))
    schema.refresh_from_db()
    assert schema.status == SchemaStatus.CANDIDATE  # one case: restored schemas earn trust again
    actions = list(schema.events.order_by("id").values_list("action", "actor"))
    assert [a for a, _ in actions] == [
        SchemaAction.CREATED,
        SchemaAction.APPROVED,
        SchemaAction.EDITED,
        SchemaAction.RETIRED,
        SchemaAction.RESTORED,
    ]
    assert all(actor == owner.pk for a, actor in actions[1:])
    # Distilling again keeps the owner's words.
    cases(project, 1, flavour="numpy")
    schema_services.schemas_distill(project=project)
    schema.refresh_from_db()
    assert schema.title == "Missing module on first code" and schema.exemplars.count() == 2


@pytest.mark.django_db
def test_the_verdict_panel_names_the_schemas_that_informed_a_verdict(owner_client, project, schema):
    (fresh,) = upload(project, failing_import("scipy"))
    GoldLabel.objects.filter(trace=fresh).delete()
    run = services.run_create(project=project, method="schema_guided", trace_ids=[fresh.pk], enqueue=False)
    services.run_execute_inline(run=run)
    panel = owner_client.get(f"/attribution/traces/{fresh.pk}/panel/")
    assert b"Informed by 1 schema" in panel.content
    assert url(project, schema).encode() in panel.content and escape(schema.title).encode() in panel.content


@pytest.mark.django_db
def test_the_nav_links_to_the_schemas(owner_client, project):
    page = owner_client.get(f"/attribution/projects/{project.slug}/runs/")
    assert url(project).encode() in page.content
