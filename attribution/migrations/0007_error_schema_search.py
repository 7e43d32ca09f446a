"""The lexical index of the error-schema cache, on PostgreSQL only: a stored tsvector column generated from
``search_text`` and its GIN index. Embedded mode (SQLite) has neither; retrieval there scores the structured
candidates in Python (attribution/schemas/index.py)."""

from django.db import migrations

FORWARD = [
    "ALTER TABLE attribution_errorschema ADD COLUMN search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED",
    # Retrieval: trusted schemas whose search vector matches the trace's terms.
    "CREATE INDEX errorschema_search_gin ON attribution_errorschema USING gin (search)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS errorschema_search_gin",
    "ALTER TABLE attribution_errorschema DROP COLUMN IF EXISTS search",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("attribution", "0006_error_schema_cache")]
    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
