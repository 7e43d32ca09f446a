"""Writes of the error-schema cache: distilling verified cases into schemas, promotion, owner actions, and the
statistics of their use.

Poisoning defence, in the order a planted schema would meet it:
1. Only verified cases are distilled (``selectors.verified_cases``): human gold that came with the data, adjudicated
   labels, injected faults, counterfactual-confirmed verdicts. A single annotator's label is not verified.
2. The structured parts of a schema (what retrieval and the offline detection read) are recomputed from the cases'
   extracted features by ``features.aggregate`` with a quorum: one odd case cannot rewrite a schema, and an LLM only
   ever writes the prose.
3. A new schema is a ``candidate``, never retrieved. Promotion needs two *independent* verified cases (different
   uploads, not derived from one original: ``independence_of``) or an owner's approval.
4. Every change is in the audit log (``SchemaEvent``); every case is kept as an exemplar (provenance).
5. At attribution time, schemas must agree (consensus) before they override a verdict; see the method.
6. A project reads only its own schemas unless an owner opts in to the shared library.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tracing.models import Project, Trace
from tracing.services import audit_record

from ..models import (
    ErrorSchema,
    SchemaAction,
    SchemaEvent,
    SchemaExemplar,
    SchemaLibrarySettings,
    SchemaScope,
    SchemaStatus,
    SchemaUse,
    UseOutcome,
    Verdict,
)
from . import features, index
from .selectors import PROMOTION_CASES, VerifiedCase, verified_cases

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from ..llm import LlmClient

logger = logging.getLogger(__name__)


@dataclass
class DistillReport:
    cases: int = 0  # verified cases distilled this time (already distilled ones are skipped)
    created: int = 0
    merged: int = 0
    promoted: int = 0
    polished: int = 0  # schemas whose prose an LLM wrote
    settled: int = 0  # earlier uses of schemas scored against the verified label
    schema_ids: list[int] = field(default_factory=list)


def independence_of(trace: Trace) -> str:
    """Cases with the same value are one piece of evidence, however many traces carry them:
    - everything one person uploaded (files, zips, batches): one source, so one member cannot make a schema trusted
      alone, however many crafted traces they upload;
    - a file imported by the operator from the command line (no uploader): that file, since each such file is a
      separately labelled run of a curated collection;
    - a trace without an upload (injected faults, replays, OTLP): its original trace and everything derived from it.
    """
    root = trace.derived_from if trace.derived_from_id else trace
    if root.upload_id:
        uploader = root.upload.uploaded_by_id if root.upload else None
        return f"user:{uploader}" if uploader else f"upload:{root.upload_id}"
    return f"trace:{root.pk}"


def schemas_distill(*, project: Project, llm: LlmClient | None = None, polish: bool = True) -> DistillReport:
    """Distil every verified case of the project not distilled yet. Idempotent (an exemplar is unique per schema,
    trace and step). With ``llm`` (or the project's configured model when ``polish``), the prose of new and changed
    schemas is written by the model, after the rows are committed."""
    from ..methods.heuristic import METHOD as heuristic
    from ..selectors import trace_view

    report = DistillReport()
    done = set(SchemaExemplar.objects.filter(schema__project=project).values_list("trace_id", "step_index"))
    grouped: dict[str, list[tuple[VerifiedCase, dict[str, Any]]]] = defaultdict(list)
    pending = set(
        SchemaUse.objects.filter(trace__project=project, outcome=UseOutcome.PENDING).values_list(
            "trace_id", flat=True
        )
    )
    for case in verified_cases(project=project):
        if case.trace.pk in pending:
            report.settled += schema_uses_settle(trace=case.trace, gold_step=case.step_index)
        if (case.trace.pk, case.step_index) in done:
            continue
        view = trace_view(case.trace)
        if not view.steps or case.step_index >= len(view.steps):
            continue
        shape = features.shape_of(
            view, heuristic.run(view, with_ground_truth=True).details.get("signals", [])
        )
        feats = features.case_features(view, shape, step=case.step_index, agent=case.agent_name)
        grouped[features.schema_key(feats)].append((case, feats))
        report.cases += 1
    for key, cases in grouped.items():
        _merge(project, key, cases, report)
    if report.schema_ids:
        index.bump_generation(project.pk, shared=True, schema_ids=report.schema_ids)
        _after_commit(
            project, report, llm if llm is not None else (_project_llm(project) if polish else None)
        )
    return report


def _merge(
    project: Project, key: str, cases: list[tuple[VerifiedCase, dict[str, Any]]], report: DistillReport
) -> None:
    with transaction.atomic():
        schema, created = ErrorSchema.objects.select_for_update().get_or_create(
            project=project,
            key=key,
            defaults={"title": key, "style": cases[0][1]["style"], "distilled_by": "extractor"},
        )
        added = []
        for case, feats in cases:
            try:
                with transaction.atomic():
                    added.append(
                        SchemaExemplar.objects.create(
                            schema=schema,
                            trace=case.trace,
                            step_index=case.step_index,
                            agent_name=case.agent_name[:200],
                            source=case.source,
                            gold_label=case.gold_label,
                            verdict=case.verdict,
                            independence=independence_of(case.trace),
                            features=feats,
                        )
                    )
            except IntegrityError:  # another distillation got there first
                continue
        if not added:
            return
        _refresh(schema)
        SchemaEvent.objects.create(
            schema=schema,
            action=SchemaAction.CREATED if created else SchemaAction.MERGED,
            detail={
                "cases": [{"trace": e.trace_id, "step": e.step_index, "source": e.source} for e in added]
            },
        )
        report.created += created
        report.merged += 0 if created else 1
        if _promote_if_earned(schema):
            report.promoted += 1
        report.schema_ids.append(schema.pk)


def _refresh(schema: ErrorSchema) -> None:
    """Recompute the structured parts from every exemplar; owner-edited prose stays."""
    built = features.aggregate([e.features for e in schema.exemplars.all()])
    schema.style, schema.signature, schema.detection = built["style"], built["signature"], built["detection"]
    schema.search_text = built["search_text"]
    if not schema.edited and schema.distilled_by == "extractor":
        schema.title, schema.context, schema.detection_text = (
            built["title"],
            built["context"],
            built["detection_text"],
        )
        schema.category = built["category"]
    schema.save()


def independent_cases(schema: ErrorSchema) -> int:
    return schema.exemplars.values("independence").distinct().count()


def _promote_if_earned(schema: ErrorSchema) -> bool:
    if schema.status != SchemaStatus.CANDIDATE or independent_cases(schema) < PROMOTION_CASES:
        return False
    changed = ErrorSchema.objects.filter(pk=schema.pk, status=SchemaStatus.CANDIDATE).update(
        status=SchemaStatus.TRUSTED
    )
    if changed:
        schema.status = SchemaStatus.TRUSTED
        SchemaEvent.objects.create(
            schema=schema,
            action=SchemaAction.PROMOTED,
            detail={"independent_cases": independent_cases(schema)},
        )
        audit_record(
            action="schema.promoted",
            project=schema.project,
            target=schema.title[:300],
            details={"schema": schema.pk, "independent_cases": independent_cases(schema)},
        )
    return bool(changed)


def _project_llm(project: Project) -> LlmClient | None:
    from ..models import ProjectLlmSettings

    if not ProjectLlmSettings.objects.filter(project=project).exclude(model="").exists():
        return None
    from ..llm import LlmClient

    return LlmClient.for_project(project, method="schema_distill")


def _after_commit(project: Project, report: DistillReport, llm: LlmClient | None) -> None:
    """Network work, outside any transaction: the LLM's prose and the embeddings."""
    if llm is not None:
        for schema in ErrorSchema.objects.filter(pk__in=report.schema_ids, edited=False):
            if _polish(schema, llm):
                report.polished += 1
    if index.embedding_model():
        rows = list(ErrorSchema.objects.filter(pk__in=report.schema_ids))
        vectors = index.embed([f"{s.title}\n{s.search_text}" for s in rows], project_id=project.pk)
        for schema, vector in zip(rows, vectors or [], strict=False):
            ErrorSchema.objects.filter(pk=schema.pk).update(embedding=vector)
    index.bump_generation(project.pk, shared=True, schema_ids=report.schema_ids)


def _polish(schema: ErrorSchema, llm: LlmClient) -> bool:
    from ..methods.base import MethodError
    from . import prompts

    try:
        answer = llm.complete_json(
            system=prompts.DISTIL_SYSTEM,
            user=prompts.distil_request(schema),
            purpose=f"schema {schema.pk} distillation",
            validate=prompts.check_distilled,
        )
    except MethodError as exc:
        logger.warning("schema %s: the model wrote no prose (%s); the extractor's stays", schema.pk, exc)
        return False
    fields = prompts.read_distilled(answer)
    updated = ErrorSchema.objects.filter(pk=schema.pk, edited=False).update(
        **fields, distilled_by=llm.model[:200], updated_at=timezone.now()
    )
    if updated:
        SchemaEvent.objects.create(
            schema=schema,
            action=SchemaAction.EDITED,
            detail={"by": "model", "model": llm.model, "title": fields["title"]},
        )
    return bool(updated)


# --- owner actions ----------------------------------------------------------------------------------------------------


def schema_approve(*, schema: ErrorSchema, user: AbstractBaseUser) -> ErrorSchema:
    """An owner vouches for a schema: it becomes trusted whatever its case count."""
    if schema.status == SchemaStatus.RETIRED:
        raise ValueError("a retired schema must be restored before it is approved")
    ErrorSchema.objects.filter(pk=schema.pk).update(
        status=SchemaStatus.TRUSTED, approved_by=user, approved_at=timezone.now(), updated_at=timezone.now()
    )
    SchemaEvent.objects.create(
        schema=schema, action=SchemaAction.APPROVED, actor=user, detail={"from": schema.status}
    )
    audit_record(
        action="schema.approved",
        project=schema.project,
        actor=user,
        target=schema.title[:300],
        details={"schema": schema.pk, "from": schema.status},
    )
    index.bump_generation(
        schema.project_id, shared=schema.scope == SchemaScope.SHARED, schema_ids=[schema.pk]
    )
    schema.refresh_from_db()
    return schema


def schema_retire(*, schema: ErrorSchema, user: AbstractBaseUser, reason: str = "") -> ErrorSchema:
    ErrorSchema.objects.filter(pk=schema.pk).update(status=SchemaStatus.RETIRED, updated_at=timezone.now())
    SchemaEvent.objects.create(
        schema=schema,
        action=SchemaAction.RETIRED,
        actor=user,
        detail={"from": schema.status, "reason": reason[:500]},
    )
    audit_record(
        action="schema.retired",
        project=schema.project,
        actor=user,
        target=schema.title[:300],
        details={"schema": schema.pk, "from": schema.status},
    )
    index.bump_generation(
        schema.project_id, shared=schema.scope == SchemaScope.SHARED, schema_ids=[schema.pk]
    )
    schema.refresh_from_db()
    return schema


def schema_restore(*, schema: ErrorSchema, user: AbstractBaseUser) -> ErrorSchema:
    """Back to candidate, then promoted again only if its cases (or an approval) earn it."""
    if schema.status != SchemaStatus.RETIRED:
        return schema
    ErrorSchema.objects.filter(pk=schema.pk).update(
        status=SchemaStatus.CANDIDATE, approved_by=None, approved_at=None, updated_at=timezone.now()
    )
    SchemaEvent.objects.create(schema=schema, action=SchemaAction.RESTORED, actor=user)
    schema.refresh_from_db()
    _promote_if_earned(schema)
    index.bump_generation(
        schema.project_id, shared=schema.scope == SchemaScope.SHARED, schema_ids=[schema.pk]
    )
    return schema


def schema_edit(
    *,
    schema: ErrorSchema,
    user: AbstractBaseUser,
    title: str,
    context: str,
    detection_text: str,
    category: str,
    scope: str,
) -> ErrorSchema:
    """An owner rewrites the prose or the scope. The structured detection is never edited by hand: it stays the
    aggregate of verified cases."""
    before = {
        "title": schema.title,
        "context": schema.context,
        "detection_text": schema.detection_text,
        "category": schema.category,
        "scope": schema.scope,
    }
    after = {
        "title": title,
        "context": context,
        "detection_text": detection_text,
        "category": category,
        "scope": scope,
    }
    changed = {k: [before[k], v] for k, v in after.items() if before[k] != v}
    if not changed:
        return schema
    ErrorSchema.objects.filter(pk=schema.pk).update(**after, edited=True, updated_at=timezone.now())
    action = SchemaAction.SHARED if set(changed) == {"scope"} else SchemaAction.EDITED
    SchemaEvent.objects.create(schema=schema, action=action, actor=user, detail={"changed": changed})
    index.bump_generation(schema.project_id, shared=True, schema_ids=[schema.pk])
    schema.refresh_from_db()
    return schema


def library_settings_save(*, project: Project, use_shared_library: bool) -> SchemaLibrarySettings:
    row, _ = SchemaLibrarySettings.objects.update_or_create(
        project=project, defaults={"use_shared_library": use_shared_library}
    )
    index.bump_generation(project.pk)
    return row


# --- use statistics ---------------------------------------------------------------------------------------------------


def schema_uses_record(*, verdict: Verdict) -> int:
    """The schemas that informed ``verdict`` (``details["schemas"]``) are counted as retrieved, once per verdict."""
    recorded = 0
    for used in (verdict.details or {}).get("schemas") or []:
        _, created = SchemaUse.objects.get_or_create(
            schema_id=used["id"],
            verdict=verdict,
            defaults={"trace_id": verdict.trace_id, "step_index": used.get("step")},
        )
        if created:
            ErrorSchema.objects.filter(pk=used["id"]).update(
                retrievals=F("retrievals") + 1, last_used_at=timezone.now()
            )
            recorded += 1
    return recorded


def schema_uses_settle(*, trace: Trace, gold_step: int) -> int:
    """A verified label for ``trace`` turns its pending uses into hits or misses, each exactly once."""
    settled = 0
    for use in SchemaUse.objects.filter(trace=trace, outcome=UseOutcome.PENDING):
        outcome = UseOutcome.HIT if use.step_index == gold_step else UseOutcome.MISS
        if SchemaUse.objects.filter(pk=use.pk, outcome=UseOutcome.PENDING).update(outcome=outcome):
            counter = "hits" if outcome == UseOutcome.HIT else "misses"
            ErrorSchema.objects.filter(pk=use.schema_id).update(**{counter: F(counter) + 1})
            settled += 1
    return settled


def schemas_distill_start(*, project: Project) -> None:
    """Queue a distillation of the project's verified cases once the request's transaction commits."""
    from ..tasks import distill_schemas_task

    project_id = project.pk
    transaction.on_commit(lambda: distill_schemas_task.delay(project_id))
