"""Conceptual Captions TSVs (CC3M ``Train_GCC-training.tsv``, CC12M ``cc12m.tsv``).

Each line is ``caption<TAB>image`` (CC12M writes ``image<TAB>caption``: pass ``image_first``),
with no header unless ``header``. Upstream the image is a URL: vlpipe does not download, so URL
rows are rejected (``url_not_local``) with the advice to fetch the images with img2dataset and
ingest its tar shards with the webdataset reader. A local image is a path relative to the image
root. Lines are read as bytes and the caption is passed on undecoded, so ingest can reject
non-UTF-8 captions. ``image_id`` is the image path as written, ``caption_id`` ``<file>:<line>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlpipe.errors import InputError

from .base import Record, Records, Reject, count_lines, image_root, infer_split, input_files, is_url, resolve_image, source_label

URL_HINT = ("vlpipe does not download: fetch the images with img2dataset (--input_format tsv "
            "--output_format webdataset) and run `vlpipe ingest webdataset` on the shards")


def _rows(files: list[Path], root: Path, split: str | None, header: bool, image_first: bool) -> Iterator[Record | Reject]:
    cap_i, img_i = (1, 0) if image_first else (0, 1)
    for path in files:
        source, file_split = source_label("cc3m", path), split or infer_split(path.name) or "train"
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if n == 1 and header:
                    continue
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                key = f"{path.name}:{n}"
                fields = line.split(b"\t")
                if len(fields) != 2:
                    yield Reject(reason="bad_row", detail=f"line {n}: {len(fields)} tab-separated fields, expected 2",
                                 caption_id=key, split=file_split, source=source)
                    continue
                caption, image = fields[cap_i], os.fsdecode(fields[img_i].strip())
                if is_url(image):
                    yield Reject(reason="url_not_local", detail=URL_HINT, image_id=image, caption_id=key,
                                 caption=caption, split=file_split, source=source, image_path=image)
                elif not image:
                    yield Reject(reason="missing_image", detail=f"line {n}: empty image field", caption_id=key,
                                 caption=caption, split=file_split, source=source)
                else:
                    yield Record(image_id=image, caption_id=key, caption=caption, split=file_split, source=source,
                                 image_path=resolve_image(root, image))


def _check_first_line(path: Path, header: bool) -> None:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if (n == 1 and header) or not line.strip():
                continue
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 2:
                raise InputError(path, f"line {n} has {len(fields)} tab-separated fields",
                                 "expected caption<TAB>image per line (pass --header if the first line names columns)")
            return
    raise InputError(path, "empty file", "expected caption<TAB>image lines")


def read_cc3m(
    inputs: Sequence[str | Path],
    images: str | Path | None = None,
    split: str | None = None,
    *,
    header: bool = False,
    image_first: bool = False,
) -> Records:
    """Records of CC3M/CC12M-style TSV files (``images``: root of relative image paths)."""
    files = input_files(inputs, "TSV file")
    root = image_root(images, files[0])
    for p in files:
        _check_first_line(p, header)
    total = sum(max(0, count_lines(p) - header) for p in files)
    return Records(_rows(files, root, split, header, image_first), total=total, exact=False)
