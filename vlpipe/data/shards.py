"""Parquet shards: the dataset schema and a streaming shard writer.

A dataset artifact holds ``part-NNNNN.parquet`` files (zstd) with :data:`DATASET_SCHEMA`, one
row per caption. Each shard is written to a temporary name and renamed when complete, so a
resumed run can trust every ``part-*.parquet`` it finds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: One row per caption. ``image`` holds the encoded file bytes when images are stored in the
#: dataset (``--store-images``), else null and ``image_path`` points at the file.
DATASET_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("caption_id", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image", pa.binary()),
        pa.field("image_path", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("source", pa.string(), nullable=False),
    ]
)

#: Rows that ingest refused, with the reason; same identifying columns as the dataset.
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("caption_id", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("image_path", pa.string()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def list_shards(folder: Path | str) -> list[Path]:
    return sorted(Path(folder).glob("part-*.parquet"))


class ShardWriter:
    """Buffers rows and writes a shard whenever ``max_rows`` or ``max_bytes`` is reached."""

    def __init__(
        self,
        folder: Path | str,
        schema: pa.Schema = DATASET_SCHEMA,
        *,
        max_rows: int = 10_000,
        max_bytes: int = 256 << 20,
        row_group_bytes: int = 32 << 20,
        start_index: int = 0,
        compression: str = "zstd",
        on_shard: Callable[[int, int], None] | None = None,
    ):
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        self.folder = Path(folder)
        self.schema = schema
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.row_group_bytes = row_group_bytes
        self.index = start_index
        self.compression = compression
        self.on_shard = on_shard
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self.rows_written = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        img = row.get("image")
        self._bytes += len(img) if img else 0
        if len(self._rows) >= self.max_rows or self._bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        final = self.folder / shard_name(self.index)
        tmp = final.with_name(final.name + ".tmp")
        # Row groups are the unit the training loader reads and shuffles: keep them small enough
        # (about row_group_bytes of image data) that a worker can hold a few at once.
        avg = max(1, self._bytes // len(self._rows))
        group_rows = int(min(len(self._rows), max(64, self.row_group_bytes // avg)))
        pq.write_table(table, tmp, compression=self.compression, row_group_size=group_rows)
        os.replace(tmp, final)
        n = len(self._rows)
        self.rows_written += n
        self._rows, self._bytes = [], 0
        done = self.index
        self.index += 1
        if self.on_shard is not None:
            self.on_shard(done, n)

    @property
    def pending(self) -> int:
        return len(self._rows)
