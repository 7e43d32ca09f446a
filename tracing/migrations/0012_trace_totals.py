"""Trace.totals: the run's totals (times, LLM calls, tokens, cost, failed steps), stored when the steps are written.

No backfill: a trace written before this migration has ``{}`` and ``tracing.waterfall.trace_totals`` aggregates its
steps on its first view and stores the result, so old traces heal one by one without a long migration.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0011_trace_content_hash"),
    ]

    operations = [
        migrations.AddField(
            model_name="trace",
            name="totals",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
