"""NLVR2: sentences about image pairs (JSON Lines, and ALBEF's nlvr json lists) -> nlvr2 rows.

Inputs (recognised by content):

* upstream ``train.json`` / ``dev.json`` / ``test1.json`` (JSON Lines despite the name), one object
  per sentence: ``{"identifier": "train-10171-0-0", "sentence", "label": "True" | "False",
  "left_url", "right_url", "writer", "synset", "query", "validation", "extra_validations",
  "directory" (train only)}``. The images are ``<split>-<set>-<pair>-img0.png`` / ``-img1.png``
  (the identifier without its last ``-<sentence>`` part), looked up in
  ``<root>/<split>/<directory>/``, ``<root>/images/<split>/<directory>/``, ``<root>/<split>/``,
  ``<root>/images/<split>/``, ``<root>/``; a ``left_url`` / ``right_url`` that is a local
  relative path (the synthetic world's) is used first when that file exists;
* ALBEF lists ``nlvr_{train,dev,test}.json``: ``[{"images": [left, right], "sentence", "label"}]``,
  paths relative to the image root.

``image_id`` / ``image_id2``: ``coco_<n>`` for COCO file names, else the file name without
extension (``train-10171-0-img0``). ``example_id``: the identifier (``<file name>:<index>`` for
ALBEF lists). Labels ``True`` / ``False`` (strings or booleans); anything else is
``unknown_label`` at ingest. Split: ``split`` if given, else the file name (``dev`` -> val,
``test1`` -> test), else the identifier's prefix, else train.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlpipe.data.task_tables import TaskRecord

from .base import Records, Reject, image_root, infer_split, input_files, is_url, source_label
from .taskfiles import check_jsonl, coco_image_id, first_char, first_existing, jsonl_objects, load_list

EXPECTED_JSONL = "NLVR2 JSON Lines (dev.json): one {identifier, sentence, label, left_url, right_url, ...} per line"
EXPECTED_LIST = 'an ALBEF nlvr json list of {"images": [left, right], "sentence", "label"}'


def _image_id(path: str) -> str:
    return coco_image_id(path) or os.path.basename(path).rsplit(".", 1)[0]


def _upstream_images(root: Path, obj: dict) -> tuple[str, str]:
    ident = str(obj.get("identifier"))
    stem = ident.rsplit("-", 1)[0]
    split_dir = ident.split("-", 1)[0]
    directory = obj.get("directory")
    out = []
    for k, url_key in ((0, "left_url"), (1, "right_url")):
        name = f"{stem}-img{k}.png"
        candidates = []
        url = obj.get(url_key)
        if isinstance(url, str) and url and not is_url(url) and os.path.isfile(os.path.join(root, url)):
            candidates.append(url)
        if directory is not None and not isinstance(directory, (dict, list)):
            candidates += [f"{split_dir}/{directory}/{name}", f"images/{split_dir}/{directory}/{name}"]
        candidates += [f"{split_dir}/{name}", f"images/{split_dir}/{name}", name]
        out.append(first_existing(root, candidates))
    return out[0], out[1]


def _record(example_id: str, split: str, source: str, left: str, right: str, sentence: Any, label: Any) -> TaskRecord:
    return TaskRecord(example_id=example_id, split=split, image_id=_image_id(left), source=source, image_path=left,
                      image_id2=_image_id(right), image_path2=right, fields={"sentence": sentence, "label": label})


def _rows(plans: list[tuple[Path, str, Any]], root: Path, split: str | None) -> Iterator[TaskRecord | Reject]:
    for path, kind, data in plans:
        file_split = split or infer_split(path.name)
        if kind == "list":
            source = source_label("albef", path)
            for i, e in enumerate(data):
                key = f"{path.name}:{i}"
                images = e.get("images")
                if not (isinstance(images, list) and len(images) == 2 and all(isinstance(x, str) and x for x in images)):
                    yield Reject(reason="missing_image", detail="'images' is not a list of two paths", caption_id=key,
                                 caption=e.get("sentence") if isinstance(e.get("sentence"), str) else None,
                                 split=file_split or "train", source=source)
                    continue
                left, right = (os.path.abspath(os.path.join(root, x)) for x in images)
                yield _record(key, file_split or "train", source, left, right, e.get("sentence"), e.get("label"))
            continue
        source = source_label("nlvr2", path)
        for line_no, obj, bad in jsonl_objects(path):
            key = f"{path.name}:{line_no}"
            if obj is None:
                yield Reject(reason="bad_row", detail=f"line {line_no}: {bad}", caption_id=key,
                             split=file_split or "train", source=source)
                continue
            ident = obj.get("identifier")
            row_split = file_split or (infer_split(str(ident).split("-", 1)[0]) if isinstance(ident, str) else None) \
                or "train"
            if not isinstance(ident, str) or ident.count("-") < 2:
                yield Reject(reason="bad_row", detail=f"line {line_no}: no 'identifier' of the form split-set-pair-sentence",
                             caption_id=key, split=row_split, source=source)
                continue
            left, right = _upstream_images(root, obj)
            yield _record(ident, row_split, source, left, right, obj.get("sentence"), obj.get("label"))


def read_nlvr2(inputs: Sequence[str | Path], images: str | Path | None = None, split: str | None = None) -> Records:
    """Rows of the nlvr2 task table from NLVR2 JSON Lines and/or ALBEF nlvr json lists."""
    files = input_files(inputs, "NLVR2 file")
    root = image_root(images, files[0])
    plans: list[tuple[Path, str, Any]] = []
    total = 0
    for path in files:
        if first_char(path) == "[":
            data = load_list(path, EXPECTED_LIST, ("images", "sentence"))
            plans.append((path, "list", data))
            total += len(data)
        else:
            total += check_jsonl(path, ("identifier", "sentence"), EXPECTED_JSONL)
            plans.append((path, "jsonl", None))
    return Records(_rows(plans, root, split), total=total)
