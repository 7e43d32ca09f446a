"""The header counts of the trace list from one index: (project, format) now stores the ids too (see Trace.Meta)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0019_trace_name_trigrams"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="trace",
            name="trace_project_format",
        ),
        migrations.AddIndex(
            model_name="trace",
            index=models.Index(
                fields=["project", "source_format"], include=("id",), name="trace_project_format_ids"
            ),
        ),
    ]
