"""CSV and JSON Lines tables: one row per caption (or per image with a list of captions).

A table names an image (``image_col``, a path relative to the image root) and a caption
(``caption_col``; in JSON Lines it may be a list of captions); optionally the split
(``split_col``) and the image id (``id_col``, default: the image path as written). Rows whose
image is an http(s) URL are rejected (``url_not_local``): vlpipe never downloads. Both read
streaming, row by row. ``caption_id`` is ``<file name>:<row>`` (row counted from 1, header
excluded), with ``#<k>`` appended for the k-th caption of a list.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlpipe.errors import InputError

from .base import Record, Records, Reject, count_lines, image_root, infer_split, input_files, is_url, resolve_image, source_label

URL_HINT = "vlpipe reads local files only: download the images (e.g. with img2dataset) and point the table at them"


class _Columns:
    def __init__(self, image: str, caption: str, split: str | None, ident: str | None):
        self.image, self.caption, self.split, self.ident = image, caption, split, ident

    def names(self) -> list[str]:
        return [c for c in (self.image, self.caption, self.split, self.ident) if c]

    def check(self, path: Path, have: list[str], where: str) -> None:
        for flag, col in (("--image-col", self.image), ("--caption-col", self.caption),
                          ("--split-col", self.split), ("--id-col", self.ident)):
            if col and col not in have:
                shown = ", ".join(have[:20]) or "none"
                raise InputError(path, f"{where} has no column {col!r} (columns: {shown})",
                                 f"name the right column with {flag}")


def _rows_of(
    row: dict[str, Any] | None, cols: _Columns, root: Path, split: str, source: str, row_key: str, bad: str | None
) -> Iterator[Record | Reject]:
    """Records (or rejects) of one table row, given as a dict of column values."""
    if row is None:
        yield Reject(reason="bad_row", detail=bad or "unreadable row", caption_id=row_key, split=split, source=source)
        return
    image = row.get(cols.image)
    caption = row.get(cols.caption)
    row_split = row.get(cols.split) if cols.split else None
    split = str(row_split) if row_split not in (None, "") else split
    ident = row.get(cols.ident) if cols.ident else None
    if isinstance(image, str):
        image = image.strip()
    image_id = str(ident) if ident not in (None, "") else (image if isinstance(image, str) else None)
    captions = caption if isinstance(caption, list) else [caption]
    many = isinstance(caption, list)
    for k, cap in enumerate(captions):
        cid = f"{row_key}#{k}" if many else row_key
        if isinstance(cap, (int, float)) and not isinstance(cap, bool):
            cap = str(cap)
        if not isinstance(image, str) or not image:
            yield Reject(reason="missing_image", detail=f"no {cols.image!r} value", image_id=image_id,
                         caption_id=cid, caption=cap if isinstance(cap, str) else None, split=split, source=source)
        elif is_url(image):
            yield Reject(reason="url_not_local", detail=URL_HINT, image_id=image_id, caption_id=cid,
                         caption=cap if isinstance(cap, str) else None, split=split, source=source, image_path=image)
        elif not isinstance(cap, str):
            yield Reject(reason="missing_caption", detail=f"no {cols.caption!r} string", image_id=image_id,
                         caption_id=cid, split=split, source=source, image_path=resolve_image(root, image))
        else:
            yield Record(image_id=image_id, caption_id=cid, caption=cap, split=split, source=source,
                         image_path=resolve_image(root, image))


def _split_for(path: Path, split: str | None) -> str:
    return split or infer_split(path.name) or "train"


def _csv_rows(files: list[Path], cols: _Columns, root: Path, split: str | None, delimiter: str | None) -> Iterator[Record | Reject]:
    for path in files:
        source, file_split = source_label("csv", path), _split_for(path, split)
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.reader(f, delimiter=_delimiter(path, delimiter))
            header = next(reader, [])
            index = {name: header.index(name) for name in cols.names()}
            width = len(header)
            for n, values in enumerate(reader, 1):
                if not values:
                    continue
                key = f"{path.name}:{n}"
                if len(values) != width:
                    yield from _rows_of(None, cols, root, file_split, source, key,
                                        f"line {reader.line_num}: {len(values)} fields, header has {width}")
                    continue
                row = {name: values[i] for name, i in index.items()}
                yield from _rows_of(row, cols, root, file_split, source, key, None)


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter:
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def read_csv(
    inputs: Sequence[str | Path],
    images: str | Path | None = None,
    split: str | None = None,
    *,
    image_col: str = "image",
    caption_col: str = "caption",
    split_col: str | None = None,
    id_col: str | None = None,
    delimiter: str | None = None,
) -> Records:
    """Records of CSV files with a header row (``.tsv`` files are read tab-separated)."""
    files = input_files(inputs, "CSV file")
    root = image_root(images, files[0])
    cols = _Columns(image_col, caption_col, split_col, id_col)
    total = 0
    for path in files:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            try:
                header = next(csv.reader(f, delimiter=_delimiter(path, delimiter)), None)
            except csv.Error as e:
                raise InputError(path, f"not a readable CSV header ({e})", "pass a CSV file with a header row") from None
        if not header:
            raise InputError(path, "empty file, no header row", "pass a CSV file with a header row naming the columns")
        cols.check(path, header, "header")
        total += max(0, count_lines(path) - 1)
    return Records(_csv_rows(files, cols, root, split, delimiter), total=total, exact=False)


def _parse_line(line: bytes) -> tuple[dict | None, str | None]:
    try:
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as e:
        return None, f"not valid JSON at column {e.colno}: {e.msg}"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    return obj, None


def _jsonl_rows(files: list[Path], cols: _Columns, root: Path, split: str | None) -> Iterator[Record | Reject]:
    for path in files:
        source, file_split = source_label("jsonl", path), _split_for(path, split)
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row, bad = _parse_line(line)
                yield from _rows_of(row, cols, root, file_split, source, f"{path.name}:{n}",
                                    f"line {n}: {bad}" if bad else None)


def read_jsonl(
    inputs: Sequence[str | Path],
    images: str | Path | None = None,
    split: str | None = None,
    *,
    image_col: str = "image",
    caption_col: str = "caption",
    split_col: str | None = None,
    id_col: str | None = None,
) -> Records:
    """Records of JSON Lines files, one object per line; a bad line is a ``bad_row`` reject."""
    files = input_files(inputs, "JSON Lines file")
    root = image_root(images, files[0])
    cols = _Columns(image_col, caption_col, split_col, id_col)
    total = 0
    for path in files:
        first, line_no = None, 0
        with open(path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    first = line
                    break
        if first is None:
            raise InputError(path, "empty file", "pass a JSON Lines file with one object per line")
        row, bad = _parse_line(first)
        if row is None:
            raise InputError(path, f"line {line_no}: {bad}", "expected JSON Lines, one object per line")
        cols.check(path, list(row), f"line {line_no}")
        total += count_lines(path)
    return Records(_jsonl_rows(files, cols, root, split), total=total, exact=False)
