"""An index of the root spans not built yet: the OTLP builder takes them before the rest of a trace's backlog
(``otlp_build._Build.load_pending``). Roots are a span or a few per trace, so the index stays tiny and finding them
never reads the backlog. PostgreSQL only (a partial index with an expression; SQLite builds every trace whole)."""

from django.db import migrations

from ._postgresql import on_postgresql

FORWARD = [
    "CREATE INDEX IF NOT EXISTS otlpspan_unbuilt_roots ON tracing_otlpspan (project_id, trace_id, id) "
    "WHERE NOT built AND parent_span_id = ''"
]
BACKWARD = ["DROP INDEX IF EXISTS otlpspan_unbuilt_roots"]


class Migration(migrations.Migration):
    dependencies = [("tracing", "0020_trace_project_format_ids")]

    operations = [migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD), elidable=False)]
