from __future__ import annotations

from django.urls import path

from . import views
from .learning import views as model_views
from .schemas import views as schema_views

app_name = "attribution"

urlpatterns = [
    path("traces/<int:trace_id>/panel/", views.trace_panel, name="trace_panel"),
    path("traces/<int:trace_id>/attribute/", views.trace_attribute, name="trace_attribute"),
    path("projects/<slug:slug>/runs/", views.run_list, name="run_list"),
    path("projects/<slug:slug>/runs/auto/", views.run_auto, name="run_auto"),
    path("projects/<slug:slug>/evaluation/", views.evaluation, name="evaluation"),
    path("projects/<slug:slug>/evaluation/start/", views.evaluation_start, name="evaluation_start"),
    path("projects/<slug:slug>/sandbox/", views.sandbox_generate, name="sandbox_generate"),
    path("projects/<slug:slug>/llm/", views.llm_settings, name="llm_settings"),
    path("projects/<slug:slug>/llm/test/", views.llm_test_connection, name="llm_test_connection"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("projects/<slug:slug>/campaigns/", views.campaign_list, name="campaign_list"),
    path("campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign_detail"),
    path("injections/<int:injection_id>/", views.injection_inspector, name="injection_inspector"),
    path("verdicts/<int:verdict_id>/replays/", views.replay_inspector, name="replay_inspector"),
    path("projects/<slug:slug>/schemas/", schema_views.schema_list, name="schema_list"),
    path("projects/<slug:slug>/schemas/distill/", schema_views.schemas_distill, name="schemas_distill"),
    path("projects/<slug:slug>/schemas/library/", schema_views.library_settings, name="schema_library"),
    path("projects/<slug:slug>/schemas/<int:schema_id>/", schema_views.schema_detail, name="schema_detail"),
    path(
        "projects/<slug:slug>/schemas/<int:schema_id>/approve/",
        schema_views.schema_approve,
        name="schema_approve",
    ),
    path(
        "projects/<slug:slug>/schemas/<int:schema_id>/retire/",
        schema_views.schema_retire,
        name="schema_retire",
    ),
    path(
        "projects/<slug:slug>/schemas/<int:schema_id>/restore/",
        schema_views.schema_restore,
        name="schema_restore",
    ),
    path("projects/<slug:slug>/schemas/<int:schema_id>/edit/", schema_views.schema_edit, name="schema_edit"),
    path("projects/<slug:slug>/models/", model_views.model_list, name="model_list"),
    path("projects/<slug:slug>/models/recalibrate/", model_views.model_recalibrate, name="model_recalibrate"),
    path("projects/<slug:slug>/models/retrain/", model_views.model_retrain_after, name="model_retrain_after"),
    path("models/<int:model_id>/", model_views.model_detail, name="model_detail"),
    path("models/<int:model_id>/default/", model_views.model_make_default, name="model_make_default"),
    path("models/<int:model_id>/delete/", model_views.model_delete, name="model_delete"),
    path("models/<int:model_id>/score-unseen/", model_views.model_score_unseen, name="model_score_unseen"),
]
