from __future__ import annotations

from celery import group, shared_task

from tracing.job_tasks import JobTask

from . import services
from .models import AttributionRun, InjectionCampaign, RunStatus, Verdict

# Traces per enqueue round trip; a 10,000-trace run is queued in 10 batches.
FAN_OUT_CHUNK = 1000

# Every task of a run or a campaign beats the heartbeat of its run or campaign while it works (JobTask.heartbeat):
# a worker killed in the middle of a trace leaves the run quiet, and the reaper (services.jobs_reap) restarts it
# within a minute instead of the hour the broker takes to give the lost message back.


def _run_fail(run_id: int, reason: str) -> None:
    services.run_fail(run_id=run_id, reason=reason)


def _campaign_fail(campaign_id: int, reason: str) -> None:
    InjectionCampaign.fail_live(campaign_id, reason)


@shared_task(base=JobTask, bind=True, name="attribution.start_run", fail_job=_run_fail)
def start_run_task(self, run_id: int) -> None:
    """Fan a run out into one task per trace. Re-delivered after a crash, or sent again by the reaper, it queues
    only the traces still missing a verdict; a duplicate trace task is harmless (the verdict is unique per run and
    trace)."""
    with self.heartbeat(AttributionRun.live_rows(run_id)):
        claimed = services.run_claim(run_id=run_id)
        run = AttributionRun.objects.get(pk=run_id)
        if run.status != RunStatus.RUNNING:
            return
        if claimed:
            services.run_prepare(run=run)  # once, before any trace: e.g. the heuristic's calibrated priors
        done = set(Verdict.objects.filter(run=run).values_list("trace_id", flat=True))
        missing = [t for t in run.trace_ids if t not in done]
        if services.is_offline(run):  # batches of traces: one task, one transaction, one run-row update each
            size = services.offline_batch_size(len(missing))
            batches = [missing[i : i + size] for i in range(0, len(missing), size)]
            for start in range(0, len(batches), FAN_OUT_CHUNK):
                group(
                    attribute_traces_task.s(run_id, b) for b in batches[start : start + FAN_OUT_CHUNK]
                ).apply_async()
        else:
            for start in range(0, len(missing), FAN_OUT_CHUNK):
                group(
                    attribute_trace_task.s(run_id, t) for t in missing[start : start + FAN_OUT_CHUNK]
                ).apply_async()
        if not missing:
            services.run_execute_inline(run=run)  # nothing left: just close it


# Step-by-step may make one call per step; at the gateway's 120 s timeout a long trace needs far more than the default
# 10 minutes, so this task alone gets an hour before it is stopped.
@shared_task(
    base=JobTask,
    bind=True,
    name="attribution.attribute_trace",
    fail_job=_run_fail,
    soft_time_limit=3600,
    time_limit=3660,
)
def attribute_trace_task(self, run_id: int, trace_id: int) -> None:
    with self.heartbeat(AttributionRun.live_rows(run_id)):
        services.run_trace(run_id=run_id, trace_id=trace_id)


@shared_task(
    base=JobTask,
    bind=True,
    name="attribution.attribute_traces",
    fail_job=_run_fail,
    soft_time_limit=600,
    time_limit=660,
)
def attribute_traces_task(self, run_id: int, trace_ids: list[int]) -> None:
    """A batch of an offline method's traces (``services.OFFLINE_BATCH``); a redelivery skips the written ones."""
    with self.heartbeat(AttributionRun.live_rows(run_id)):
        services.run_traces(run_id=run_id, trace_ids=trace_ids)


@shared_task(base=JobTask, bind=True, name="attribution.generate_sandbox_cases")
def generate_sandbox_cases_task(
    self, project_id: int, runs: int, seed: int, clean: int = 0, version: int = 1, mode: str = "injected"
) -> None:
    # Idempotent by trace name: a re-delivery only fills in what the first delivery did not write. ``version``
    # defaults to 1 for messages queued before it existed; the pages send 2 unless v1 is asked for.
    from tracing.models import Project

    project = Project.objects.get(pk=project_id)
    services.sandbox_cases_generate(project=project, runs=runs, seed=seed, version=version, mode=mode)
    if clean:
        services.sandbox_clean_runs_generate(project=project, runs=clean, seed=seed)


@shared_task(base=JobTask, bind=True, name="attribution.start_campaign", fail_job=_campaign_fail)
def start_campaign_task(self, campaign_id: int) -> None:
    """Plan an injection campaign and fan its injections out as a group, one task each. Re-delivered after a crash,
    it plans nothing twice (keys are unique) and queues only the injections still pending.

    No chord: completion is counted in the database (the last injection to settle closes the campaign), which needs
    no result backend and survives a worker dying between the group and its callback."""
    from .models import CampaignStatus, Injection, InjectionStatus

    with self.heartbeat(InjectionCampaign.live_rows(campaign_id)):
        services.campaign_claim(campaign_id=campaign_id)
        campaign = InjectionCampaign.objects.get(pk=campaign_id)
        if campaign.status != CampaignStatus.RUNNING:
            return
        services.campaign_plan(campaign=campaign)
        pending = list(
            Injection.objects.filter(campaign=campaign, status=InjectionStatus.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for start in range(0, len(pending), FAN_OUT_CHUNK):
            group(inject_task.s(i) for i in pending[start : start + FAN_OUT_CHUNK]).apply_async()
        services.campaign_finish_if_done(campaign_id)  # nothing pending: close it now


@shared_task(base=JobTask, bind=True, name="attribution.inject", soft_time_limit=3600, time_limit=3660)
def inject_task(self, injection_id: int) -> None:
    from .models import Injection

    campaign_id = Injection.objects.values_list("campaign_id", flat=True).filter(pk=injection_id).first()
    with self.heartbeat(InjectionCampaign.live_rows(campaign_id or 0)):
        services.injection_execute(injection_id=injection_id)


@shared_task(name="attribution.reap_jobs")
def reap_jobs_task(stale_after: int | None = None, running_after: int | None = None) -> dict[str, int]:
    """Celery beat, every CULPRIT_REAP_EVERY seconds: restart runs and campaigns whose worker vanished (running with
    a heartbeat older than CULPRIT_REAP_RUNNING_AFTER, queued for longer than stale_after), and trainings gone
    quiet; fail those out of attempts."""
    from django.conf import settings

    return services.jobs_reap(
        stale_after=stale_after or settings.CULPRIT_REAP_RUN_AFTER,
        running_after=running_after or settings.CULPRIT_REAP_RUNNING_AFTER,
    )


@shared_task(
    base=JobTask, bind=True, name="attribution.distill_schemas", soft_time_limit=3600, time_limit=3660
)
def distill_schemas_task(self, project_id: int) -> None:
    """Distil the project's verified cases into error schemas. Re-delivery is harmless: cases already distilled are
    skipped (an exemplar is unique per schema, trace and step)."""
    from tracing.models import Project

    from .schemas.services import schemas_distill

    schemas_distill(project=Project.objects.get(pk=project_id))


@shared_task(
    base=JobTask, bind=True, name="attribution.train_attributor", soft_time_limit=3600, time_limit=3660
)
def train_attributor_task(self, model_id: int) -> None:
    """Train one learned attributor. Everything is written at the end in one transaction: a re-delivery after a
    crash trains again from scratch."""
    from .learning.services import attributor_train

    attributor_train(model_id=model_id)


@shared_task(name="attribution.retrain_due")
def retrain_due_task() -> list[int]:
    """Celery beat: queue automatic retrains of default models whose projects gained enough labels."""
    from .learning.services import attributors_retrain_due

    return [m.pk for m in attributors_retrain_due()]


@shared_task(name="attribution.auto_attribute")
def auto_attribute_task() -> list[int]:
    """Celery beat: attribute the traces that arrived in projects that attribute new traces automatically."""
    from .services.auto import auto_attribute_sweep

    return [run.pk for run in auto_attribute_sweep()]
