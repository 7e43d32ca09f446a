"""Trigram indexes for the search's name, task and source id match (``tracing.search._named``: ``icontains``).

The match read every trace of the project (55-85 ms at 20,000 traces, whatever the word); ``pg_trgm``'s GIN indexes
answer ``UPPER(column) LIKE '%WORD%'`` (the SQL Django writes for ``icontains``) from the traces holding the word's
trigrams: under a millisecond for a word in few traces. PostgreSQL only (SQLite, the embedded mode, scans its few
thousand traces).
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

from ._postgresql import on_postgresql

COLUMNS = {"name": "name::text", "question": "question", "external": "external_id::text"}
FORWARD = [
    f"CREATE INDEX trace_{key}_trigrams ON tracing_trace USING gin (UPPER({column}) gin_trgm_ops)"
    for key, column in COLUMNS.items()
]
BACKWARD = [f"DROP INDEX IF EXISTS trace_{key}_trigrams" for key in COLUMNS]


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0018_tracesearch"),
    ]

    operations = [
        TrigramExtension(),
        migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD)),
    ]
