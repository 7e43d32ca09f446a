"""The large text and JSON columns written on the import and OTLP paths are compressed with lz4 instead of pglz
(``_postgresql.compress_with``): step text, agents' system prompts, trace headers and stored spans."""

from django.db import migrations

from ._postgresql import compress_with

COLUMNS = {
    "tracing_step": ["content", "tool_arguments", "raw"],
    "tracing_agent": ["system_prompt"],
    "tracing_trace": ["question", "metadata", "totals"],
    "tracing_otlpspan": ["resource", "scope", "span", "payload", "path"],
}


class Migration(migrations.Migration):
    dependencies = [("tracing", "0021_otlpspan_unbuilt_roots")]

    operations = [
        migrations.RunPython(compress_with("lz4", COLUMNS), compress_with("pglz", COLUMNS), elidable=False)
    ]
