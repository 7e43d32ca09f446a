from __future__ import annotations

from django.contrib import admin

from .models import Annotation, ReviewQueue


@admin.register(ReviewQueue)
class ReviewQueueAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "source", "overlap", "assignment", "blind", "created_at"]
    list_filter = ["project", "source", "blind"]
    search_fields = ["name"]
    filter_horizontal = ["annotators"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["item", "slot", "status", "annotator", "agent_name", "step_index", "submitted_at"]
    list_filter = ["status", "queue"]
    raw_id_fields = ["item", "annotator"]
    readonly_fields = ["queue"]
