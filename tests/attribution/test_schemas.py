"""The error-schema cache: distillation from verified cases only, merging, promotion, leave-one-out, retrieval
(floor, hot cache, isolation), the schema_guided method, use statistics, the commands, and a real worker.

Traces are Who&When-format group chats uploaded through the real importer (each upload is one independence group);
PostgreSQL and Redis are real.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest
from django.core.management import call_command

from attribution import services
from attribution.methods import get_method
from attribution.methods.base import MethodResult, StepView, TraceView
from attribution.methods.schema_guided import _offline
from attribution.models import (
    ErrorSchema,
    SchemaAction,
    SchemaExemplar,
    SchemaLibrarySettings,
    SchemaScope,
    SchemaStatus,
    SchemaUse,
    Verdict,
)
from attribution.schemas import features, index
from attribution.schemas import services as schema_services
from attribution.schemas.selectors import Retrieved, SchemaSource
from tests.conftest import import_now, incoming_bytes, wait_for
from tracing.models import GoldLabel, JobStatus, LabelSource, Trace

PLAN = "Plan: 1. load the data 2. count the rows 3. report the number."


def chat(
    steps: list[tuple[str, str, str]], *, mistake_agent: str, mistake_step: int, answer: str = "3"
) -> dict:
    """A Who&When group chat: (name, role, content) per step."""
    return {
        "history": [{"name": n, "role": r, "content": c} for n, r, c in steps],
        "question": "How many rows?",
        "ground_truth": answer,
        "is_correct": False,
        "mistake_agent": mistake_agent,
        "mistake_step": str(mistake_step),
        "mistake_reason": "see the step",
        "question_ID": str(uuid.uuid4()),
        "level": "1",
    }


def failing_import(flavour: str = "pandas") -> dict:
    """The recurring failure: the coder's first code crashes on a missing module, and the run answers wrongly."""
    return chat(
        [
            ("Planner_Expert", "assistant", PLAN),
            (
                "Coder_Expert",
                "assistant",
                f"```python\nimport {flavour}\nprint(len({flavour}.read_csv('x.csv')))\n```",
            ),
            (
                "Computer_terminal",
                "user",
                "exitcode: 1 (execution failed)\nTraceback (most recent call last):\n"
                f"ModuleNotFoundError: No module named '{flavour}'",
            ),
            ("Verification_Expert", "assistant", "The count is 7. TERMINATE"),
        ],
        mistake_agent="Coder_Expert",
        mistake_step=1,
    )


def upload(project, data: dict | bytes, name: str = "Algorithm-Generated/case.json") -> list[Trace]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    (job,) = import_now(project, incoming_bytes(name, raw))
    assert job.status == JobStatus.SUCCEEDED, job.error
    return list(Trace.objects.filter(pk__in=job.trace_ids).order_by("pk"))


def zipped(*docs: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n, doc in enumerate(docs):
            archive.writestr(f"Algorithm-Generated/{n}.json", json.dumps(doc))
    return buffer.getvalue()


def cases(project, n: int, flavour: str = "pandas") -> list[Trace]:
    return [
        upload(project, failing_import(f"{flavour}{i}"), f"Algorithm-Generated/{flavour}{i}.json")[0]
        for i in range(n)
    ]


def share(schema: ErrorSchema, owner) -> None:
    """Offer the schema to the projects that opted in to the shared library (its owner edits its scope)."""
    schema_services.schema_edit(
        schema=schema,
        user=owner,
        title=schema.title,
        context=schema.context,
        detection_text=schema.detection_text,
        category=schema.category,
        scope=SchemaScope.SHARED,
    )


def the_schema(project) -> ErrorSchema:
    return ErrorSchema.objects.get(project=project, key__contains="first_code")


# --- distillation -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_verified_cases_with_one_structure_merge_into_one_trusted_schema(project):
    traces = cases(project, 3)
    report = schema_services.schemas_distill(project=project)
    assert report.cases == 3
    schema = the_schema(project)
    assert schema.status == SchemaStatus.TRUSTED and schema.exemplars.count() == 3
    assert set(schema.exemplars.values_list("trace_id", flat=True)) == {t.pk for t in traces}
    assert schema.detection["role"] == "worker" and "tool_error" in schema.detection["signals"]
    assert "modulenotfounderror" in schema.detection["phrases"]
    actions = list(schema.events.order_by("id").values_list("action", flat=True))
    assert actions == [SchemaAction.CREATED, SchemaAction.PROMOTED]
    again = schema_services.schemas_distill(project=project)  # idempotent: nothing new to learn
    assert again.cases == 0 and schema.exemplars.count() == 3


@pytest.mark.django_db
def test_a_case_added_later_merges_into_the_existing_schema(project):
    cases(project, 2)
    schema_services.schemas_distill(project=project)
    cases(project, 1, flavour="numpy")
    report = schema_services.schemas_distill(project=project)
    assert report.merged == 1 and report.created == 0
    assert the_schema(project).exemplars.count() == 3
    assert the_schema(project).events.filter(action=SchemaAction.MERGED).exists()


@pytest.mark.django_db
def test_one_verified_case_stays_a_candidate(project):
    cases(project, 1)
    schema_services.schemas_distill(project=project)
    assert the_schema(project).status == SchemaStatus.CANDIDATE


def upload_as(project, user, raw: bytes, name: str) -> list[Trace]:
    """An upload through the site by ``user`` (the browser and the API take this path)."""
    from tracing import services as tracing_services

    jobs = tracing_services.ingest_jobs_create(
        project=project, files=[incoming_bytes(name, raw)], user=user, enqueue=False
    )
    jobs = [tracing_services.ingest_job_run(job_id=j.pk) for j in jobs]
    assert all(j.status == JobStatus.SUCCEEDED for j in jobs), [j.error for j in jobs]
    return list(Trace.objects.filter(pk__in=[t for j in jobs for t in j.trace_ids]).order_by("pk"))


@pytest.mark.django_db
def test_everything_one_person_uploads_is_one_piece_of_evidence(project, make_user):
    mallory, alice = make_user("mallory"), make_user("alice")
    traces = upload_as(project, mallory, zipped(failing_import("a"), failing_import("b")), "two.zip")
    traces += upload_as(
        project, mallory, json.dumps(failing_import("c")).encode(), "Algorithm-Generated/c.json"
    )
    assert len(traces) == 3
    schema_services.schemas_distill(project=project)
    schema = the_schema(project)
    assert schema.exemplars.count() == 3 and schema_services.independent_cases(schema) == 1
    assert schema.status == SchemaStatus.CANDIDATE
    upload_as(project, alice, json.dumps(failing_import("d")).encode(), "Algorithm-Generated/d.json")
    schema_services.schemas_distill(project=project)
    schema.refresh_from_db()
    assert schema.status == SchemaStatus.TRUSTED  # a second, independent source


@pytest.mark.django_db
def test_an_annotators_label_alone_is_not_distilled(project):
    (trace,) = upload(project, failing_import())
    GoldLabel.objects.filter(trace=trace).update(source=LabelSource.ANNOTATOR)
    assert schema_services.schemas_distill(project=project).cases == 0
    assert not ErrorSchema.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_a_counterfactual_confirmed_verdict_is_a_verified_case(project):
    (trace,) = upload(project, failing_import())
    GoldLabel.objects.filter(trace=trace).delete()
    run = services.run_create(project=project, method="heuristic", trace_ids=[trace.pk], enqueue=False)
    Verdict.objects.create(
        run=run, trace=trace, method="counterfactual", agent_name="Coder_Expert", step_index=1
    )
    report = schema_services.schemas_distill(project=project)
    assert report.cases == 1
    assert SchemaExemplar.objects.get(trace=trace).source == "counterfactual"


# --- retrieval --------------------------------------------------------------------------------------------------------


def source_for(trace: Trace) -> SchemaSource:
    return SchemaSource.for_trace(trace)


def query_for(trace: Trace) -> features.Query:
    from attribution.methods.heuristic import METHOD as heuristic
    from attribution.selectors import trace_view

    view = trace_view(trace)
    return features.query_of(view, features.shape_of(view, heuristic.run(view).details["signals"]))


@pytest.mark.django_db
def test_leave_one_out_a_trace_never_uses_a_schema_that_needs_its_own_case(project):
    first, second = cases(project, 2)
    (fresh,) = upload(project, failing_import("polars"))
    GoldLabel.objects.filter(trace=fresh).delete()  # a new, unlabelled run
    schema_services.schemas_distill(project=project)
    schema = the_schema(project)
    assert schema.status == SchemaStatus.TRUSTED
    # Without its own case, the schema has one independent case left: not enough for either labelled trace.
    assert [r.id for r in source_for(first).retrieve(query_for(first))] == []
    assert [r.id for r in source_for(second).retrieve(query_for(second))] == []
    used = source_for(fresh).retrieve(query_for(fresh))
    assert [r.id for r in used] == [schema.pk] and not used[0].left_out and used[0].cases == 2


@pytest.mark.django_db
def test_leave_one_out_rebuilds_the_schema_without_the_trace(project):
    traces = cases(project, 3)
    schema_services.schemas_distill(project=project)
    (used,) = source_for(traces[0]).retrieve(query_for(traces[0]))
    assert used.left_out and used.cases == 2
    assert (
        used.detection
        == features.aggregate([e.features for e in the_schema(project).exemplars.exclude(trace=traces[0])])[
            "detection"
        ]
    )


@pytest.mark.django_db
def test_nothing_below_the_similarity_floor_is_returned(project):
    cases(project, 2)
    schema_services.schemas_distill(project=project)
    unrelated = features.Query(style="group", terms=("roleworker", "kindmessage", "agentsomeoneelse"))
    assert index.retrieve(project_id=project.pk, query=unrelated, use_cache=False)[0] == []
    assert (
        index.retrieve(
            project_id=project.pk,
            query=features.Query(style="orchestrated", terms=tuple(the_schema(project).search_text.split())),
            use_cache=False,
        )[0]
        == []
    )  # another style: filtered out


@pytest.mark.django_db
def test_the_hot_cache_answers_a_repeated_fingerprint_until_a_schema_changes(project, owner):
    cases(project, 2)
    schema_services.schemas_distill(project=project)
    query = features.Query(style="group", terms=tuple(the_schema(project).search_text.split()))
    first, cached = index.retrieve(project_id=project.pk, query=query)
    assert len(first) == 1 and not cached
    again, cached = index.retrieve(project_id=project.pk, query=query)
    assert cached and again == first
    schema_services.schema_retire(schema=the_schema(project), user=owner)
    after, cached = index.retrieve(project_id=project.pk, query=query)
    assert not cached and after == []


@pytest.mark.django_db
def test_projects_are_isolated_unless_they_opt_in_to_shared_schemas(project, make_project, owner):
    cases(project, 2)
    schema_services.schemas_distill(project=project)
    other = make_project("Beta")
    query = features.Query(style="group", terms=tuple(the_schema(project).search_text.split()))
    assert index.retrieve(project_id=other.pk, query=query, use_cache=False)[0] == []
    schema = the_schema(project)
    share(schema, owner)
    assert index.retrieve(project_id=other.pk, query=query, use_cache=False)[0] == []  # not opted in
    schema_services.library_settings_save(project=other, use_shared_library=True)
    assert SchemaLibrarySettings.objects.get(project=other).use_shared_library
    assert [c["id"] for c in index.retrieve(project_id=other.pk, query=query, use_cache=False)[0]] == [
        schema.pk
    ]


@pytest.mark.django_db
def test_a_shared_schemas_page_shows_its_own_projects_uses_and_only_counts_the_others(
    project, make_project, owner, owner_client
):
    """Another project that opted in to the library uses the schema on its own traces: their names stay theirs."""
    from django.urls import reverse

    cases(project, 2)
    schema_services.schemas_distill(project=project)
    schema = the_schema(project)
    share(schema, owner)
    other = make_project("Bravo")
    schema_services.library_settings_save(project=other, use_shared_library=True)
    (theirs,) = upload(other, failing_import("scipy"), "Algorithm-Generated/bravo-secret-incident.json")
    GoldLabel.objects.filter(trace=theirs).delete()
    run = services.run_create(project=other, method="schema_guided", trace_ids=[theirs.pk], enqueue=False)
    services.run_execute_inline(run=run)
    assert SchemaUse.objects.filter(schema=schema, trace=theirs).exists()
    page = owner_client.get(reverse("attribution:schema_detail", args=[project.slug, schema.pk]))
    assert page.status_code == 200
    assert b"bravo-secret-incident" not in page.content
    assert b"And 1 use in other projects" in page.content


# --- the method -------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_schema_guided_verdicts_name_the_schemas_that_informed_them_and_uses_are_settled(project):
    cases(project, 2)
    (fresh,) = upload(project, failing_import("scipy"))
    label = GoldLabel.objects.get(trace=fresh)
    label.delete()
    schema_services.schemas_distill(project=project)
    run = services.run_create(project=project, method="schema_guided", trace_ids=[fresh.pk], enqueue=False)
    run = services.run_execute_inline(run=run)
    verdict = Verdict.objects.get(run=run)
    schema = the_schema(project)
    assert [s["id"] for s in verdict.details["schemas"]] == [schema.pk]
    assert verdict.details["schemas"][0]["step"] == 1 and verdict.step_index == 1
    schema.refresh_from_db()
    assert schema.retrievals == 1 and schema.last_used_at is not None
    # The verified label arrives: the use is scored once, however often distillation runs.
    GoldLabel.objects.create(
        trace=fresh, agent_name="Coder_Expert", step_index=1, source=LabelSource.IMPORTED
    )
    schema_services.schemas_distill(project=project)
    schema_services.schemas_distill(project=project)
    schema.refresh_from_db()
    assert (schema.hits, schema.misses) == (1, 0)
    assert SchemaUse.objects.get(verdict=verdict).outcome == "hit"


def _trace(n: int) -> TraceView:
    steps = tuple(StepView(index=i, agent=f"A{i % 2}", kind="message", content=f"step {i}") for i in range(n))
    return TraceView(
        trace_id=1,
        name="t",
        question="q",
        ground_truth="",
        outcome="failed",
        steps=steps,
        agents=("A0", "A1"),
    )


def _schema(pk: int) -> Retrieved:
    return Retrieved(
        id=pk,
        title=f"s{pk}",
        category="",
        context="",
        detection={},
        detection_text="",
        similarity=1.0,
        cases=2,
        left_out=False,
    )


def test_one_schema_alone_never_overrides_the_heuristic_but_two_that_agree_do():
    trace = _trace(4)
    base = MethodResult(agent="A0", step=0, confidence=0.5, reason="heuristic", scores=[1.0, 0.9, 0.1, 0.1])
    roles = ("worker",) * 4
    one = _offline(trace, base, roles, [(_schema(1), 1, 1.0)], {"schemas": []})
    assert one.step == 0 and not one.details["overrode"]
    assert one.scores[1] == 1.0  # the schema did raise step 1's suspicion
    two = _offline(
        trace,
        base,
        roles,
        [(_schema(1), 1, 1.0), (_schema(2), 1, 1.0)],
        {"schemas": [{"step": 1, "title": "s1"}, {"step": 1, "title": "s2"}]},
    )
    assert two.step == 1 and two.agent == "A1" and two.details["overrode"] and "overriding" in two.reason


def test_schema_guided_is_registered_and_works_without_a_model():
    method = get_method("schema_guided")
    assert not method.needs_llm and method.wants_llm
    result = method.run(_trace(3), llm=None, schemas=None)
    assert result.details["schemas"] == [] and len(result.scores) == 3


# --- commands and the worker ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_evaluate_reports_schema_guided_beside_heuristic(project):
    cases(project, 3)
    out = io.StringIO()
    call_command("evaluate", project=project.name, method="schema_guided", json=True, stdout=out)
    result = json.loads(out.getvalue())
    assert result["method"] == "schema_guided" and result["compared"]["method"] == "heuristic"
    assert result["n"] == result["compared"]["n"] == 3
    assert ErrorSchema.objects.filter(project=project).exists()  # distilled first
    assert "random" in result["baselines"]


@pytest.mark.django_db
def test_the_benchmark_prints_percentiles(db):
    out = io.StringIO()
    call_command("schema_benchmark", schemas=300, queries=10, json=True, stdout=out)
    result = json.loads(out.getvalue())
    assert result["schemas"] == 300 and result["queries"] == 10
    assert {"p50_ms", "p95_ms", "hot_p50_ms", "hot_p95_ms"} <= set(result)
    assert result["p50_ms"] <= result["p95_ms"]


@pytest.mark.django_db(transaction=True)
def test_distillation_runs_on_a_real_worker(celery_worker, project, owner_client):
    cases(project, 2)
    response = owner_client.post(f"/attribution/projects/{project.slug}/schemas/distill/")
    assert response.status_code == 302
    schema = wait_for(
        lambda: ErrorSchema.objects.filter(project=project, status=SchemaStatus.TRUSTED).first()
    )
    assert schema.exemplars.count() == 2


@pytest.mark.django_db
def test_a_changed_schema_is_never_served_from_a_stale_card(project, owner):
    cases(project, 2)
    schema_services.schemas_distill(project=project)
    schema = the_schema(project)
    query = features.Query(style="group", terms=tuple(schema.search_text.split()))
    (card,), _ = index.retrieve(project_id=project.pk, query=query)
    assert card["title"] == schema.title
    assert index.hot_cache().exists(index.key("card", schema.pk))  # the card store holds it now
    schema_services.schema_edit(
        schema=schema,
        user=owner,
        title="Renamed",
        context=schema.context,
        detection_text=schema.detection_text,
        category=schema.category,
        scope=schema.scope,
    )
    (card,), cached = index.retrieve(project_id=project.pk, query=query)
    assert card["title"] == "Renamed" and not cached


@pytest.mark.django_db
def test_the_distill_command_reports_what_it_did(project):
    cases(project, 2)
    out = io.StringIO()
    call_command("distill_schemas", project=project.name, offline=True, json=True, stdout=out)
    assert json.loads(out.getvalue()) == {
        "cases": 2,
        "created": 1,
        "merged": 0,
        "promoted": 1,
        "polished": 0,
        "settled": 0,
    }
    again = io.StringIO()
    call_command("distill_schemas", project=project.name, offline=True, stdout=again)
    assert "0 new verified case(s) -> 0 new schema(s)" in again.getvalue()


def _case(**extra):
    base = {
        "style": "orchestrated",
        "role": "worker",
        "rank": 1,
        "kind": "message",
        "agent": "websurfer",
        "agent_name": "WebSurfer",
        "signals": [],
        "primary": "none",
        "phrases": [],
        "around": ["message", "message"],
        "source_format": "whowhen",
        "step": 3,
        "steps": 20,
    }
    return base | extra


def test_a_schema_title_reads_as_a_sentence_with_the_agents_own_spelling():
    built = features.aggregate([_case(), _case(step=5)])
    assert built["title"] == "WebSurfer's second turn in orchestrated runs: an unverified claim"


def test_schema_titles_name_the_role_when_agents_differ_and_the_failure_in_words():
    built = features.aggregate(
        [
            _case(
                agent="coder",
                agent_name="Coder",
                primary="tool_error",
                role="worker",
                style="group",
                rank=0,
                signals=["tool_error"],
            ),
            _case(
                agent="analyst",
                agent_name="Analyst",
                primary="tool_error",
                role="worker",
                style="group",
                rank=0,
                signals=["tool_error"],
            ),
        ]
    )
    assert built["title"] == "A worker's first turn in group chats: a failing tool call"
    planner = features.aggregate(
        [_case(agent="", agent_name="", role="planner-message", primary="accepted", rank=4)]
    )
    assert (
        planner["title"] == "The planner's fourth or later message in orchestrated runs: "
        "a value accepted without checking"
    )
    assert all("_" not in features.aggregate([_case(primary=p)])["title"] for p in features.WEIGHTS)


def test_a_schema_distilled_before_names_were_kept_still_gets_a_readable_title():
    old = _case()
    del old["agent_name"]
    assert (
        features.aggregate([old])["title"]
        == "websurfer's second turn in orchestrated runs: an unverified claim"
    )
