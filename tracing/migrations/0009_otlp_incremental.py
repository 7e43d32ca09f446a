"""Incremental OTLP building (issue 17): the span's own bytes and placement columns on OtlpSpan, one pending-build
marker per trace, and a step index constraint checked at the end of each statement on PostgreSQL.

Existing spans keep their JSON (``span``) and start unbuilt: the first build of their trace (or the reaper) rebuilds
it whole once and fills the new columns.
"""

import django.db.models.deletion
from django.db import migrations, models

# On PostgreSQL the (trace, index) unique constraint becomes DEFERRABLE INITIALLY IMMEDIATE: it is still checked by
# every statement, but at the end of the statement instead of row by row, so inserting a span before existing steps
# renumbers them in one UPDATE (index = index + k would otherwise collide with the row above mid-statement). The model
# state is unchanged (Django would warn about a deferrable constraint on SQLite, where the builder never renumbers in
# place); the constraint keeps its name and columns, and remains the index behind the viewer's window query.
DEFERRABLE = (
    "ALTER TABLE tracing_step DROP CONSTRAINT step_unique_index_per_trace, "
    "ADD CONSTRAINT step_unique_index_per_trace UNIQUE (trace_id, index) DEFERRABLE INITIALLY IMMEDIATE"
)
NOT_DEFERRABLE = (
    "ALTER TABLE tracing_step DROP CONSTRAINT step_unique_index_per_trace, "
    "ADD CONSTRAINT step_unique_index_per_trace UNIQUE (trace_id, index)"
)


def _spans_to_json(apps, schema_editor):
    """Going back: the older code reads ``span`` (OTLP/JSON) only, so protobuf spans are written there first."""
    from google.protobuf import json_format
    from opentelemetry.proto.trace.v1 import trace_pb2

    OtlpSpan = apps.get_model("tracing", "OtlpSpan")
    rows = OtlpSpan.objects.filter(span__isnull=True).only("pk", "payload")
    for row in rows.iterator(chunk_size=2000):
        span = trace_pb2.Span.FromString(bytes(row.payload or b""))
        record = json_format.MessageToDict(span)
        for key, value in (
            ("traceId", span.trace_id),
            ("spanId", span.span_id),
            ("parentSpanId", span.parent_span_id),
        ):
            if value:
                record[key] = value.hex()  # OTLP/JSON writes ids in hex, the generic mapping in base64
        OtlpSpan.objects.filter(pk=row.pk).update(span=record)


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("tracing", "0008_error_labels")]

    operations = [
        migrations.AlterField(
            model_name="otlpspan", name="span", field=models.JSONField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="otlpspan", name="payload", field=models.BinaryField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="otlpspan", name="encoding", field=models.PositiveSmallIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="otlpspan", name="parent_span_id", field=models.CharField(blank=True, max_length=32)
        ),
        migrations.AddField(
            model_name="otlpspan", name="start_ns", field=models.BigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="otlpspan", name="service", field=models.CharField(blank=True, max_length=200)
        ),
        migrations.AddField(model_name="otlpspan", name="error", field=models.BooleanField(default=False)),
        migrations.AddField(model_name="otlpspan", name="built", field=models.BooleanField(default=False)),
        migrations.AddField(
            model_name="otlpspan", name="path", field=models.BinaryField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="otlpspan", name="agent", field=models.CharField(blank=True, max_length=200)
        ),
        migrations.AddField(
            model_name="otlpspan", name="step_span", field=models.CharField(blank=True, max_length=32)
        ),
        migrations.AddField(
            model_name="otlpspan", name="step_count", field=models.PositiveSmallIntegerField(default=0)
        ),
        migrations.AddField(
            model_name="otlpspan", name="shown_leaf", field=models.BooleanField(default=False)
        ),
        migrations.RunPython(migrations.RunPython.noop, _spans_to_json),
        migrations.AddIndex(
            model_name="otlpspan",
            index=models.Index(
                fields=["project", "trace_id", "parent_span_id"], name="otlpspan_trace_parent"
            ),
        ),
        migrations.AddIndex(
            model_name="otlpspan",
            index=models.Index(fields=["project", "trace_id", "path"], name="otlpspan_trace_path"),
        ),
        migrations.AddIndex(
            model_name="otlpspan",
            index=models.Index(
                fields=["project", "trace_id", "received_at"],
                condition=models.Q(built=False),
                name="otlpspan_unbuilt",
            ),
        ),
        migrations.CreateModel(
            name="OtlpPendingBuild",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("trace_id", models.CharField(max_length=64)),
                ("queued_at", models.DateTimeField()),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tracing.project"
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=["project", "trace_id"], name="otlppendingbuild_one_per_trace"
                    )
                ],
                "indexes": [models.Index(fields=["queued_at"], name="otlppendingbuild_queued")],
            },
        ),
        migrations.RunPython(_on_postgresql(DEFERRABLE), _on_postgresql(NOT_DEFERRABLE)),
    ]
