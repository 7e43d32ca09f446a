"""Every URL and API endpoint x every role: anonymous, a member of another project only, viewer, annotator, owner.

The expectations are a table (``PAGES``, ``API``); a URL that is missing from it fails the completeness test, so a new
page cannot ship without saying who may use it. Object ids always belong to project A; the outsider is a member of
project B only and must get 404 for every one of them, exactly as if the id did not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from attribution import services as attribution_services
from attribution.models import Injection, Verdict
from tests.conftest import import_now, incoming_path, sample_file
from tracing import services
from tracing.models import Role, Trace

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "outsider", "viewer", "annotator", "owner")
OK = frozenset(
    {200, 302, 400}
)  # allowed: shown, done and redirected, or refused for its content (an empty form)


def expect(
    anonymous: Any = 302, outsider: Any = 404, viewer: Any = 200, annotator: Any = 200, owner: Any = 200
) -> dict[str, Any]:
    return {
        "anonymous": anonymous,
        "outsider": outsider,
        "viewer": viewer,
        "annotator": annotator,
        "owner": owner,
    }


READ = expect()
OWNER_ONLY = expect(viewer=403, annotator=403)
CONTRIBUTE = expect(viewer=403, annotator=OK, owner=OK)  # writes by annotators and owners
OWNER_WRITE = expect(viewer=403, annotator=403, owner=OK)
EVERYONE = expect(anonymous=200, outsider=200, viewer=200, annotator=200, owner=200)

# name -> {method: expectations}. Keyword arguments come from the ``world`` fixture by parameter name.
PAGES: dict[str, dict[str, dict[str, Any]]] = {
    "login": {"GET": expect(anonymous=200, outsider=302, viewer=302, annotator=302, owner=302)},
    "logout": {"POST": expect(anonymous=302, outsider=302, viewer=302, annotator=302, owner=302)},
    "healthz": {"GET": EVERYONE},
    "otlp_traces": {"POST": expect(anonymous=401, outsider=401, viewer=401, annotator=401, owner=401)},
    "tracing:home": {"GET": expect(outsider=302, viewer=302, annotator=302, owner=302)},
    "tracing:project_list": {"GET": expect(outsider=200)},
    "tracing:trace_list": {"GET": READ},
    "tracing:project_live": {"GET": READ},
    "tracing:traces_delete": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    "tracing:project_members": {"GET": READ, "POST": OWNER_WRITE},
    "tracing:project_tokens": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    "tracing:project_audit": {"GET": OWNER_ONLY},
    "tracing:upload": {"GET": expect(viewer=403), "POST": CONTRIBUTE},
    "tracing:upload_batch": {"GET": READ},
    "tracing:trace_detail": {"GET": READ},
    "tracing:trace_live": {"GET": READ},
    "tracing:trace_delete": {"POST": OWNER_WRITE},
    "tracing:trace_original": {"GET": READ},
    "tracing:step_content": {"GET": READ},
    "attribution:trace_panel": {"GET": READ},
    "attribution:trace_attribute": {"POST": CONTRIBUTE},
    "attribution:run_auto": {"POST": OWNER_WRITE},
    "attribution:run_list": {"GET": READ, "POST": CONTRIBUTE},
    "attribution:run_detail": {"GET": READ, "POST": CONTRIBUTE},
    "attribution:evaluation": {"GET": READ},
    "attribution:evaluation_start": {"POST": CONTRIBUTE},
    "attribution:sandbox_generate": {"POST": CONTRIBUTE},
    "attribution:llm_settings": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    "attribution:llm_test_connection": {"POST": OWNER_WRITE},
    "attribution:campaign_list": {"GET": READ, "POST": CONTRIBUTE},
    "attribution:campaign_detail": {"GET": READ, "POST": CONTRIBUTE},
    "attribution:injection_inspector": {"GET": READ},
    "attribution:replay_inspector": {"GET": READ},
    "attribution:schema_list": {"GET": READ},
    "attribution:schemas_distill": {"POST": OWNER_WRITE},
    "attribution:schema_library": {"POST": OWNER_WRITE},
    "attribution:schema_detail": {"GET": READ},
    "attribution:schema_approve": {"POST": OWNER_WRITE},
    "attribution:schema_retire": {"POST": OWNER_WRITE},
    "attribution:schema_restore": {"POST": OWNER_WRITE},
    "attribution:schema_edit": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    "attribution:model_list": {"GET": READ, "POST": CONTRIBUTE},
    "attribution:model_recalibrate": {"POST": CONTRIBUTE},
    "attribution:model_retrain_after": {"POST": CONTRIBUTE},
    "attribution:model_detail": {"GET": READ},
    # The world's model is still queued: making it the default is refused with a message, after the role check.
    "attribution:model_make_default": {"POST": CONTRIBUTE},
    "attribution:model_delete": {"POST": OWNER_WRITE},
    # The world's model is still queued: scoring it is refused with a message, after the role check.
    "attribution:model_score_unseen": {"POST": CONTRIBUTE},
    "annotations:queue_list": {"GET": READ, "POST": OWNER_WRITE},
    "annotations:queue_detail": {"GET": READ},
    "annotations:queue_refill": {"POST": OWNER_WRITE},
    "annotations:queue_edit": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    "annotations:queue_next": {"GET": expect(viewer=403, annotator=302, owner=302)},
    "annotations:agreement": {"GET": READ},
    "annotations:adjudication": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    "annotations:adjudicate_item": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    # The copy is leased to the annotator: the owner, who does not hold it, is sent on to a copy of their own.
    "annotations:label": {
        "GET": expect(viewer=403, annotator=200, owner=302),
        "POST": expect(viewer=403, annotator=OK, owner=302),
    },
    "annotations:trace_label": {"POST": CONTRIBUTE},
    "annotations:trace_label_remove": {"POST": CONTRIBUTE},
    "annotations:skip": {"POST": expect(viewer=403, annotator=302, owner=302)},
    # The fixture's copy is leased, not answered: its annotator is sent on to the next item, like anyone else.
    "annotations:answer_edit": {
        "GET": expect(viewer=403, annotator=302, owner=302),
        "POST": expect(viewer=403, annotator=302, owner=302),
    },
    # Exports hold the project's curated data: annotators and owners build and download them, viewers do not.
    "annotations:export_builder": {"GET": expect(viewer=403), "POST": CONTRIBUTE},
    "annotations:export_preview": {"GET": expect(viewer=403)},
    "annotations:export_download": {"GET": expect(viewer=403)},
    "annotations:export_manifest": {"GET": expect(viewer=403)},
    "annotations:invitations": {"GET": OWNER_ONLY, "POST": OWNER_WRITE},
    # Anyone holding a valid link may accept it; the world's token is not one, so everybody gets 404.
    "annotations:invitation_accept": {
        "GET": expect(anonymous=404, viewer=404, annotator=404, owner=404),
        "POST": expect(anonymous=404, viewer=404, annotator=404, owner=404),
    },
    # The annotator's request (made before the owner's) deletes the export: the owner then finds it gone.
    "annotations:export_delete": {"POST": expect(viewer=403, annotator=OK, owner=frozenset({404}))},
}

# The API answers for a token's project: no token 401, another project's token 404 for A's objects.
API: dict[str, tuple[str, dict[str, int]]] = {
    "api:list_formats": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:list_export_formats": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:list_jobs": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:otlp_status": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:get_job": ("GET", {"none": 401, "other": 404, "own": 200}),
    "api:list_traces": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:get_trace": ("GET", {"none": 401, "other": 404, "own": 200}),
    "api:list_steps": ("GET", {"none": 401, "other": 404, "own": 200}),
    "api:delete_trace": (
        "DELETE",
        {"none": 401, "other": 404, "own": 204},
    ),  # the own token's maker is an owner
    "api:upload": ("POST", {"none": 401, "other": 422, "own": 422}),
    "api:list_methods": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:create_run": ("POST", {"none": 401, "other": 400, "own": 400}),  # not a JSON body
    "api:list_runs": ("GET", {"none": 401, "other": 200, "own": 200}),
    "api:get_run": ("GET", {"none": 401, "other": 404, "own": 200}),
    "api:list_verdicts": ("GET", {"none": 401, "other": 404, "own": 200}),
}
PUBLIC_API = {"api:openapi-json", "api:openapi-view", "api:api-root"}


def url_names() -> set[str]:
    def walk(patterns, namespace=None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.app_name == "admin":
                    continue
                yield from walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                yield f"{namespace}:{pattern.name}" if namespace else pattern.name

    return set(walk(get_resolver().url_patterns))


def test_every_url_has_a_row_in_the_matrix():
    missing = url_names() - set(PAGES) - set(API) - PUBLIC_API
    assert not missing, f"add these URLs to the authorization matrix: {sorted(missing)}"


@pytest.fixture
def world(make_user, make_project):
    users = {role: make_user(role) for role in ("outsider", "viewer", "annotator", "owner")}
    project = make_project(
        "Alpha",
        {users["owner"]: Role.OWNER, users["viewer"]: Role.VIEWER, users["annotator"]: Role.ANNOTATOR},
    )
    other = make_project("Beta", {users["outsider"]: Role.OWNER})
    (job,) = import_now(project, incoming_path(sample_file()))
    trace = Trace.objects.get(pk=job.trace_ids[0])
    run = attribution_services.run_create(
        project=project, method="heuristic", trace_ids=[trace.pk], enqueue=False
    )
    attribution_services.run_execute_inline(run=run)
    attribution_services.sandbox_clean_runs_generate(project=project, runs=1, seed=3)
    campaign = attribution_services.campaign_execute_inline(
        campaign=attribution_services.campaign_create(
            project=project,
            trace_ids=list(
                Trace.objects.filter(project=project, outcome="succeeded").values_list("pk", flat=True)
            ),
            faults_per_trace=1,
            enqueue=False,
        )
    )
    from annotations import services as annotation_services

    queue = annotation_services.queue_create(
        project=project, user=users["owner"], name="Q", source="search", filter={"q": ""}, overlap=2
    )
    leased = annotation_services.annotation_claim(queue=queue, user=users["annotator"])
    from annotations.selectors import ExportFilters

    export = annotation_services.export_create(
        project=project, user=users["owner"], fmt="whowhen-jsonl", filters=ExportFilters(), enqueue=False
    )
    annotation_services.export_run(export_id=export.pk)
    from attribution.models import ErrorSchema
    from attribution.schemas.services import schemas_distill

    schemas_distill(project=project)
    schema = ErrorSchema.objects.filter(project=project).first()
    from attribution.learning.services import attributor_create

    model = attributor_create(project=project, name="M", user=users["owner"], enqueue=False)
    _, own_token = services.api_token_create(project=project, name="own", user=users["owner"])
    _, other_token = services.api_token_create(project=other, name="other", user=users["outsider"])
    kwargs = {
        "slug": project.slug,
        "trace_id": trace.pk,
        "run_id": run.pk,
        "batch": job.batch,
        "verdict_id": Verdict.objects.get(run=run).pk,
        "campaign_id": campaign.pk,
        "injection_id": Injection.objects.filter(campaign=campaign).first().pk,
        "job_id": job.pk,
        "queue_id": queue.pk,
        "item_id": leased.item_id,
        "annotation_id": leased.pk,
        "export_id": export.pk,
        "schema_id": schema.pk,
        "model_id": model.pk,
        "token": "no-such-invitation",
        "index": 0,
    }
    return {"users": users, "kwargs": kwargs, "tokens": {"own": own_token, "other": other_token}}


def resolve(name: str, kwargs: dict[str, Any]) -> str:
    """The URL of ``name`` with the keyword arguments its pattern names, taken from ``kwargs``."""
    pattern = dict(_patterns())[name]
    wanted = {k: v for k, v in kwargs.items() if f":{k}>" in pattern or f"<{k}>" in pattern}
    return reverse(name, kwargs=wanted) if wanted else reverse(name)


def _patterns() -> list[tuple[str, str]]:
    out = []

    def walk(patterns, namespace=None, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace, prefix + str(pattern.pattern))
            elif pattern.name:
                out.append(
                    (
                        f"{namespace}:{pattern.name}" if namespace else pattern.name,
                        prefix + str(pattern.pattern),
                    )
                )

    walk(get_resolver().url_patterns)
    return out


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_answers_each_role_as_the_matrix_says(name, world, client):
    url = resolve(name, world["kwargs"])
    failures = []
    for method, expected in PAGES[name].items():
        for role in ROLES:
            client.logout()
            if role != "anonymous":
                client.force_login(world["users"][role])
            response = client.get(url) if method == "GET" else client.post(url, {})
            want = expected[role]
            ok = response.status_code in want if isinstance(want, frozenset) else response.status_code == want
            if not ok:
                failures.append(f"{method} {url} as {role}: {response.status_code}, expected {want}")
            if role == "anonymous" and want == 302:
                assert "/accounts/login/" in response["Location"]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("part", ["raw", "answer"])
def test_each_part_of_a_step_window_answers_each_role_as_the_step_content_does(part, world, client):
    """``part`` picks another long text of the step (its raw JSON, the root's output): the same roles see it."""
    url = resolve("tracing:step_content", world["kwargs"]) + f"?part={part}"
    for role in ROLES:
        client.logout()
        if role != "anonymous":
            client.force_login(world["users"][role])
        want = PAGES["tracing:step_content"]["GET"][role]
        assert client.get(url).status_code == want, f"GET {url} as {role}"


@pytest.mark.parametrize("name", sorted(API))
def test_each_api_endpoint_answers_each_token_as_the_matrix_says(name, world, client):
    method, expected = API[name]
    url = resolve(name, world["kwargs"])
    for who, want in expected.items():
        headers = {} if who == "none" else {"HTTP_AUTHORIZATION": f"Bearer {world['tokens'][who]}"}
        if method == "GET":
            response = client.get(url, **headers)
        elif method == "POST":
            response = client.post(url, {}, **headers)
        else:
            response = client.generic(method, url, **headers)
        assert response.status_code == want, f"{method} {url} with {who} token: {response.status_code}"


def test_ids_that_do_not_exist_answer_like_ids_of_another_project(world, client):
    client.force_login(world["users"]["owner"])
    missing = {
        **world["kwargs"],
        "trace_id": 10**9,
        "run_id": 10**9,
        "verdict_id": 10**9,
        "campaign_id": 10**9,
        "injection_id": 10**9,
        "batch": uuid.uuid4(),
        "slug": "no-such-project",
        "queue_id": 10**9,
        "item_id": 10**9,
        "annotation_id": 10**9,
        "export_id": 10**9,
        "schema_id": 10**9,
        "model_id": 10**9,
    }
    patterns = dict(_patterns())
    checked = 0
    for name, methods in PAGES.items():
        if "<" not in patterns[name] or "GET" not in methods or methods["GET"]["owner"] != 200:
            continue
        url = resolve(name, missing)
        assert client.get(url).status_code == 404, url
        checked += 1
    assert checked >= 10


def test_huge_ids_in_page_urls_are_not_found_not_server_errors(world, client):
    client.force_login(world["users"]["owner"])
    huge = {
        k: 2**70
        for k in (
            "trace_id",
            "run_id",
            "verdict_id",
            "campaign_id",
            "injection_id",
            "queue_id",
            "item_id",
            "annotation_id",
            "export_id",
            "schema_id",
            "model_id",
        )
    }
    patterns = dict(_patterns())
    for name, methods in PAGES.items():
        if "int:" not in patterns[name] or "GET" not in methods:
            continue
        url = resolve(name, {**world["kwargs"], **huge})
        assert client.get(url).status_code == 404, url
