"""Task writers: each turns the generated scenes into one task's files, in upstream formats.

A writer is ``writer(scenes, rng, out_dir) -> [relative file names]``: ``scenes`` are all images
in image-id order with their ground truth (objects, boxes, relations, captions) and their image
files already written under ``out_dir``; ``rng`` is a random stream seeded from (seed, task name)
for anything the task must sample (questions, distractors, pairs...). Adding a task is adding one
function to :data:`TASKS`. The downstream tasks live in their own modules: :mod:`.task_vqa`,
:mod:`.task_snli_ve`, :mod:`.task_nlvr2`, :mod:`.task_refcoco`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .files import COCO_INFO, DATE_CAPTURED, tokenize, write_json
from .scene import Scene
from .task_nlvr2 import write_nlvr2_task
from .task_refcoco import write_refcoco_task
from .task_snli_ve import write_snli_ve_task
from .task_vqa import write_vqa_task

TaskWriter = Callable[[list[Scene], random.Random, Path], list[str]]

__all__ = ["COCO_INFO", "DATE_CAPTURED", "TASKS", "TaskWriter", "tokenize", "write_json"]


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
    "vqa": write_vqa_task,
    "snli_ve": write_snli_ve_task,
    "nlvr2": write_nlvr2_task,
    "refcoco": write_refcoco_task,
}
