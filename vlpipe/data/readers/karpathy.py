"""Karpathy split files (``dataset_coco.json``, ``dataset_flickr30k.json``) and ALBEF json lists.

Karpathy schema (upstream)::

    {"dataset": "coco",
     "images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
                 "imgid": 0, "split": "test", "cocoid": 391895,
                 "sentences": [{"raw": "A man ...", "tokens": [...], "imgid": 0, "sentid": 0}, ...],
                 "sentids": [...]}, ...]}

Flickr files have no ``filepath`` / ``cocoid``. The image path is ``root/filepath/filename`` (COCO)
or ``root/filename`` (Flickr; ``root/flickr30k-images/filename`` is tried too). ``restval``
images become ``train`` unless ``keep_restval``. ``image_id`` is ``coco_<cocoid>`` or
``flickr_<file stem>``.

ALBEF json lists (a top-level list): the train file has one entry per caption,
``{"image": "val2014/COCO_val2014_000000522418.jpg", "caption": "...", "image_id": "coco_522418"}``;
val/test files have one entry per image with a list of captions and no image id,
``{"image": "...", "caption": ["...", ...]}``, whose id is derived from the file name as ALBEF
does (COCO: the number in the name, ``coco_<int>``; Flickr: ``flickr_<stem>``). Image paths are
relative to the image root. The split comes from ``split`` or the list's file name.

``caption_id`` is ``<image_id>#<k>``, k counting the image's captions in file order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlpipe.errors import InputError

from .base import Record, Records, Reject, image_root, infer_split, input_files, load_json, source_label

EXPECTED_KARPATHY = 'a Karpathy split file (dataset_coco.json) with an "images" list of {filename, split, sentences}'
EXPECTED_ALBEF = 'an ALBEF json list of {"image", "caption"} objects'
EXPECTED = f"{EXPECTED_KARPATHY}, or {EXPECTED_ALBEF}"
_DIGITS = re.compile(r"\d+")

# One image: (image_id, absolute image path, split, captions: list of str | None)
Plan = list[tuple[str, str, str, list[Any]]]


def albef_image_id(image: str, list_name: str) -> str:
    """The image id ALBEF derives from an image path: ``coco_<int>`` or ``flickr_<stem>``."""
    name = os.path.basename(image)
    stem = name.rsplit(".", 1)[0]
    hint = (image + " " + list_name).lower()
    if "coco" in hint:
        nums = _DIGITS.findall(stem)
        if nums:
            return f"coco_{int(nums[-1])}"
    if "flickr" in hint:
        return f"flickr_{stem}"
    return image.rsplit(".", 1)[0]


def _karpathy_plan(path: Path, data: dict, root: Path, keep_restval: bool) -> Plan:
    images = data.get("images")
    if not isinstance(images, list):
        raise InputError(path, "key 'images' is not a list", f"expected {EXPECTED_KARPATHY}")
    dataset = str(data.get("dataset") or "")
    if not dataset and images and isinstance(images[0], dict):
        dataset = "coco" if "cocoid" in images[0] else "flickr"
    is_coco = dataset.startswith("coco")
    flickr_dir = ""
    if not is_coco and images and isinstance(images[0], dict) and isinstance(images[0].get("filename"), str):
        first = images[0]["filename"]
        if not (root / first).exists() and (root / "flickr30k-images" / first).exists():
            flickr_dir = "flickr30k-images"
    plan: Plan = []
    root_abs = os.path.abspath(root)
    for i, im in enumerate(images):
        if not isinstance(im, dict):
            raise InputError(path, f"images[{i}] is a {type(im).__name__}, not an object", f"expected {EXPECTED_KARPATHY}")
        for key, kind in (("filename", str), ("split", str), ("sentences", list)):
            if key not in im:
                if key == "filename" and "file_name" in im:
                    raise InputError(path, f"images[{i}] has no key 'filename' (this is a COCO captions file)",
                                     "use `vlpipe ingest coco` for captions_*.json")
                raise InputError(path, f"images[{i}] has no key {key!r}", f"expected {EXPECTED_KARPATHY}")
            if not isinstance(im[key], kind):
                raise InputError(path, f"images[{i}][{key!r}] is a {type(im[key]).__name__}, not a {kind.__name__}",
                                 f"expected {EXPECTED_KARPATHY}")
        filename = im["filename"]
        if is_coco:
            cocoid = im.get("cocoid")
            if cocoid is None:
                nums = _DIGITS.findall(filename)
                cocoid = int(nums[-1]) if nums else filename.rsplit(".", 1)[0]
            image_id = f"coco_{cocoid}"
            image_path = os.path.join(root_abs, str(im.get("filepath") or ""), filename)
        else:
            image_id = f"{dataset.rstrip('0123456789k') or 'flickr'}_{filename.rsplit('.', 1)[0]}"
            image_path = os.path.join(root_abs, flickr_dir, filename)
        split = im["split"]
        if split == "restval" and not keep_restval:
            split = "train"
        caps = [s.get("raw") if isinstance(s, dict) else None for s in im["sentences"]]
        plan.append((image_id, image_path, split, caps))
    return plan


def _albef_plan(path: Path, data: list, root: Path, split: str | None) -> Plan:
    split = split or infer_split(path.name)
    if split is None:
        raise InputError(path, "cannot tell the split from the file name", "pass --split train|val|test")
    plan: Plan = []
    root_abs = os.path.abspath(root)
    last: tuple[str, str] | None = None
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise InputError(path, f"entry [{i}] is a {type(entry).__name__}, not an object", f"expected {EXPECTED_ALBEF}")
        image = entry.get("image")
        if not isinstance(image, str):
            raise InputError(path, f"entry [{i}] has no 'image' string", f"expected {EXPECTED_ALBEF}")
        given = entry.get("image_id")
        image_id = str(given) if given is not None and given != "" else albef_image_id(image, path.name)
        caption = entry.get("caption")
        caps = list(caption) if isinstance(caption, list) else [caption]
        if last == (image_id, image):  # train lists: consecutive entries of one image
            plan[-1][3].extend(caps)
        else:
            plan.append((image_id, os.path.join(root_abs, image), split, caps))
            last = (image_id, image)
    return plan


def _rows(plans: list[tuple[Plan, str]]) -> Iterator[Record | Reject]:
    seen: dict[str, int] = {}
    for plan, source in plans:
        for image_id, image_path, split, captions in plan:
            if not captions:
                yield Reject(reason="missing_caption", detail="image has no sentences", image_id=image_id,
                             split=split, source=source, image_path=image_path)
                continue
            k0 = seen.get(image_id, 0)
            seen[image_id] = k0 + len(captions)
            for k, cap in enumerate(captions, k0):
                if isinstance(cap, str):
                    yield Record(image_id=image_id, caption_id=f"{image_id}#{k}", caption=cap, split=split,
                                 source=source, image_path=image_path)
                else:
                    yield Reject(reason="missing_caption", detail="sentence has no 'raw' / 'caption' string",
                                 image_id=image_id, caption_id=f"{image_id}#{k}", split=split, source=source,
                                 image_path=image_path)


def read_karpathy(
    inputs: Sequence[str | Path],
    images: str | Path | None = None,
    split: str | None = None,
    keep_restval: bool = False,
) -> Records:
    """Records of Karpathy split files and/or ALBEF json lists (both may be mixed).

    ``images`` is the image root (default: the folder of the first file). ``split`` sets the
    split of ALBEF lists whose file name does not tell it; Karpathy files carry their own.
    """
    files = input_files(inputs, "Karpathy or ALBEF json file")
    root = image_root(images, files[0])
    plans = []
    for path in files:
        data = load_json(path, EXPECTED)
        if isinstance(data, dict):
            if "images" not in data:
                hint = " (this looks like a COCO captions file)" if "annotations" in data else ""
                raise InputError(path, f"missing key 'images'{hint}", f"expected {EXPECTED}")
            plan = _karpathy_plan(path, data, root, keep_restval)
            fmt = "karpathy"
        elif isinstance(data, list):
            plan = _albef_plan(path, data, root, split)
            fmt = "albef"
        else:
            raise InputError(path, f"top level is a JSON {type(data).__name__}", f"expected {EXPECTED}")
        del data
        plans.append((plan, source_label(fmt, path)))
    total = sum(max(1, len(caps)) for plan, _ in plans for *_, caps in plan)
    return Records(_rows(plans), total=total)
