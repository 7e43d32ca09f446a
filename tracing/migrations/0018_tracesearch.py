"""Per-trace search documents: ``TraceSearch`` holds the lexemes of all of a trace's step documents.

A word in every trace of a 20,000-trace project matched 341,536 step documents, and finding their traces read the
whole ``tracing_stepsearch`` table (the documents inline beside the trace ids): 200-300 ms of the search page. One
stripped document per trace answers a word from 20,000 rows (``tracing.search``). PostgreSQL: the documents of the
steps indexed so far are aggregated per trace (the lexemes of the steps still pending are added by the indexer, and
read from their text meanwhile), then the GIN index is built. SQLite searches with ``icontains`` and only gets the
(unused) table.
"""

import django.contrib.postgres.search
import django.db.models.deletion
from django.db import migrations, models

from ._postgresql import on_postgresql

# Each trace's distinct lexemes; a trace whose lexemes outgrow a tsvector (1 MB) gets no document and is checked
# step by step (``exact`` false), as the indexer does.
FORWARD = [
    """
    INSERT INTO tracing_tracesearch (trace_id, project_id, document, exact)
    SELECT l.trace_id, t.project_id,
        CASE WHEN l.bytes <= 1000000 THEN array_to_tsvector(l.lexemes) END, l.bytes <= 1000000
    FROM (
        SELECT trace_id, array_agg(lexeme) AS lexemes, sum(octet_length(lexeme)) AS bytes FROM (
            SELECT DISTINCT s.trace_id, u.lexeme FROM tracing_stepsearch AS s, unnest(s.document) AS u
        ) AS d GROUP BY trace_id
    ) AS l JOIN tracing_trace AS t ON t.id = l.trace_id
    """,
    "CREATE INDEX tracesearch_document ON tracing_tracesearch USING gin (document)",
]
BACKWARD = ["DROP INDEX IF EXISTS tracesearch_document"]


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0017_drop_lone_foreign_key_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="TraceSearch",
            fields=[
                (
                    "trace",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="tracing.trace",
                    ),
                ),
                ("document", django.contrib.postgres.search.SearchVectorField(null=True)),
                ("exact", models.BooleanField(default=True)),
                (
                    "project",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="tracing.project",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        condition=models.Q(("exact", False)), fields=["project"], name="tracesearch_inexact"
                    )
                ],
            },
        ),
        migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD)),
    ]
