"""Two indexes stop holding rows no query reads through them (issue 19: importing many small traces).

- The trigram indexes of the trace search's name, task and source id match (migration 0019) hold the traces the
  search indexer has done (``NOT search_pending``). A new trace starts pending, so importing it no longer extracts
  and inserts its trigrams (about 260 of them for a Who&When task: a fifth of the server's time for 5,000 traces);
  the indexer's UPDATE that clears the mark adds the row to them, after the import committed. ``search._named``
  matches pending traces through the partial index of pending traces, as the content search reads their unindexed
  steps, so a search is exact before, during and after.
- ``step_trace_span`` (label files that point at a span) holds only steps with a span id (``Step.Meta``).
"""

from django.db import migrations, models

from ._postgresql import on_postgresql

COLUMNS = {"name": "name::text", "question": "question", "external": "external_id::text"}


def _trigrams(where: str) -> list[str]:
    return [
        f"CREATE INDEX trace_{key}_trigrams ON tracing_trace USING gin (UPPER({column}) gin_trgm_ops){where}"
        for key, column in COLUMNS.items()
    ]


DROP = [f"DROP INDEX IF EXISTS trace_{key}_trigrams" for key in COLUMNS]
FORWARD = DROP + _trigrams(" WHERE NOT search_pending")
BACKWARD = DROP + _trigrams("")


class Migration(migrations.Migration):
    dependencies = [("tracing", "0023_step_references_checked_per_statement")]

    operations = [
        migrations.RemoveIndex(model_name="step", name="step_trace_span"),
        migrations.AddIndex(
            model_name="step",
            index=models.Index(
                condition=~models.Q(span_id=""), fields=["trace", "span_id"], name="step_trace_span"
            ),
        ),
        migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD)),
    ]
