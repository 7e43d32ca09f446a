# The run's and the campaign's restart counter becomes the job base's ``attempts`` (tracing.jobs.Job). The column
# keeps its name and its data: both operations are no-ops in the database (``sqlmigrate attribution 0010``).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("attribution", "0009_llm_budgets"),
    ]

    operations = [
        migrations.AlterField(
            model_name="attributionrun",
            name="reaped",
            field=models.PositiveSmallIntegerField(db_column="reaped", default=0),
        ),
        migrations.RenameField(
            model_name="attributionrun",
            old_name="reaped",
            new_name="attempts",
        ),
        migrations.AlterField(
            model_name="injectioncampaign",
            name="reaped",
            field=models.PositiveSmallIntegerField(db_column="reaped", default=0),
        ),
        migrations.RenameField(
            model_name="injectioncampaign",
            old_name="reaped",
            new_name="attempts",
        ),
    ]
