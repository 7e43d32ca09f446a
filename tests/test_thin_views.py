"""Views stay thin (issue 12): they call access helpers, forms, selectors and services, and nothing else touches the
ORM or the broker. The rule is checked on the source, with ``ast``, for every function of every view module, so a
query or an enqueue written into a view fails here before review.

Nothing is allowed: a view that needs a query gets a selector, a write or an enqueue gets a service. (A ModelForm's
cleaned values are on ``form.instance`` after ``is_valid()``, so even ``form.save(commit=False)`` is not needed.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("tracing", "attribution", "annotations")

# Manager and queryset methods, saves and deletes, and the ways to reach the broker. Names dicts and lists share
# (``values``, ``update``, ``get``, ``pop``) are left out: ``.objects``, ``get_object_or_404`` and the queryset-only
# methods below already catch the queries that would go with them.
FORBIDDEN_METHODS = frozenset(
    {
        "all",
        "filter",
        "exclude",
        "order_by",
        "select_related",
        "prefetch_related",
        "annotate",
        "aggregate",
        "values_list",
        "exists",
        "first",
        "last",
        "in_bulk",
        "raw",
        "create",
        "get_or_create",
        "update_or_create",
        "bulk_create",
        "bulk_update",
        "save",
        "save_m2m",
        "delete",
        "refresh_from_db",
        "delay",
        "apply_async",
        "on_commit",
    }
)
FORBIDDEN_NAMES = frozenset({"get_object_or_404", "get_list_or_404"})


def view_modules() -> list[Path]:
    found = []
    for app in APPS:
        base = ROOT / app
        found += base.rglob("views.py")
        found += (base / "views").glob("*.py") if (base / "views").is_dir() else []
    return sorted(found)


def violations(source: str, filename: str = "<view>") -> list[str]:
    """Each ORM or broker use inside a function of ``source``, as ``file:line function: what``."""
    found = []
    for func in ast.walk(ast.parse(source, filename)):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            what = None
            if isinstance(node, ast.Attribute) and node.attr == "objects":
                what = ".objects"
            elif isinstance(node, ast.Call):
                callee = node.func
                if isinstance(callee, ast.Attribute) and callee.attr in FORBIDDEN_METHODS:
                    what = f".{callee.attr}("
                elif isinstance(callee, ast.Name) and callee.id in FORBIDDEN_NAMES:
                    what = f"{callee.id}("
            if what:
                found.append(f"{filename}:{node.lineno} {func.name}: {what}")
    return sorted(set(found))


def test_the_view_modules_are_found():
    names = {str(p.relative_to(ROOT)) for p in view_modules()}
    assert {"tracing/views.py", "attribution/views.py", "attribution/learning/views.py"} <= names
    assert "annotations/views/queues.py" in names


@pytest.mark.parametrize("path", view_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_views_do_no_orm_work_and_enqueue_nothing(path: Path):
    found = violations(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "move these into a selector (reads) or a service (writes, enqueues):\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "body, what",
    [
        ("run = Run.objects.get(pk=1)", ".objects"),
        ("run = get_object_or_404(Run, pk=1)", "get_object_or_404("),
        ("task.delay(1)", ".delay("),
        ("task.apply_async((1,))", ".apply_async("),
        ("form.save()", ".save("),
        ("project.traces.create(name='x')", ".create("),
        ("rows = list(project.traces.all())", ".all("),
        ("n = campaign.injections.filter(x=1).count()", ".filter("),
        ("transaction.on_commit(lambda: None)", ".on_commit("),
    ],
)
def test_the_check_catches_each_kind_of_orm_work(body: str, what: str):
    source = f"def view(request):\n    {body}\n"
    assert any(v.endswith(what) for v in violations(source)), violations(source)


def test_the_check_leaves_plain_python_alone():
    source = (
        "def view(request):\n"
        "    data = form.cleaned_data.get('page')\n"
        "    errors = '; '.join(e for errs in form.errors.values() for e in errs)\n"
        "    context.update(form=form)\n"
        "    return render(request, 'x.html', selectors.page(project=membership.project))\n"
    )
    assert violations(source) == []


# --- the access helpers ---------------------------------------------------------------------------------------------


@pytest.fixture
def members(make_user, make_project):
    from tracing.models import Role

    people = {name: make_user(name) for name in ("owner", "viewer", "outsider")}
    project = make_project("Alpha", {people["owner"]: Role.OWNER, people["viewer"]: Role.VIEWER})
    make_project("Beta", {people["outsider"]: Role.OWNER})
    return project, people


def _request(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = user
    return request


@pytest.mark.django_db
def test_object_for_fetches_the_object_its_project_and_the_membership_in_one_query(
    members, django_assert_num_queries
):
    from tracing import access
    from tracing.models import Role, Trace

    project, people = members
    trace = Trace.objects.create(project=project, name="t", source_format="whowhen")
    with django_assert_num_queries(1):
        found, membership = access.trace_for(_request(people["owner"]), trace.pk, Role.OWNER)
        assert (found.pk, found.project.slug) == (trace.pk, project.slug)
        assert (membership.role, membership.project.pk, membership.user_id) == (
            Role.OWNER,
            project.pk,
            people["owner"].pk,
        )


@pytest.mark.django_db
def test_object_for_answers_404_to_a_non_member_and_403_to_a_role_too_low(members):
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    from attribution import access as attribution_access
    from tracing import access
    from tracing.models import Role, Trace

    project, people = members
    trace = Trace.objects.create(project=project, name="t", source_format="whowhen")
    with pytest.raises(Http404):
        access.trace_for(_request(people["outsider"]), trace.pk)
    with pytest.raises(Http404):
        access.trace_for(_request(people["owner"]), trace.pk + 1000)
    assert access.trace_for(_request(people["viewer"]), trace.pk)[1].role == Role.VIEWER
    with pytest.raises(PermissionDenied, match="Viewers cannot start attribution runs"):
        attribution_access.trace_for(
            _request(people["viewer"]), trace.pk, Role.ANNOTATOR, attribution_access.CONTRIBUTORS_ONLY
        )
    with pytest.raises(Http404):
        access.project_for(_request(people["outsider"]), project.slug)
    with pytest.raises(PermissionDenied):
        access.project_for(_request(people["viewer"]), project.slug, Role.OWNER)
    assert access.project_for(_request(people["owner"]), project.slug, Role.OWNER).project == project


# --- GET writes nothing; writes go through services ------------------------------------------------------------------


@pytest.mark.django_db
def test_reading_the_llm_settings_page_creates_no_settings_row(client, members):
    from django.urls import reverse

    from attribution.models import ProjectLlmSettings

    project, people = members
    client.force_login(people["owner"])
    url = reverse("attribution:llm_settings", args=[project.slug])
    page = client.get(url)
    assert page.status_code == 200 and b'name="model"' in page.content
    assert not ProjectLlmSettings.objects.filter(project=project).exists()
    form = {"model": "openai/gpt-4o-mini", "temperature": "0", "timeout_seconds": "60", "max_retries": "2"}
    saved = client.post(url, form)
    assert saved.status_code == 302
    assert ProjectLlmSettings.objects.get(project=project).model == "openai/gpt-4o-mini"


@pytest.mark.django_db
def test_the_queue_settings_page_saves_the_named_annotators_through_the_service(client, members, make_user):
    from django.urls import reverse

    from annotations import services as queue_services
    from tracing.models import Role
    from tracing.services import membership_set

    project, people = members
    annie = make_user("annie")
    membership_set(project=project, user=annie, role=Role.ANNOTATOR)
    queue = queue_services.queue_create(
        project=project, user=people["owner"], name="Q", source="search", filter={"q": ""}
    )
    client.force_login(people["owner"])
    form = {
        "name": "Q",
        "overlap": str(queue.overlap),
        "assignment": "named",
        "annotators": [str(annie.pk)],
        "step_tolerance": "0",
        "lease_minutes": "10",
    }
    assert client.post(reverse("annotations:queue_edit", args=[queue.pk]), form).status_code == 302
    assert list(queue.annotators.values_list("username", flat=True)) == ["annie"]
    form |= {"assignment": "anyone", "annotators": []}
    assert client.post(reverse("annotations:queue_edit", args=[queue.pk]), form).status_code == 302
    assert not queue.annotators.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, data",
    [("attribution:sandbox_generate", {"runs": "2", "seed": "1"}), ("attribution:schemas_distill", {})],
)
def test_pages_that_start_background_work_enqueue_once_after_commit(
    client, members, django_capture_on_commit_callbacks, name, data
):
    from django.urls import reverse

    project, people = members
    client.force_login(people["owner"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert client.post(reverse(name, args=[project.slug]), data).status_code == 302
    assert len(callbacks) == 1  # nothing is sent to the broker before the transaction commits
