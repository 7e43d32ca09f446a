"""Full-text search over step content (the trace list's search box and ``GET /api/traces?q=``).

PostgreSQL: a GIN index on ``to_tsvector('simple', content)``, the exact expression ``tracing.search`` queries
(Django's ``SearchVector("content", config="simple")`` renders it with the ``COALESCE``), so a search of a project's
steps is an index scan, not a read of every step. The 'simple' configuration lower-cases and splits words without
stemming: agent names, tool names and ids ("WebSurfer", "L060") match as written.

SQLite (the embedded mode) has no such index: ``tracing.search`` falls back to ``icontains`` on the project's steps,
and this migration does nothing there. The index is built inside the migration's transaction (not
``CONCURRENTLY``), so writes to ``tracing_step`` wait while it is built.
"""

from django.db import migrations

INDEX = "step_content_fts"
CREATE = (
    f"CREATE INDEX IF NOT EXISTS {INDEX} ON tracing_step "
    "USING gin (to_tsvector('simple'::regconfig, COALESCE(content, '')))"
)
DROP = f"DROP INDEX IF EXISTS {INDEX}"


def _on_postgresql(sql: str):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("tracing", "0009_otlp_incremental")]

    operations: list = [
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False),
    ]
