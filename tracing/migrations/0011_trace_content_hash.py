"""Content hashes for duplicate detection on import (issue 19), and the job's "import duplicates anyway" option.

The backfill computes every existing trace's hash from its stored steps with the same function the importer uses
(``tracing.content_hash``), so a trace imported before this migration is recognised when its run comes again. It
reads traces in pk order, BACKFILL_TRACES at a time, and streams each batch's steps in (trace, index) order through a
server-side cursor (the step_unique_index_per_trace index), so time is linear in the steps and memory is bounded by
one batch's hashes. The index is built after the backfill, so the updates do not maintain it row by row.
"""

from __future__ import annotations

from django.db import migrations, models

from tracing.content_hash import ContentHasher

BACKFILL_TRACES = 500  # traces hashed per bulk update
STEP_CHUNK = 2000  # steps per fetch from the server-side cursor (~2 MB of Who&When-sized content)


def backfill_content_hashes(apps, schema_editor) -> None:
    Trace = apps.get_model("tracing", "Trace")
    Step = apps.get_model("tracing", "Step")
    last_pk = 0
    while True:
        headers = list(
            Trace.objects.filter(pk__gt=last_pk)
            .order_by("pk")
            .values_list("pk", "question", "ground_truth")[:BACKFILL_TRACES]
        )
        if not headers:
            return
        hashers = {pk: ContentHasher() for pk, _, _ in headers}
        steps = (
            Step.objects.filter(trace_id__in=list(hashers))
            .order_by("trace_id", "index")
            .values_list("trace_id", "agent__name", "kind", "content")
        )
        for trace_id, agent, kind, content in steps.iterator(chunk_size=STEP_CHUNK):
            hashers[trace_id].add_step(agent=agent, kind=kind, content=content)
        rows = [
            Trace(pk=pk, content_hash=hashers[pk].hexdigest(question=question, ground_truth=ground_truth))
            for pk, question, ground_truth in headers
        ]
        Trace.objects.bulk_update(rows, ["content_hash"])
        last_pk = headers[-1][0]


class Migration(migrations.Migration):
    dependencies = [("tracing", "0010_step_search")]

    operations = [
        migrations.AddField(
            model_name="ingestjob",
            name="duplicates",
            field=models.CharField(
                choices=[("skip", "Skip traces already in the project"), ("import", "Import them anyway")],
                default="skip",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="trace",
            name="content_hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.RunPython(backfill_content_hashes, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="trace",
            index=models.Index(fields=["project", "content_hash"], name="trace_project_content_hash"),
        ),
    ]
