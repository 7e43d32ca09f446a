"""The project's tabs: every project page shows them with its own section marked, and a member sees the tabs their
role can open (an annotator no owner settings, a viewer no export)."""

import re

import pytest
from django.urls import reverse

from config.navigation import SECTIONS
from tracing.models import Role

pytestmark = pytest.mark.django_db


def _tabs(html: str) -> tuple[list[str], list[str]]:
    nav = re.search(r'<nav class="tabs"[^>]*>(.*?)</nav>', html, re.S)
    assert nav, "the page has no project tabs"
    links = re.findall(r"<a [^>]*>([^<]+)</a>", nav.group(1))
    current = re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]+)</a>', nav.group(1))
    return links, current


@pytest.mark.parametrize(
    ("url_name", "kwargs", "tab"),
    [
        ("tracing:trace_list", {}, "Traces"),
        ("tracing:upload", {}, "Traces"),
        ("attribution:run_list", {}, "Runs"),
        ("attribution:evaluation", {}, "Evaluation"),
        ("annotations:queue_list", {}, "Review"),
        ("annotations:export_builder", {}, "Export"),
        ("attribution:campaign_list", {}, "Fault injection"),
        ("attribution:schema_list", {}, "Schemas"),
        ("attribution:model_list", {}, "Learned models"),
        ("tracing:project_members", {}, "Members"),
        ("attribution:llm_settings", {}, "LLM settings"),
        ("tracing:project_tokens", {}, "API tokens"),
        ("tracing:project_audit", {}, "Audit"),
    ],
)
def test_each_section_marks_its_own_tab(owner_client, project, url_name, kwargs, tab):
    response = owner_client.get(reverse(url_name, kwargs={"slug": project.slug, **kwargs}))
    assert response.status_code == 200
    links, current = _tabs(response.content.decode())
    assert current == [tab]
    assert "Learned models" in links and "Audit" in links


def test_a_trace_page_is_under_traces(owner_client, imported_trace):
    response = owner_client.get(reverse("tracing:trace_detail", args=[imported_trace.pk]))
    assert _tabs(response.content.decode())[1] == ["Traces"]


def test_tabs_follow_the_role(client, make_user, project):
    from tracing import services

    annotator, viewer = make_user("ann"), make_user("viewer")
    services.membership_set(project=project, user=annotator, role=Role.ANNOTATOR)
    services.membership_set(project=project, user=viewer, role=Role.VIEWER)
    client.force_login(annotator)
    links, _ = _tabs(client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode())
    assert "Review" in links and "LLM settings" not in links and "Audit" not in links
    client.force_login(viewer)
    links, _ = _tabs(client.get(reverse("tracing:trace_list", args=[project.slug])).content.decode())
    assert "Export" not in links and "Traces" in links


def test_every_named_page_belongs_to_one_section():
    names = [name for names in SECTIONS.values() for name in names]
    assert len(names) == len(set(names))


def test_pages_outside_a_project_have_no_tabs(owner_client):
    assert 'class="tabs"' not in owner_client.get(reverse("tracing:project_list")).content.decode()


def test_every_section_name_is_a_page():
    from django.urls import get_resolver

    known = set()
    for pattern in get_resolver().url_patterns:
        for sub in getattr(pattern, "url_patterns", [pattern]):
            if getattr(sub, "name", None):
                known.add(sub.name)
    missing = [name for names in SECTIONS.values() for name in names if name not in known]
    assert not missing
