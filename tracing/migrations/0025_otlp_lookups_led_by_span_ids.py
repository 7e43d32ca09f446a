"""The OTLP builder's lookups by span id and by parent id get indexes led by those ids (issue 17).

The builder probes a trace's spans one id at a time (``otlp_build._SPANS_BY``). Both indexes it meant to use started
with (project, trace), like the path index; where PostgreSQL's statistics did not know the trace (a new database, a
new project, a trace that grew since the last ANALYZE) it guessed one row per trace, found the three indexes alike
and probed through the path index, reading the whole trace once per span: one build of the 100,000-span trace ran
5 minutes (``bench/otlp_ingest.py huge``). Led by the span id (the unique key's columns reordered: the upsert's
conflict target is the same set) and by the parent id, and probed with the project as ``project_id + 0``, each
lookup has one index it can use, whatever the statistics say. The (project, trace, parent) index goes; the partial
index of parents skips root spans. The steps' partial index of span ids is led by the span id the same way
(``step_trace_span`` -> ``step_span_trace``), probed with the trace as ``trace_id + 0``.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0024_trigram_and_span_indexes_skip_what_they_need_not_hold"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="otlpspan",
            name="otlpspan_unique_span",
        ),
        migrations.RemoveIndex(
            model_name="otlpspan",
            name="otlpspan_trace_parent",
        ),
        migrations.RemoveIndex(
            model_name="step",
            name="step_trace_span",
        ),
        migrations.AddIndex(
            model_name="otlpspan",
            index=models.Index(
                condition=models.Q(("parent_span_id", ""), _negated=True),
                fields=["parent_span_id"],
                name="otlpspan_parent",
            ),
        ),
        migrations.AddIndex(
            model_name="step",
            index=models.Index(
                condition=models.Q(("span_id", ""), _negated=True),
                fields=["span_id", "trace"],
                name="step_span_trace",
            ),
        ),
        migrations.AddConstraint(
            model_name="otlpspan",
            constraint=models.UniqueConstraint(
                fields=("span_id", "trace_id", "project"), name="otlpspan_unique_span"
            ),
        ),
    ]
