"""Miniatures of the real datasets for ``vlpipe reproduce --smoke``, drawn by the synthetic world.

COCO needs nothing here: ``vlpipe synth`` already writes the COCO 2014 layout (train2014/, val2014/,
annotations/, dataset_coco.json, coco_*.json). :func:`write_flickr_miniature` rearranges a synthetic
world into the Flickr30K layout the real recipe reads: ``flickr30k-images/<id>.jpg`` and Karpathy's
``dataset_flickr30k.json`` (no ``filepath`` / ``cocoid``, ``"dataset": "flickr30k"``), so the smoke run
goes through the Flickr branch of the Karpathy reader exactly as the real data does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from vlpipe.data.synth.generate import generate
from vlpipe.data.synth.files import write_json
from vlpipe.progress import Progress

FLICKR_IMAGES = "flickr30k-images"
FLICKR_SPLIT_FILE = "dataset_flickr30k.json"
FLICKR_ID_BASE = 1_000_000_000  # Flickr30K file names are numeric photo ids (e.g. 1000092795.jpg)


def write_flickr_miniature(out_dir: Path, images: int, seed: int, size: int, workers: int | None = None,
                           progress: Progress | None = None) -> dict[str, Any]:
    """A synthetic world of ``images`` images in the Flickr30K layout under ``out_dir``; returns stats."""
    out = Path(out_dir)
    stats = generate(out, images, seed=seed, size=size, workers=workers, progress=progress)
    coco = json.loads((out / "dataset_coco.json").read_text(encoding="utf-8"))
    (out / FLICKR_IMAGES).mkdir(parents=True, exist_ok=True)
    entries = []
    for im in coco["images"]:
        name = f"{FLICKR_ID_BASE + int(im['cocoid'])}.jpg"
        (out / im["filepath"] / im["filename"]).replace(out / FLICKR_IMAGES / name)
        entries.append({"sentids": im["sentids"], "imgid": im["imgid"], "sentences": im["sentences"],
                        "split": im["split"], "filename": name})
    write_json(out / FLICKR_SPLIT_FILE, {"images": entries, "dataset": "flickr30k"})
    # only the Flickr30K layout stays: the COCO files would name images that moved
    for folder in ("train2014", "val2014", "annotations"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for f in out.glob("*.json"):
        if f.name != FLICKR_SPLIT_FILE:
            f.unlink()
    return {"images": stats["images"], "splits": stats["splits"], "captions": stats["captions"],
            "layout": "flickr30k", "files": [FLICKR_IMAGES + "/", FLICKR_SPLIT_FILE]}
