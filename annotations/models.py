"""Review queues and dataset export; this app depends on ``attribution`` and ``tracing``.

Dataset export: a ``DatasetExport`` row is one curated dataset file being built by a worker. The row, not the broker,
is the source of truth: a task re-delivered after a crash finds the row already finished and stops, or finds it
running and writes the file again from scratch into a temporary name that is renamed into place atomically, so a
download never sees half a file and a finished export is never written twice.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from tracing.models import Project


class ExportFormat(models.TextChoices):
    WHOWHEN_ZIP = "whowhen-zip", "Who&When JSON, one file per case (zip)"
    WHOWHEN_JSONL = "whowhen-jsonl", "Who&When JSON Lines"
    PARQUET = "parquet", "Parquet (one row per step)"
    CSV = "csv", "CSV (one row per step)"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Exporting"
    SUCCEEDED = "succeeded", "Ready"
    FAILED = "failed", "Failed"


FINISHED_EXPORT_STATUSES = (ExportStatus.SUCCEEDED, ExportStatus.FAILED)


class DatasetExport(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="dataset_exports")
    format = models.CharField(max_length=16, choices=ExportFormat.choices)
    # The builder's choices as given (label sources, verified only, minimum agreement, dates, seed, test share);
    # re-running an export from them selects the same cases and the same split.
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    cases_total = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveBigIntegerField(default=0)
    steps_done = models.PositiveBigIntegerField(default=0)
    # Relative to MEDIA_ROOT; empty until the finished file has been renamed into place.
    file = models.FileField(max_length=300, blank=True)
    file_size = models.PositiveBigIntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=ExportStatus.values), name="datasetexport_status_valid"),
            models.CheckConstraint(condition=Q(format__in=ExportFormat.values), name="datasetexport_format_valid"),
        ]
        indexes = [
            # The builder page's list: one project's exports, newest first.
            models.Index(fields=["project", "-created_at"], name="datasetexport_project_recent"),
        ]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_EXPORT_STATUSES

    @property
    def percent(self) -> int:
        if self.is_finished:
            return 100
        return min(99, int(100 * self.steps_done / self.steps_total)) if self.steps_total else 0

    @property
    def filename(self) -> str:
        return self.file.name.rsplit("/", 1)[-1] if self.file else ""
