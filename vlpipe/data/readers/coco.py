"""COCO captions files: ``captions_{train,val}2014.json``.

Schema (upstream)::

    {"info": ..., "licenses": ...,
     "images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg",
                 "width": 640, "height": 360, ...}, ...],
     "annotations": [{"id": 770337, "image_id": 391895, "caption": "A man with ..."}, ...]}

Rows come out image by image (in the order of ``images``), each image's captions in the order of
``annotations``; annotations naming an unknown image come last, as rejects. ``image_id`` is
``coco_<id>`` (the same ids as the Karpathy reader gives COCO images), ``caption_id`` is
``coco_<id>#<k>`` with k the caption's index among its image's annotations.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlpipe.errors import InputError

from .base import Record, Records, Reject, image_root, infer_split, input_files, load_json, require_key, source_label

EXPECTED = 'a COCO captions file (captions_train2014.json) with "images" and "annotations" lists'
_SUBDIR = re.compile(r"(train|val|test)20\d\d")


def _locate(root: Path, file_name: str, json_name: str) -> str:
    """``root/file_name``, else ``root/<train2014|val2014>/file_name``; the first that exists."""
    candidates = [file_name]
    for m in (_SUBDIR.search(file_name), _SUBDIR.search(json_name)):
        if m and m.group(0) + "/" + file_name not in candidates:
            candidates.append(m.group(0) + "/" + file_name)
    candidates += [d + "/" + file_name for d in ("train2014", "val2014") if d + "/" + file_name not in candidates]
    for c in candidates:
        p = os.path.join(root, c)
        if os.path.isfile(p):
            return os.path.abspath(p)
    return os.path.abspath(os.path.join(root, file_name))


def _plan(path: Path, root: Path, split: str | None) -> tuple[list, list[Reject], int]:
    data = load_json(path, EXPECTED)
    if not isinstance(data, dict):
        raise InputError(path, f"top level is a JSON {type(data).__name__}, not an object",
                         f"expected {EXPECTED}; ALBEF json lists go to `vlpipe ingest karpathy`")
    if "images" in data and "annotations" not in data and data["images"] and isinstance(data["images"][0], dict) \
            and "sentences" in data["images"][0]:
        raise InputError(path, "missing key 'annotations' (this is a Karpathy split file)",
                         "use `vlpipe ingest karpathy` for dataset_*.json")
    images = require_key(path, data, "images", list, EXPECTED)
    anns = require_key(path, data, "annotations", list, EXPECTED)
    split = split or infer_split(path.name)
    if split is None:
        raise InputError(path, "cannot tell the split from the file name", "pass --split train|val|test")
    source = source_label("coco", path)

    if anns and not any(isinstance(a, dict) and "caption" in a for a in anns[:100]):
        raise InputError(path, "annotations have no 'caption' key (an instances or keypoints file?)",
                         f"expected {EXPECTED}")
    by_image: dict[object, list] = {}
    order = []
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise InputError(path, f"images[{i}] is a {type(im).__name__}, not an object", f"expected {EXPECTED}")
        for key in ("id", "file_name"):
            if key not in im:
                raise InputError(path, f"images[{i}] has no key {key!r}", f"expected {EXPECTED}")
        if im["id"] not in by_image:
            by_image[im["id"]] = []
            order.append(im)
    orphans: list[Reject] = []
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise InputError(path, f"annotations[{i}] is a {type(a).__name__}, not an object", f"expected {EXPECTED}")
        caps = by_image.get(a.get("image_id"))
        if caps is None:
            orphans.append(Reject(
                reason="unknown_image", detail=f"annotations[{i}] names image_id {a.get('image_id')!r}, not in 'images'",
                caption_id=f"coco_ann_{a.get('id')}", caption=a.get("caption") if isinstance(a.get("caption"), str) else None,
                split=split, source=source,
            ))
        else:
            caps.append(a.get("caption"))
    plan = []
    for im in order:
        w, h = im.get("width"), im.get("height")
        plan.append((
            f"coco_{im['id']}", _locate(root, str(im["file_name"]), path.name),
            w if isinstance(w, int) else None, h if isinstance(h, int) else None, by_image[im["id"]],
        ))
    total = len(anns) + sum(1 for p in plan if not p[4])
    return plan, orphans, total


def _rows(plans: list, split_of: list[str], sources: list[str]) -> Iterator[Record | Reject]:
    for (plan, orphans, _), split, source in zip(plans, split_of, sources):
        for image_id, image_path, w, h, captions in plan:
            if not captions:
                yield Reject(reason="missing_caption", detail="image has no annotation", image_id=image_id,
                             split=split, source=source, image_path=image_path)
            for k, cap in enumerate(captions):
                if isinstance(cap, str):
                    yield Record(image_id=image_id, caption_id=f"{image_id}#{k}", caption=cap, split=split,
                                 source=source, image_path=image_path, width=w, height=h)
                else:
                    yield Reject(reason="missing_caption", detail="annotation has no 'caption' string",
                                 image_id=image_id, caption_id=f"{image_id}#{k}", split=split, source=source,
                                 image_path=image_path)
        yield from orphans


def read_coco(inputs: Sequence[str | Path], images: str | Path | None = None, split: str | None = None) -> Records:
    """Records of one or more COCO captions files; images are looked up under ``images``
    (default: the folder of the first file), directly or in ``train2014/`` / ``val2014/``."""
    files = input_files(inputs, "COCO captions file")
    root = image_root(images, files[0])
    plans = [_plan(p, root, split) for p in files]
    splits = [split or infer_split(p.name) for p in files]
    sources = [source_label("coco", p) for p in files]
    return Records(_rows(plans, splits, sources), total=sum(t for _, _, t in plans))
