from __future__ import annotations

from django.urls import path

from . import views

app_name = "attribution"

urlpatterns = [
    path("traces/<int:trace_id>/panel/", views.trace_panel, name="trace_panel"),
    path("traces/<int:trace_id>/attribute/", views.trace_attribute, name="trace_attribute"),
    path("projects/<slug:slug>/runs/", views.run_list, name="run_list"),
    path("projects/<slug:slug>/evaluation/", views.evaluation, name="evaluation"),
    path("projects/<slug:slug>/evaluation/start/", views.evaluation_start, name="evaluation_start"),
    path("projects/<slug:slug>/sandbox/", views.sandbox_generate, name="sandbox_generate"),
    path("projects/<slug:slug>/llm/", views.llm_settings, name="llm_settings"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("projects/<slug:slug>/campaigns/", views.campaign_list, name="campaign_list"),
    path("campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign_detail"),
    path("injections/<int:injection_id>/", views.injection_inspector, name="injection_inspector"),
    path("verdicts/<int:verdict_id>/replays/", views.replay_inspector, name="replay_inspector"),
]
