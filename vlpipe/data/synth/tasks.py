"""Task writers: each turns the generated scenes into one task's files, in upstream formats.

A writer is ``writer(scenes, rng, out_dir) -> [relative file names]``: ``scenes`` are all images
in image-id order with their ground truth (objects, boxes, relations, captions) and their image
files already written under ``out_dir``; ``rng`` is a random stream seeded from (seed, task name)
for anything the task must sample (questions, distractors, pairs...). Adding a task is adding one
function to :data:`TASKS`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .scene import Scene

TaskWriter = Callable[[list[Scene], random.Random, Path], list[str]]

#: Constant COCO ``info`` / dates, so equal seeds give byte-identical files.
COCO_INFO = {
    "description": "vlpipe synthetic pictogram world (COCO captions layout)",
    "url": "",
    "version": "1.0",
    "year": 2014,
    "contributor": "vlpipe",
    "date_created": "2014-01-01 00:00:00",
}
DATE_CAPTURED = "2014-01-01 00:00:00"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON deterministically (key order as built, UTF-8, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps uses the C encoder; json.dump to a file would stream through the slow Python one.
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def tokenize(caption: str) -> list[str]:
    """Karpathy-style tokens: lowercased words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


def write_captions_task(scenes: list[Scene], rng: random.Random, out_dir: Path) -> list[str]:
    """COCO captions: the 2014 annotation files, the Karpathy split file and ALBEF's lists.

    Writes ``annotations/captions_train2014.json`` (train split) and
    ``annotations/captions_val2014.json`` (val and test splits), ``dataset_coco.json`` and
    ``coco_train.json`` / ``coco_val.json`` / ``coco_test.json``.
    """
    coco: dict[str, dict[str, Any]] = {
        name: {"info": COCO_INFO, "licenses": [], "images": [], "annotations": []}
        for name in ("train2014", "val2014")
    }
    karpathy = []
    albef: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    sentid = 0
    for imgid, s in enumerate(scenes):
        folder, filename = s.file_name.split("/")
        part = coco[folder]
        part["images"].append({
            "id": s.image_id,
            "file_name": filename,
            "width": s.size,
            "height": s.size,
            "license": 0,
            "coco_url": "",
            "date_captured": DATE_CAPTURED,
            "flickr_url": "",
        })
        sentences, sentids = [], []
        for cap in s.captions:
            part["annotations"].append({"id": sentid + 1, "image_id": s.image_id, "caption": cap})
            sentences.append({"tokens": tokenize(cap), "raw": cap, "imgid": imgid, "sentid": sentid})
            sentids.append(sentid)
            sentid += 1
        karpathy.append({
            "filepath": folder,
            "sentids": sentids,
            "filename": filename,
            "imgid": imgid,
            "split": s.split,
            "sentences": sentences,
            "cocoid": s.image_id,
        })
        if s.split == "train":
            albef["train"] += [
                {"caption": cap, "image": s.file_name, "image_id": f"coco_{s.image_id}"}
                for cap in s.captions
            ]
        else:
            albef[s.split].append({"image": s.file_name, "caption": list(s.captions)})

    files = []
    for folder, part in coco.items():
        rel = f"annotations/captions_{folder}.json"
        write_json(out_dir / rel, part)
        files.append(rel)
    write_json(out_dir / "dataset_coco.json", {"images": karpathy, "dataset": "coco"})
    files.append("dataset_coco.json")
    for split, rows in albef.items():
        write_json(out_dir / f"coco_{split}.json", rows)
        files.append(f"coco_{split}.json")
    return files


#: Task name -> writer. The generator runs the writers named by ``--tasks``, in this order.
TASKS: dict[str, TaskWriter] = {
    "captions": write_captions_task,
}
