"""A verdict's scores and evidence (~5 kB for the heuristic's) are compressed with lz4 instead of pglz, as
tracing's step text is (``tracing.migrations._postgresql.compress_with``): every run writes one per trace."""

from django.db import migrations

from tracing.migrations._postgresql import compress_with

COLUMNS = {"attribution_verdict": ["reason", "scores", "details"]}


class Migration(migrations.Migration):
    dependencies = [("attribution", "0013_auto_attribute"), ("tracing", "0022_lz4_compression")]

    operations = [
        migrations.RunPython(compress_with("lz4", COLUMNS), compress_with("pglz", COLUMNS), elidable=False)
    ]
