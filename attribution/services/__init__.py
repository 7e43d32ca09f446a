"""Writes for the attribution app, one module per sub-domain: runs and verdicts (``runs``), fault injection
(``campaigns``) and the reaper (``reaper``); import them from here."""

from __future__ import annotations

from .auto import auto_attribute_set, auto_attribute_sweep, traces_arrived
from .campaigns import (
    campaign_cancel,
    campaign_claim,
    campaign_cost_cap_refusal,
    campaign_create,
    campaign_execute_inline,
    campaign_finish_if_done,
    campaign_plan,
    campaigns_forget_traces,
    injection_execute,
    sandbox_cases_generate,
    sandbox_clean_runs_generate,
    sandbox_generate_start,
)
from .reaper import (
    MAX_REAPS,
    jobs_reap,
)
from .runs import (
    OFFLINE_BATCH,
    RunReplayStore,
    is_offline,
    llm_settings_save,
    llm_test_connection,
    offline_batch_size,
    replayer_for,
    run_cancel,
    run_claim,
    run_create,
    run_execute_inline,
    run_fail,
    run_prepare,
    run_trace,
    run_traces,
)

__all__ = [
    "auto_attribute_set",
    "auto_attribute_sweep",
    "traces_arrived",
    "MAX_REAPS",
    "OFFLINE_BATCH",
    "RunReplayStore",
    "campaign_cancel",
    "campaign_claim",
    "campaign_cost_cap_refusal",
    "campaign_create",
    "campaign_execute_inline",
    "campaign_finish_if_done",
    "campaign_plan",
    "campaigns_forget_traces",
    "injection_execute",
    "is_offline",
    "jobs_reap",
    "llm_settings_save",
    "llm_test_connection",
    "offline_batch_size",
    "replayer_for",
    "run_cancel",
    "run_claim",
    "run_create",
    "run_execute_inline",
    "run_fail",
    "run_prepare",
    "run_trace",
    "run_traces",
    "sandbox_cases_generate",
    "sandbox_clean_runs_generate",
    "sandbox_generate_start",
]
