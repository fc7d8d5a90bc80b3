"""img2dataset-style WebDataset tar shards, read streaming.

A shard is a tar of samples; the files of one sample are consecutive members sharing a key
(the member name up to the first dot of its base name): ``000010023.jpg`` (or ``.jpeg``,
``.png``, ``.webp``), ``000010023.txt`` (the caption) and/or ``000010023.json`` (img2dataset
metadata with ``"caption"``, ``"width"``, ``"height"``). The caption comes from ``.txt`` (as
bytes, so ingest can reject non-UTF-8), else from ``json["caption"]``. Tars are read with
``tarfile`` in stream mode; only the current sample's bytes are held in memory. ``image_id``
is the key, ``caption_id`` ``<key>#0``. A tar that breaks off mid-way yields a ``corrupt_tar``
reject and reading goes on with the next shard.

The total is known when img2dataset's ``<shard>_stats.json`` files sit next to the tars.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlpipe.errors import InputError

from .base import Record, Records, Reject, infer_split, input_files, source_label

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
WANTED = set(IMAGE_EXTENSIONS) | {"txt", "json"}


def _split_name(name: str) -> tuple[str, str]:
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _sample(key: str, parts: dict[str, tuple[str, bytes]], tar: Path, split: str, source: str) -> Record | Reject:
    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
    image_path = f"{tar}/{image[0]}" if image else None
    meta: dict = {}
    caption: str | bytes | None = parts["txt"][1] if "txt" in parts else None
    if "json" in parts:
        try:
            loaded = json.loads(parts["json"][1])
            meta = loaded if isinstance(loaded, dict) else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if caption is None:
                return Reject(reason="bad_row", detail=f"{key}.json is not valid JSON ({e})", image_id=key,
                              caption_id=f"{key}#0", split=split, source=source, image_path=image_path)
        if caption is None and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
    if image is None:
        return Reject(reason="missing_image", detail=f"sample {key} has no .jpg/.png/.webp member", image_id=key,
                      caption_id=f"{key}#0", caption=caption, split=split, source=source)
    if caption is None:
        return Reject(reason="missing_caption", detail=f"sample {key} has no .txt or json caption", image_id=key,
                      caption_id=f"{key}#0", split=split, source=source, image_path=image_path)
    w, h = meta.get("width"), meta.get("height")
    return Record(image_id=key, caption_id=f"{key}#0", caption=caption, split=split, source=source,
                  image_path=image_path, image_bytes=image[1],
                  width=w if isinstance(w, int) else None, height=h if isinstance(h, int) else None)


def _shard_rows(tar: Path, split: str) -> Iterator[Record | Reject]:
    source = source_label("webdataset", tar)
    key: str | None = None
    parts: dict[str, tuple[str, bytes]] = {}
    try:
        with tarfile.open(tar, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                k, ext = _split_name(member.name)
                if k != key:
                    if key is not None and parts:
                        yield _sample(key, parts, tar, split, source)
                    key, parts = k, {}
                if ext in WANTED:
                    f = tf.extractfile(member)
                    parts[ext] = (member.name, f.read() if f is not None else b"")
    except (tarfile.TarError, EOFError, OSError) as e:
        yield Reject(reason="corrupt_tar", detail=f"{tar.name} breaks off after sample {key!r} ({e}); rest of shard skipped",
                     image_id=key, split=split, source=source)
        return
    if key is not None and parts:
        yield _sample(key, parts, tar, split, source)


def _rows(tars: list[Path], split: str | None) -> Iterator[Record | Reject]:
    for tar in tars:
        yield from _shard_rows(tar, split or infer_split(tar.name) or "train")


def _expected_rows(tars: list[Path]) -> int | None:
    total = 0
    for tar in tars:
        stats = tar.with_name(tar.name.split(".")[0] + "_stats.json")
        try:
            total += int(json.loads(stats.read_text())["successes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


def read_webdataset(inputs: Sequence[str | Path], images: str | Path | None = None, split: str | None = None) -> Records:
    """Records of tar shards given as paths, globs or ``{00000..00099}`` ranges (``images`` is unused)."""
    tars = input_files(inputs, "tar shard", patterns=True)
    for tar in tars:
        try:
            with tarfile.open(tar, mode="r|*") as tf:
                tf.next()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InputError(tar, f"not a readable tar file ({e})", "pass img2dataset webdataset .tar shards") from None
    return Records(_rows(tars, split), total=_expected_rows(tars), exact=False)
