from __future__ import annotations

from django.urls import path

from . import views

app_name = "annotations"

urlpatterns = [
    path("projects/<slug:slug>/exports/", views.export_builder, name="export_builder"),
    path("projects/<slug:slug>/exports/preview/", views.export_preview, name="export_preview"),
    path("exports/<int:export_id>/download/", views.export_download, name="export_download"),
    path("exports/<int:export_id>/manifest/", views.export_manifest_download, name="export_manifest"),
    path("exports/<int:export_id>/delete/", views.export_delete, name="export_delete"),
]
