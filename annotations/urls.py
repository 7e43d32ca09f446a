from __future__ import annotations

from django.urls import path

from . import views

app_name = "annotations"

urlpatterns = [
    path("projects/<slug:slug>/queues/", views.queue_list, name="queue_list"),
    path("queues/<int:queue_id>/", views.queue_detail, name="queue_detail"),
    path("queues/<int:queue_id>/fill/", views.queue_refill, name="queue_refill"),
    path("queues/<int:queue_id>/settings/", views.queue_edit, name="queue_edit"),
    path("queues/<int:queue_id>/next/", views.queue_next, name="queue_next"),
    path("queues/<int:queue_id>/agreement/", views.agreement, name="agreement"),
    path("queues/<int:queue_id>/adjudication/", views.adjudication, name="adjudication"),
    path("items/<int:item_id>/adjudicate/", views.adjudicate_item, name="adjudicate_item"),
    path("label/<int:annotation_id>/", views.label, name="label"),
    path("label/<int:annotation_id>/skip/", views.skip, name="skip"),
    path("answers/<int:annotation_id>/edit/", views.answer_edit, name="answer_edit"),
    path("traces/<int:trace_id>/label/", views.trace_label, name="trace_label"),
    path("traces/<int:trace_id>/label/remove/", views.trace_label_remove, name="trace_label_remove"),
    path("projects/<slug:slug>/invitations/", views.invitations, name="invitations"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("projects/<slug:slug>/exports/", views.export_builder, name="export_builder"),
    path("projects/<slug:slug>/exports/preview/", views.export_preview, name="export_preview"),
    path("exports/<int:export_id>/download/", views.export_download, name="export_download"),
    path("exports/<int:export_id>/manifest/", views.export_manifest_download, name="export_manifest"),
    path("exports/<int:export_id>/delete/", views.export_delete, name="export_delete"),
]
