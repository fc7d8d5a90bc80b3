"""What the downstream-task readers share: JSON Lines / JSON-list sniffing, image lookup, splits.

Whole-file problems (unreadable, not JSON, wrong schema, empty) raise
:class:`~vlpipe.errors.InputError` when the reader is called; a bad line further down a JSON
Lines file becomes a ``bad_row`` reject.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlpipe.errors import InputError

from .base import infer_split, load_json

_COCO_NAME = re.compile(r"COCO_([a-z\-]+\d{4})_0*(\d+)$")


def first_char(path: Path) -> str:
    """The first non-whitespace character of a file ('' if it has none)."""
    try:
        with open(path, "rb") as f:
            while block := f.read(4096):
                stripped = block.lstrip()
                if stripped:
                    return chr(stripped[0])
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})", "check the file's permissions") from None
    return ""


def parse_line(line: bytes) -> tuple[dict | None, str | None]:
    """One JSON Lines line -> (object, None) or (None, why not)."""
    try:
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as e:
        return None, f"not valid JSON at column {e.colno}: {e.msg}"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    return obj, None


def check_jsonl(path: Path, required: tuple[str, ...], expected: str) -> int:
    """Check a JSON Lines file's first object (it must parse and have ``required`` keys);
    returns the number of non-empty lines."""
    n, first = 0, None
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            if first is None:
                first = (line_no, line)
    if first is None:
        raise InputError(path, "empty file", f"expected {expected}")
    obj, bad = parse_line(first[1])
    if obj is None:
        raise InputError(path, f"line {first[0]}: {bad}", f"expected {expected}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise InputError(path, f"line {first[0]} has no key {missing[0]!r}", f"expected {expected}")
    return n


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, object or None, why not) for every non-empty line."""
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                obj, bad = parse_line(line)
                yield line_no, obj, bad


def load_list(path: Path, expected: str, required: tuple[str, ...]) -> list[Any]:
    """A whole-file JSON list whose entries are objects with ``required`` keys (checked on the first)."""
    data = load_json(path, expected)
    if not isinstance(data, list):
        raise InputError(path, f"top level is a JSON {type(data).__name__}, not a list", f"expected {expected}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise InputError(path, f"entry [{i}] is a {type(entry).__name__}, not an object", f"expected {expected}")
    if data:
        missing = [k for k in required if k not in data[0]]
        if missing:
            raise InputError(path, f"entry [0] has no key {missing[0]!r}", f"expected {expected}")
    return data


def first_existing(root: Path, candidates: list[str]) -> str:
    """The absolute path of the first candidate (relative to ``root``) that is a file, else of the first."""
    for c in candidates:
        p = os.path.join(root, c)
        if os.path.isfile(p):
            return os.path.abspath(p)
    return os.path.abspath(os.path.join(root, candidates[0]))


def coco_image_id(name: str) -> str | None:
    """``coco_<n>`` for a COCO file name or stem (``COCO_val2014_000000000042.jpg`` -> ``coco_42``)."""
    stem = os.path.basename(name).rsplit(".", 1)[0]
    m = _COCO_NAME.search(stem)
    return f"coco_{int(m.group(2))}" if m else None


def coco_folder(name: str) -> str | None:
    """The COCO image folder a file name belongs to (``train2014``), if it says."""
    m = _COCO_NAME.search(os.path.basename(name).rsplit(".", 1)[0])
    return m.group(1) if m else None


def split_of_subtype(subtype: str) -> str | None:
    """VQA / COCO data subtype -> split: train2014 -> train, val2014 -> val, test2015 -> test."""
    return infer_split(subtype.replace("-", "_"))


def karpathy_splits(path: Path, data: dict) -> dict[str, str]:
    """image id (``coco_<cocoid>``, ``flickr_<stem>``) -> split, from a Karpathy split file
    (``restval`` counts as train)."""
    out: dict[str, str] = {}
    for i, im in enumerate(data.get("images") or []):
        if not isinstance(im, dict) or not isinstance(im.get("split"), str):
            raise InputError(path, f"images[{i}] has no 'split' string", "expected a Karpathy split file (dataset_coco.json)")
        split = "train" if im["split"] == "restval" else im["split"]
        if im.get("cocoid") is not None:
            out[f"coco_{im['cocoid']}"] = split
        elif isinstance(im.get("filename"), str):
            image_id = coco_image_id(im["filename"]) or f"flickr_{im['filename'].rsplit('.', 1)[0]}"
            out[image_id] = split
    return out


def is_karpathy(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and bool(data["images"]) \
        and isinstance(data["images"][0], dict) and "sentences" in data["images"][0]
