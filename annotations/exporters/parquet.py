"""Parquet, one row per step, with a fixed schema (``SCHEMA``) so every export of every project loads the same way:
``datasets.Dataset.from_parquet(path)`` or ``load_dataset("parquet", data_files=path)``; filter on ``split``.

Rows are buffered into row groups of ``ROW_GROUP`` steps and written as they fill, so memory is bounded by one row
group whatever the export's size. The manifest rides in the file's schema metadata under ``culprit_manifest``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..selectors import ExportCase
from .rows import STEP_COLUMNS, Progress, step_rows

# 10,000 Who&When-sized steps are ~10-20 MB of Python strings before they become Arrow columns: big enough for
# efficient row groups, small enough to keep memory flat (bench/export_speed.py: ~215 MB peak RSS, pyarrow included,
# for 10,000 and for 100,000 steps alike).
ROW_GROUP = 10_000
MANIFEST_KEY = b"culprit_manifest"

SCHEMA = pa.schema([
    ("split", pa.string()), ("trace_name", pa.string()), ("trace_external_id", pa.string()),
    ("question", pa.string()), ("ground_truth", pa.string()), ("step_index", pa.int32()), ("speaker", pa.string()),
    ("agent", pa.string()), ("kind", pa.string()), ("content", pa.large_string()), ("is_mistake_step", pa.bool_()),
    ("mistake_agent", pa.string()), ("mistake_step", pa.int32()), ("mistake_reason", pa.string()),
    ("mistake_category", pa.string()), ("label_source", pa.string()), ("error_labels", pa.string()),
])
assert tuple(SCHEMA.names) == STEP_COLUMNS


class ParquetExporter:
    name = "parquet"
    extension = "parquet"
    content_type = "application/vnd.apache.parquet"

    def write(self, path: Path, cases: list[ExportCase], manifest: dict[str, Any], progress: Progress) -> int:
        schema = SCHEMA.with_metadata({MANIFEST_KEY: json.dumps(manifest, ensure_ascii=False).encode()})
        rows = 0
        buffer: list[tuple[Any, ...]] = []
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for row in step_rows(cases, progress):
                buffer.append(row)
                if len(buffer) >= ROW_GROUP:
                    rows += _flush(writer, schema, buffer)
            if buffer or not rows:
                rows += _flush(writer, schema, buffer)  # an empty export still gets a valid, empty table
        return rows


def _flush(writer: pq.ParquetWriter, schema: pa.Schema, buffer: list[tuple[Any, ...]]) -> int:
    columns = list(zip(*buffer)) if buffer else [[] for _ in STEP_COLUMNS]
    writer.write_table(pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)],
                                            schema=schema))
    count = len(buffer)
    buffer.clear()
    return count


EXPORTER = ParquetExporter()
