"""Full-text search documents move off the write path: ``StepSearch`` holds each step's ``to_tsvector``.

Migration 0010 indexed the expression ``to_tsvector('simple', content)`` on ``tracing_step``: every imported step
paid for it in the import's transaction (two thirds of importing many small traces, bench/scale.py), and every step
an OTLP renumbering moved paid again (a moved row is a new row version: 7.9 of 13 s for 142,856 steps). The documents
now live in their own table, written by the indexer (``tracing.services.search_index``) after the steps commit;
``Trace.search_pending``/``search_through`` say which steps are not in it yet, and ``tracing.search`` reads those from
the steps directly, so a search never misses a step.

PostgreSQL: existing steps are copied into the table, then its GIN index is built and the old expression index is
dropped. SQLite (the embedded mode) searches with ``icontains`` and only gets the (unused) table.
"""

import django.contrib.postgres.search
import django.db.models.deletion
from django.db import migrations, models

from ._postgresql import on_postgresql

FORWARD = [
    "INSERT INTO tracing_stepsearch (step_id, trace_id, document) "
    "SELECT id, trace_id, to_tsvector('simple'::regconfig, COALESCE(content, '')) FROM tracing_step",
    "UPDATE tracing_trace AS t SET search_pending = false, search_through = m.last "
    "FROM (SELECT trace_id, max(id) AS last FROM tracing_step GROUP BY trace_id) AS m WHERE m.trace_id = t.id",
    "UPDATE tracing_trace SET search_pending = false WHERE search_pending",
    "CREATE INDEX stepsearch_document ON tracing_stepsearch USING gin (document)",
    "DROP INDEX IF EXISTS step_content_fts",
]
BACKWARD = [
    "CREATE INDEX IF NOT EXISTS step_content_fts ON tracing_step "
    "USING gin (to_tsvector('simple'::regconfig, COALESCE(content, '')))",
    "DROP INDEX IF EXISTS stepsearch_document",
    "DELETE FROM tracing_stepsearch",
]


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0012_trace_totals"),
    ]

    operations = [
        migrations.CreateModel(
            name="StepSearch",
            fields=[
                (
                    "step",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="tracing.step",
                    ),
                ),
                ("document", django.contrib.postgres.search.SearchVectorField()),
                (
                    "trace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="tracing.trace"
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="trace",
            name="search_pending",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="trace",
            name="search_through",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name="trace",
            index=models.Index(
                condition=models.Q(("search_pending", True)), fields=["project"], name="trace_search_pending"
            ),
        ),
        migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD), elidable=False),
    ]
