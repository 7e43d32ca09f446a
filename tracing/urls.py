from __future__ import annotations

from django.urls import path

from . import views

app_name = "tracing"

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/", views.project_list, name="project_list"),
    path("projects/<slug:slug>/", views.trace_list, name="trace_list"),
    path("projects/<slug:slug>/live/", views.project_live, name="project_live"),
    path("projects/<slug:slug>/traces/delete/", views.traces_delete, name="traces_delete"),
    path("projects/<slug:slug>/members/", views.project_members, name="project_members"),
    path("projects/<slug:slug>/tokens/", views.project_tokens, name="project_tokens"),
    path("projects/<slug:slug>/audit/", views.project_audit, name="project_audit"),
    path("projects/<slug:slug>/upload/", views.upload, name="upload"),
    path("projects/<slug:slug>/uploads/<uuid:batch>/", views.upload_batch, name="upload_batch"),
    path("traces/<int:trace_id>/", views.trace_detail, name="trace_detail"),
    path("traces/<int:trace_id>/live/", views.trace_live, name="trace_live"),
    path("traces/<int:trace_id>/delete/", views.trace_delete, name="trace_delete"),
    path("traces/<int:trace_id>/original/", views.trace_original, name="trace_original"),
    path("traces/<int:trace_id>/steps/<int:index>/content/", views.step_content, name="step_content"),
]
