"""An index of the root spans not built yet: the OTLP builder takes them before the rest of a trace's backlog
(``otlp_build._Build.load_pending``). Roots are a span or a few per trace, so the index stays tiny and finding them
never reads the backlog. PostgreSQL only (a partial index with an expression; SQLite builds every trace whole)."""

from django.db import migrations

FORWARD = [
    "CREATE INDEX IF NOT EXISTS otlpspan_unbuilt_roots ON tracing_otlpspan (project_id, trace_id, id) "
    "WHERE NOT built AND parent_span_id = ''"
]
BACKWARD = ["DROP INDEX IF EXISTS otlpspan_unbuilt_roots"]


def _on_postgresql(statements: list[str]):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("tracing", "0020_trace_project_format_ids")]

    operations = [migrations.RunPython(_on_postgresql(FORWARD), _on_postgresql(BACKWARD), elidable=False)]
