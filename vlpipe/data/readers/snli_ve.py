"""SNLI-VE: visual entailment JSON Lines (and ALBEF's ve json lists) -> ve rows.

Inputs (recognised by content):

* upstream ``snli_ve_{train,dev,test}.jsonl``, one object per line:
  ``{"Flickr30K_ID", "annotator_labels", "captionID", "gold_label", "pairID", "sentence1",
  "sentence1_binary_parse", "sentence1_parse", "sentence2", "sentence2_binary_parse",
  "sentence2_parse"}`` (some releases spell the id ``Flikr30kID``). The hypothesis is
  ``sentence2``, the premise caption ``sentence1``, the label ``gold_label``;
* ALBEF lists ``ve_{train,dev,test}.json``: ``[{"image": flickr id, "sentence", "label"}]``
  (the image file is ``<image>.jpg``).

The image of id ``X`` is ``X.jpg`` under the image root, or in ``flickr30k-images/`` (or, for
COCO-named images such as the synthetic world's, in ``train2014/`` / ``val2014/``).
``image_id``: ``coco_<n>`` for COCO file names, else ``flickr_<X>`` (the ids the Karpathy reader
gives the same images). ``example_id``: ``pairID`` (``<file name>:<line or index>`` without one).

Labels are kept as written; ingest rejects anything but entailment / neutral / contradiction
(SNLI's "-", no consensus, included) as ``unknown_label``. A line that is not a JSON object is a
``bad_row``. Split: ``split`` if given, else the file name (``dev`` -> val), else train.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlpipe.data.task_tables import TaskRecord

from .base import Records, Reject, image_root, infer_split, input_files, source_label
from .taskfiles import check_jsonl, coco_folder, coco_image_id, first_char, first_existing, jsonl_objects, load_list

EXPECTED_JSONL = "SNLI-VE JSON Lines (snli_ve_train.jsonl): one {Flickr30K_ID, sentence2, gold_label, pairID, ...} per line"
EXPECTED_LIST = 'an ALBEF ve json list of {"image", "sentence", "label"}'


def _image(root: Path, ident: str) -> tuple[str, str]:
    """(image_id, absolute path) of Flickr id / file stem ``ident``."""
    name = ident if ident.lower().endswith((".jpg", ".jpeg", ".png")) else ident + ".jpg"
    candidates = [name, f"flickr30k-images/{os.path.basename(name)}"]
    folder = coco_folder(name)
    if folder:
        candidates.append(f"{folder}/{os.path.basename(name)}")
    image_id = coco_image_id(name) or f"flickr_{os.path.basename(name).rsplit('.', 1)[0]}"
    return image_id, first_existing(root, candidates)


def _record(root: Path, ident: Any, hypothesis: Any, label: Any, premise: Any, example_id: str, split: str,
            source: str) -> TaskRecord | Reject:
    if ident is None or ident == "" or isinstance(ident, (dict, list, bool)):
        return Reject(reason="missing_image", detail="the row names no image", caption_id=example_id,
                      caption=hypothesis if isinstance(hypothesis, str) else None, split=split, source=source)
    image_id, path = _image(root, str(ident))
    return TaskRecord(example_id=example_id, split=split, image_id=image_id, source=source, image_path=path,
                      fields={"hypothesis": hypothesis, "premise": premise if isinstance(premise, str) else None,
                              "label": label})


def _rows(plans: list[tuple[Path, str, Any]], root: Path, split: str | None) -> Iterator[TaskRecord | Reject]:
    for path, kind, data in plans:
        file_split = split or infer_split(path.name) or "train"
        if kind == "list":
            source = source_label("albef", path)
            for i, e in enumerate(data):
                yield _record(root, e.get("image"), e.get("sentence"), e.get("label"), None,
                              f"{path.name}:{i}", file_split, source)
            continue
        source = source_label("snli_ve", path)
        for line_no, obj, bad in jsonl_objects(path):
            key = f"{path.name}:{line_no}"
            if obj is None:
                yield Reject(reason="bad_row", detail=f"line {line_no}: {bad}", caption_id=key, split=file_split,
                             source=source)
                continue
            pair = obj.get("pairID")
            example_id = str(pair) if isinstance(pair, (str, int)) and pair != "" else key
            ident = obj.get("Flickr30K_ID", obj.get("Flikr30kID"))
            yield _record(root, ident, obj.get("sentence2"), obj.get("gold_label"), obj.get("sentence1"),
                          example_id, file_split, source)


def read_snli_ve(inputs: Sequence[str | Path], images: str | Path | None = None, split: str | None = None) -> Records:
    """Rows of the ve task table from SNLI-VE JSON Lines and/or ALBEF ve json lists."""
    files = input_files(inputs, "SNLI-VE file")
    root = image_root(images, files[0])
    plans: list[tuple[Path, str, Any]] = []
    total = 0
    for path in files:
        if first_char(path) == "[":
            data = load_list(path, EXPECTED_LIST, ("image", "sentence"))
            plans.append((path, "list", data))
            total += len(data)
        else:
            n = check_jsonl(path, ("sentence2",), EXPECTED_JSONL)
            plans.append((path, "jsonl", None))
            total += n
    return Records(_rows(plans, root, split), total=total)
