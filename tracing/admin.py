from __future__ import annotations

from django.contrib import admin

from .models import Agent, ErrorLabel, GoldLabel, IngestJob, Membership, Project, RawUpload, Step, Trace


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role", "project"]


@admin.register(RawUpload)
class RawUploadAdmin(admin.ModelAdmin):
    list_display = ["filename", "project", "size", "sha256", "created_at"]
    list_filter = ["project"]
    readonly_fields = ["sha256", "size", "file"]


@admin.register(IngestJob)
class IngestJobAdmin(admin.ModelAdmin):
    list_display = ["filename", "project", "status", "detected_format", "attempts", "created_at"]
    list_filter = ["status", "project"]
    search_fields = ["filename", "error"]


class GoldLabelInline(admin.TabularInline):
    model = GoldLabel
    extra = 0
    raw_id_fields = ["agent"]


class ErrorLabelInline(admin.TabularInline):
    model = ErrorLabel
    extra = 0
    raw_id_fields = ["agent"]
    fields = [
        "position",
        "decisive",
        "step_index",
        "span_id",
        "agent_name",
        "family",
        "category",
        "impact",
        "source",
    ]


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "source_format", "outcome", "step_count", "created_at"]
    list_filter = ["project", "source_format", "outcome"]
    search_fields = ["name", "question", "external_id"]
    raw_id_fields = ["upload", "derived_from"]
    inlines = [GoldLabelInline, ErrorLabelInline]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "trace", "step_count"]
    raw_id_fields = ["trace"]


@admin.register(Step)
class StepAdmin(admin.ModelAdmin):
    list_display = ["trace", "index", "agent", "kind"]
    list_filter = ["kind"]
    raw_id_fields = ["trace", "agent"]
