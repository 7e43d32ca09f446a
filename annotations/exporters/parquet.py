"""Parquet, one row per label (every labelled error of a case, or its gold label when it has none), with a fixed schema (``SCHEMA``) so every export of every project loads the same way:
``datasets.Dataset.from_parquet(path)`` or ``load_dataset("parquet", data_files=path)``; filter on ``split``.

Rows are buffered into row groups of ``ROW_GROUP`` labels and written as they fill, so memory is bounded by one row
group whatever the export's size. The manifest rides in the file's schema metadata under ``culprit_manifest``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..selectors import ExportCase
from .rows import LABEL_COLUMNS, Progress, label_rows

# A label row is a few hundred bytes to a few KB (description, evidence and the labelled step's content): 10,000 of
# them keep memory flat whatever the export's size.
ROW_GROUP = 10_000
MANIFEST_KEY = b"culprit_manifest"

SCHEMA = pa.schema(
    [
        ("split", pa.string()),
        ("trace_name", pa.string()),
        ("trace_external_id", pa.string()),
        ("question", pa.string()),
        ("ground_truth", pa.string()),
        ("label_position", pa.int32()),
        ("decisive", pa.bool_()),
        ("label_source", pa.string()),
        ("family", pa.string()),
        ("category", pa.string()),
        ("step_index", pa.int32()),
        ("span_id", pa.string()),
        ("agent", pa.string()),
        ("impact", pa.string()),
        ("description", pa.large_string()),
        ("evidence", pa.large_string()),
        ("step_speaker", pa.string()),
        ("step_content", pa.large_string()),
        ("mistake_agent", pa.string()),
        ("mistake_step", pa.int32()),
        ("mistake_category", pa.string()),
    ]
)
if tuple(SCHEMA.names) != LABEL_COLUMNS:  # the CSV and Parquet columns are one list
    raise ImportError("the Parquet schema and LABEL_COLUMNS disagree")


class ParquetExporter:
    name = "parquet"
    extension = "parquet"
    content_type = "application/vnd.apache.parquet"
    label = "Parquet (one row per label)"
    description = (
        "One row per labelled error with a fixed schema, for pandas and Hugging Face datasets; the manifest is in "
        "the file metadata."
    )

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        schema = SCHEMA.with_metadata({MANIFEST_KEY: json.dumps(manifest, ensure_ascii=False).encode()})
        rows = 0
        buffer: list[tuple[Any, ...]] = []
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for row in label_rows(cases, progress):
                buffer.append(row)
                if len(buffer) >= ROW_GROUP:
                    rows += _flush(writer, schema, buffer)
            if buffer or not rows:
                rows += _flush(writer, schema, buffer)  # an empty export still gets a valid, empty table
        return sum(case.step_count for case in cases)  # as every exporter: the steps of the cases written


def _flush(writer: pq.ParquetWriter, schema: pa.Schema, buffer: list[tuple[Any, ...]]) -> int:
    columns = list(zip(*buffer)) if buffer else [[] for _ in LABEL_COLUMNS]
    writer.write_table(
        pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)
    )
    count = len(buffer)
    buffer.clear()
    return count


EXPORTER = ParquetExporter()
