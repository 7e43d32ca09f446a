"""An index of the spans that are roots of their trace (a path of one 16-byte level), in path order.

Every incremental OTLP build asks for the trace's first root it leaves alone (``otlp_build._Build._root_row``): read
from the path index, that walked every span of the trace between roots, in path order (56 ms at 60,000 spans,
growing with the trace). This partial index holds roots only, with their span id, so the question is answered from the
index alone. PostgreSQL only (SQLite builds every trace whole).
"""

from django.db import migrations

from ._postgresql import on_postgresql

FORWARD = [
    "CREATE INDEX IF NOT EXISTS otlpspan_roots ON tracing_otlpspan (project_id, trace_id, path) INCLUDE (span_id) "
    "WHERE length(path) = 16"
]
BACKWARD = ["DROP INDEX IF EXISTS otlpspan_roots"]


class Migration(migrations.Migration):
    dependencies = [("tracing", "0015_otlpspan_drop_lone_project_index")]

    operations = [migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD), elidable=False)]
