"""The embeddings artifact's Parquet schema (written by `vlpipe embed`, read by `vlpipe index build`).

Files ``image-NNNNN.parquet`` and ``text-NNNNN.parquet``; one row per unique image or per caption:

- ``id``: image_id for images, caption_id for texts (unique within a modality)
- ``image_id``: the image (for texts: the image the caption belongs to)
- ``caption``: the caption (null for images)
- ``image_path``: where the image file lives, if the dataset knew (null when only bytes were stored)
- ``split``: the dataset split
- ``vector``: ``fixed_size_list<float16>[dim]``, L2-normalised ITC embedding
"""

from __future__ import annotations

import pyarrow as pa

MODALITIES = ("image", "text")


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("image_path", pa.string()),
        pa.field("split", pa.string()),
        pa.field("vector", pa.list_(pa.float16(), dim), nullable=False),
    ])


def shard_glob(modality: str) -> str:
    return f"{modality}-*.parquet"
