"""Automatic attribution: traces that arrive from outside -- uploads, the REST API, the OTLP receiver -- are attributed
with the project's default method, without anyone pressing Attribute. Off by default; a project turns it on for its
failed traces or for every trace (the runs page).

How nothing is missed and nothing is done twice:

- tracing calls ``traces_arrived`` inside the transaction that writes the new traces (``tracing.extensions``); for a
  project that attributes automatically it writes one ``AutoAttributePending`` row per trace there, so the marks
  commit with the traces or not at all;
- a Celery beat sweep (``auto_attribute_sweep``, every ``CULPRIT_AUTO_ATTRIBUTE_EVERY`` seconds) takes the marks of
  complete traces -- a file's or the API's trace is complete when it commits; an OTLP trace once it is
  ``CULPRIT_AUTO_ATTRIBUTE_SETTLE`` seconds old with no build queued and no span waiting (a streamed trace grows until
  then, and its outcome often comes with its root span, which ends last) -- deletes them and creates one run over the
  traces that qualify, in one transaction per project: a burst of uploads becomes one run, not one each.

A run that cannot start (a default method that needs a model the project has none of, a learned method without a
default model) leaves the marks in place and says why on the runs page (``auto_error``); the next sweep tries again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings as django_settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from tracing.models import OtlpPendingBuild, OtlpSpan, Outcome, Project, Trace

from ..methods import MethodError
from ..models import AttributionRun, AutoAttribute, AutoAttributePending, ProjectAttribution

logger = logging.getLogger(__name__)

MAX_PER_RUN = 20_000  # traces per automatic run; more wait for the next sweep


def traces_arrived(project_id: int, trace_ids: list[int]) -> None:
    """tracing's hook (in the transaction that wrote the traces): mark them for the next sweep if the project
    attributes new traces automatically. One query when it does not."""
    mode = (
        ProjectAttribution.objects.filter(project_id=project_id)
        .values_list("auto_attribute", flat=True)
        .first()
    )
    if mode in (None, AutoAttribute.OFF):
        return
    AutoAttributePending.objects.bulk_create(
        [AutoAttributePending(trace_id=pk, project_id=project_id) for pk in trace_ids], ignore_conflicts=True
    )


def auto_attribute_set(
    *, project: Project, mode: str, method: str = "", actor: AbstractBaseUser | None = None
) -> ProjectAttribution:
    """Turn automatic attribution off, or on for failed or for all new traces, with ``method`` (which becomes the
    project's default method, the one its Attribute forms preselect; empty: keep the default). Traces already in the
    project are not touched (attribute them from the runs page); turning it off forgets the traces still waiting."""
    from tracing.services import audit_record

    from ..methods import get_method

    if mode not in AutoAttribute.values:
        raise ValueError(f"unknown automatic attribution mode {mode!r}")
    if method:
        get_method(method)  # MethodError for an unknown name
    with transaction.atomic():
        settings, _ = ProjectAttribution.objects.select_for_update().get_or_create(project=project)
        settings.auto_attribute, settings.auto_error = mode, ""
        settings.default_method = method or settings.default_method
        settings.save(update_fields=["auto_attribute", "auto_error", "default_method", "updated_at"])
        if mode == AutoAttribute.OFF:
            AutoAttributePending.objects.filter(project=project).delete()
        audit_record(
            action="attribution.auto",
            project=project,
            actor=actor,
            target=mode,
            details={"method": settings.default_method},
        )
    return settings


def auto_attribute_check(*, project: Project, method: str = "") -> None:
    """Raise ``MethodError`` when the sweep could not start a run of ``method`` (empty: the project's default) for
    this project -- a method that needs a model the project has none of, the learned method without a default trained
    model (``runs.run_ready``, the rules ``run_create`` applies)."""
    from .runs import run_ready

    if not method:
        row = ProjectAttribution.objects.filter(project=project).first()
        method = row.default_method if row is not None else ProjectAttribution().default_method
    run_ready(project=project, method=method)


def auto_attribute_sweep(*, enqueue: bool = True, now=None) -> list[AttributionRun]:
    """Celery beat: one run per project over its settled marks (see the module's docstring). Returns the runs."""
    from .runs import run_create

    now = now or timezone.now()
    settled = now - timedelta(seconds=django_settings.CULPRIT_AUTO_ATTRIBUTE_SETTLE)
    runs = []
    waiting = AutoAttributePending.objects.all()
    for project_id in waiting.order_by().values_list("project_id", flat=True).distinct():
        with transaction.atomic():
            # One sweep per project at a time: a second one waits here, then finds the marks gone.
            settings = ProjectAttribution.objects.select_for_update().filter(project_id=project_id).first()
            if settings is None or settings.auto_attribute == AutoAttribute.OFF:
                AutoAttributePending.objects.filter(project_id=project_id).delete()
                continue
            marks = _settled_marks(
                list(
                    waiting.filter(project_id=project_id)
                    .order_by("trace_id")
                    .values_list("trace_id", "trace__source_format", "trace__external_id", "arrived_at")[
                        :MAX_PER_RUN
                    ]
                ),
                project_id,
                settled,
            )
            if not marks:
                continue
            ids = marks
            if settings.auto_attribute == AutoAttribute.FAILED:
                ids = list(
                    Trace.objects.filter(pk__in=marks, outcome=Outcome.FAILED)
                    .order_by("pk")
                    .values_list("pk", flat=True)
                )
            if ids:
                try:
                    run = run_create(
                        project=settings.project,
                        method=settings.default_method,
                        trace_ids=ids,
                        description=f"automatic: {len(ids)} new trace{'s' if len(ids) != 1 else ''}",
                        enqueue=enqueue,
                    )
                except MethodError as exc:
                    if settings.auto_error != str(exc)[:500]:
                        settings.auto_error = str(exc)[:500]
                        settings.save(update_fields=["auto_error", "updated_at"])
                    logger.warning("automatic attribution of project %s could not start: %s", project_id, exc)
                    continue
                runs.append(run)
            AutoAttributePending.objects.filter(project_id=project_id, trace_id__in=marks).delete()
            if settings.auto_error:
                settings.auto_error = ""
                settings.save(update_fields=["auto_error", "updated_at"])
    return runs


def _settled_marks(
    marks: list[tuple[int, str, str, datetime]], project_id: int, settled: datetime
) -> list[int]:
    """The marked traces that stopped growing. A trace from a file or the API is complete when it commits; an OTLP
    trace is taken once it arrived before ``settled`` and has no build queued and no span waiting to be built (two
    queries for the whole list)."""
    from tracing.services.otlp_build import OTLP_FORMAT

    streamed = [external for _, fmt, external, _ in marks if fmt == OTLP_FORMAT]
    growing: set[str] = set()
    if streamed:
        growing |= set(
            OtlpPendingBuild.objects.filter(project_id=project_id, trace_id__in=streamed).values_list(
                "trace_id", flat=True
            )
        )
        growing |= set(
            OtlpSpan.objects.filter(project_id=project_id, trace_id__in=streamed, built=False)
            .values_list("trace_id", flat=True)
            .distinct()
        )
    return [
        pk
        for pk, fmt, external, arrived in marks
        if fmt != OTLP_FORMAT or (arrived <= settled and external not in growing)
    ]
