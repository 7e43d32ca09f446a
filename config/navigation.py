"""The project tab bar's current tab: which section a page belongs to, by its URL name (a context processor, so
every page that shows a project highlights where the reader is without each view saying so)."""

from __future__ import annotations

from django.http import HttpRequest

SECTIONS = {
    "traces": ("trace_list", "trace_detail", "trace_original", "upload", "upload_batch"),
    "runs": ("run_list", "run_detail", "run_auto", "replay_inspector"),
    "evaluation": ("evaluation", "evaluation_start"),
    "review": (
        "queue_list",
        "queue_detail",
        "queue_refill",
        "queue_edit",
        "queue_next",
        "agreement",
        "adjudication",
        "adjudicate_item",
        "label",
        "skip",
    ),
    "export": ("export_builder", "export_preview"),
    "injection": ("campaign_list", "campaign_detail", "injection_inspector", "sandbox_generate"),
    "schemas": (
        "schema_list",
        "schemas_distill",
        "schema_library",
        "schema_detail",
        "schema_edit",
        "schema_approve",
        "schema_retire",
        "schema_restore",
    ),
    "models": (
        "model_list",
        "model_detail",
        "model_recalibrate",
        "model_retrain_after",
        "model_make_default",
    ),
    "members": ("project_members", "invitations"),
    "llm": ("llm_settings", "llm_test_connection"),
    "tokens": ("project_tokens",),
    "audit": ("project_audit",),
}
_SECTION_OF = {name: section for section, names in SECTIONS.items() for name in names}


def section(request: HttpRequest) -> dict[str, str]:
    match = getattr(request, "resolver_match", None)
    return {"nav_section": _SECTION_OF.get(match.url_name or "", "") if match else ""}
