"""What every reader shares: the record types, the iterator they return, input checks.

A reader turns one upstream format into a deterministic stream of :class:`Record` (one caption
of one image) and :class:`Reject` (a row the reader itself found unusable, e.g. an annotation
without a caption). Problems with a whole input file (missing, not JSON, wrong schema) are raised
as :class:`~vlpipe.errors.InputError` when the reader is called, before anything is written, so
a stage can stop with one line and create no artifact.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpipe.errors import InputError

SPLITS = ("train", "val", "test", "restval")


@dataclass(slots=True, kw_only=True)
class Record:
    """One caption of one image.

    ``caption`` is ``bytes`` when the reader read raw bytes it did not decode (tar members, TSV
    lines); ingest decodes them and rejects non-UTF-8. ``image_path`` is the resolved local path;
    ``image_bytes`` holds the encoded image when it only exists in memory (tar shards).
    """

    image_id: str
    caption_id: str
    caption: str | bytes
    split: str
    source: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    width: int | None = None
    height: int | None = None


@dataclass(slots=True, kw_only=True)
class Reject:
    """A row a reader could not turn into a record; ``reason`` is a short snake_case code."""

    reason: str
    detail: str
    image_id: str | None = None
    caption_id: str | None = None
    caption: str | bytes | None = None
    split: str | None = None
    source: str | None = None
    image_path: str | None = None


class Records(Iterator["Record | Reject"]):
    """A reader's output: an iterator of records and rejects, with ``total`` items when known.

    ``total`` is the number of items the iterator yields (exact for JSON formats, a line count
    estimate for tables, ``None`` when unknown).
    """

    def __init__(self, items: Iterable[Record | Reject], total: int | None = None, *, exact: bool = True):
        self._it = iter(items)
        self.total = total
        self.exact = exact and total is not None

    def __iter__(self) -> Iterator[Record | Reject]:
        return self._it  # the bare generator: no Python-level __next__ per item for consumers

    def __next__(self) -> Record | Reject:
        return next(self._it)


# -- input files ------------------------------------------------------------------------------------
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """Expand img2dataset-style ``{00000..00012}`` ranges (zero padding kept)."""
    m = _BRACES.search(pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for i in range(int(lo), int(hi) + 1):
        out.extend(expand_braces(pattern[: m.start()] + str(i).zfill(width) + pattern[m.end():]))
    return out


def input_files(inputs: Iterable[str | Path], what: str = "input file", *, patterns: bool = False) -> list[Path]:
    """Check that every input exists and is a file; with ``patterns``, expand globs and braces."""
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise InputError("inputs", f"no {what} given", f"pass one or more {what}s")
    files: list[Path] = []
    for raw in inputs:
        if patterns and (_BRACES.search(raw) or glob.has_magic(raw)):
            found = sorted(p for pat in expand_braces(raw) for p in (glob.glob(pat) if glob.has_magic(pat) else [pat]))
            if not found:
                raise InputError(raw, f"no {what} matches this pattern", "check the path and the pattern")
            candidates = found
        else:
            candidates = [raw]
        for c in candidates:
            p = Path(c)
            if not p.exists():
                raise InputError(c, "no such file", f"check the path of the {what}")
            if not p.is_file():
                raise InputError(c, "is not a file", f"pass the {what} itself")
            files.append(p)
    return files


def image_root(images: str | Path | None, first_input: Path) -> Path:
    """``--images`` if given (must be a folder), else the folder of the first input file."""
    if images is None:
        return first_input.parent
    root = Path(images)
    if not root.is_dir():
        raise InputError(root, "image folder not found", "pass the folder the image paths are relative to with --images")
    return root


def resolve_image(root: Path, rel: str) -> str:
    """An absolute local path for an image given relative to ``root`` (absolute paths kept)."""
    return os.path.abspath(os.path.join(root, rel))


def load_json(path: Path, expected: str) -> Any:
    """Load a whole JSON file; malformed files raise a one-line InputError naming line and column."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})", "check the file's permissions") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise InputError(
            path, f"not valid JSON at line {e.lineno} column {e.colno}: {e.msg}",
            "the file is damaged or truncated: download it again",
        ) from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start})", f"expected {expected}") from None


def require_key(path: Path, obj: Any, key: str, kind: type, expected: str, where: str = "") -> Any:
    """``obj[key]``, checked to exist and be of ``kind``, else an InputError naming the key."""
    label = f"{where}{key!r}" if not where else f"{where}[{key!r}]"
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(path, f"missing key {label}", f"expected {expected}")
    value = obj[key]
    if not isinstance(value, kind):
        raise InputError(
            path, f"key {label} is a {type(value).__name__}, not a {kind.__name__}", f"expected {expected}"
        )
    return value


# -- small helpers ------------------------------------------------------------------------------------
def infer_split(name: str) -> str | None:
    """The split a file name announces (``coco_karpathy_val.json`` -> val), or None."""
    stem = Path(name).name.split(".")[0].lower()
    for token in re.split(r"[^a-z0-9]+", stem):
        token = token.rstrip("0123456789")
        if token in ("train", "training"):
            return "train"
        if token in ("val", "valid", "validation", "dev"):
            return "val"
        if token in ("test", "testing"):
            return "test"
        if token == "restval":
            return "restval"
    return None


def is_url(s: str) -> bool:
    return s[:8].lower().startswith(("http://", "https://"))


def source_label(fmt: str, path: Path | str) -> str:
    return f"{fmt}:{Path(path).name}"


def count_lines(path: Path, chunk: int = 1 << 22) -> int:
    """Lines in a file (a final line without newline counts), read in binary chunks."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(chunk):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def as_text(caption: str | bytes | None) -> str | None:
    """A printable form of a caption (for rejects): bytes decoded with replacement characters."""
    if caption is None:
        return None
    if isinstance(caption, bytes):
        return caption.decode("utf-8", "replace")
    try:
        caption.encode("utf-8")
        return caption
    except UnicodeEncodeError:  # lone surrogates, e.g. from a surrogateescape'd line
        try:
            return caption.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return caption.encode("utf-8", "replace").decode("utf-8")
