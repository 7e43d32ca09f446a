"""StepSearch.trace keeps Django's cascade but loses its database constraint.

The constraint was checked when the indexer committed, taking a share lock on the trace table at that moment: the
one lock wait its lock timeout could not bound, and a TRUNCATE of a test database deadlocked with it. The indexer
only writes documents of traces it holds locked (tracing.services.search_index), and deleting a trace deletes them.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracing", "0013_step_search_table"),
    ]

    operations = [
        migrations.AlterField(
            model_name="stepsearch",
            name="trace",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="tracing.trace",
            ),
        ),
    ]
