"""RefCOCO / RefCOCO+ / RefCOCOg referring expressions -> grounding rows.

Inputs, recognised by content (any mix):

* refs: ``refs(unc).p`` as REFER ships it (a pickle, read with a loader that refuses anything
  but lists, dicts, strings and numbers) or the same list as JSON:
  ``[{ref_id, ann_id, image_id, split, category_id, file_name, sent_ids,
  sentences: [{tokens, raw, sent_id, sent}]}]``;
* ``instances.json``: COCO instances (``images``, ``annotations`` with ``bbox``, ``categories``),
  where a ref's ``ann_id`` finds its box and its image's file name;
* proposals: ``dets.json`` as ALBEF uses it, ``{str(image_id): [[x, y, w, h, ...], ...]}``
  (extra numbers such as a score are dropped; malformed boxes are skipped);
* ALBEF grounding lists ``refcoco+_{train,val,test}.json``: ``[{image, text, ref_id}]``.

Rows: with ALBEF lists, one per list entry (its ``ref_id`` looks up box, split and category in
the refs, when given); without them, one per sentence of every ref. ``refs`` need
``instances.json``; ALBEF lists alone give rows without boxes (enough for ALBEF's grounding
training, which uses image-text pairs). ``box`` is the annotation's COCO ``[x, y, w, h]``;
``proposals`` the image's boxes from the proposals file (null without one).

``image_id``: ``coco_<image_id>``. ``example_id``: ``ref<ref_id>#<k>`` (k-th sentence of the
ref, in file order), ``<file name>:<index>`` for list entries without ref_id. A ``ref_id`` that
is not in the refs is ``unknown_ref``; a ref whose annotation is missing or whose box is not
four finite numbers with positive width and height is ``bad_box``. Split: ``split`` if given,
else the ref's (``train``, ``val``, ``testA``, ``testB``...), else the list's file name, else train.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlpipe.data.task_tables import TaskRecord
from vlpipe.errors import InputError

from .base import Records, Reject, image_root, infer_split, input_files, load_json, source_label
from .coco import _locate
from .karpathy import albef_image_id
from .taskfiles import first_char

EXPECTED = ("RefCOCO files: refs(unc).p (or its JSON list), instances.json, dets.json, "
            "and/or ALBEF lists refcoco+_train.json")


class _PlainUnpickler(pickle.Unpickler):
    """Loads only built-in containers and scalars: no class, no function, so no code runs."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror})", "check the file's permissions") from None
    try:
        return _PlainUnpickler(io.BytesIO(data), encoding="utf-8", errors="surrogateescape").load()
    except pickle.UnpicklingError as e:
        raise InputError(path, f"not a plain-data pickle ({e})",
                         "refs files hold only lists and dicts; convert other pickles to JSON") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as e:
        raise InputError(path, f"not a readable pickle ({type(e).__name__}: {e})",
                         "the file is damaged or truncated: download it again") from None


def box_of(value: Any) -> list[float] | None:
    """A COCO [x, y, w, h] box from the first four numbers of ``value``, or None if it is not one."""
    if not isinstance(value, (list, tuple)) or len(value) < 4:
        return None
    nums = value[:4]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in nums):
        return None
    if nums[2] <= 0 or nums[3] <= 0:
        return None
    return [float(v) for v in nums]


class _Inputs:
    def __init__(self) -> None:
        self.refs: list[dict] = []
        self.refs_source = ""
        self.images: dict[int, dict] = {}
        self.anns: dict[int, dict] = {}
        self.categories: dict[int, str] = {}
        self.proposals: dict[str, list] | None = None
        self.lists: list[tuple[Path, list]] = []


def _check_refs(path: Path, refs: Any) -> list[dict]:
    if not isinstance(refs, list):
        raise InputError(path, f"refs are a {type(refs).__name__}, not a list", f"expected {EXPECTED}")
    for i, r in enumerate(refs):
        if not isinstance(r, dict) or "ref_id" not in r or "ann_id" not in r:
            raise InputError(path, f"refs[{i}] has no 'ref_id' / 'ann_id'", "expected a REFER refs list")
    return refs


def _classify(path: Path, inp: _Inputs) -> None:
    if first_char(path) not in ("{", "["):
        refs = _check_refs(path, load_pickle(path))
        inp.refs += refs
        inp.refs_source = source_label("refcoco", path)
        return
    data = load_json(path, EXPECTED)
    if isinstance(data, list):
        first = data[0] if data else {}
        if not isinstance(first, dict):
            raise InputError(path, f"entry [0] is a {type(first).__name__}, not an object", f"expected {EXPECTED}")
        if "ann_id" in first and "sentences" in first:
            inp.refs += _check_refs(path, data)
            inp.refs_source = source_label("refcoco", path)
        elif not data or ("text" in first and "image" in first):
            for i, e in enumerate(data):
                if not isinstance(e, dict):
                    raise InputError(path, f"entry [{i}] is a {type(e).__name__}, not an object",
                                     "expected an ALBEF grounding list of {image, text, ref_id}")
            inp.lists.append((path, data))
        else:
            key = "text" if "text" not in first else "image"
            raise InputError(path, f"entry [0] has no key {key!r}", "expected an ALBEF grounding list of {image, text, ref_id}")
        return
    if not isinstance(data, dict):
        raise InputError(path, f"top level is a JSON {type(data).__name__}", f"expected {EXPECTED}")
    if "annotations" in data and "images" in data:
        for key in ("images", "annotations"):
            if not isinstance(data[key], list):
                raise InputError(path, f"key {key!r} is not a list", "expected COCO instances.json")
        for im in data["images"]:
            if isinstance(im, dict) and "id" in im:
                inp.images[im["id"]] = im
        for a in data["annotations"]:
            if isinstance(a, dict) and "id" in a:
                inp.anns[a["id"]] = a
        for c in data.get("categories") or []:
            if isinstance(c, dict) and "id" in c and isinstance(c.get("name"), str):
                inp.categories[c["id"]] = c["name"]
        return
    if all(isinstance(v, list) for v in data.values()):
        if inp.proposals is not None:
            raise InputError(path, "a second proposals file", "pass one dets.json (not cocos.json as well)")
        inp.proposals = data
        return
    keys = ", ".join(list(data)[:8]) or "none"
    raise InputError(path, f"not a RefCOCO file (top-level keys: {keys})", f"expected {EXPECTED}")


def _proposals(inp: _Inputs, image: Any) -> list[list[float]] | None:
    if inp.proposals is None:
        return None
    return [b for b in (box_of(d) for d in inp.proposals.get(str(image)) or []) if b is not None]


def _ref_rows(inp: _Inputs, root: Path, split: str | None) -> Iterator[TaskRecord | Reject]:
    source = inp.refs_source
    for ref in inp.refs:
        ref_id = ref.get("ref_id")
        sentences = ref.get("sentences") if isinstance(ref.get("sentences"), list) else []
        texts = [s.get("raw", s.get("sent")) if isinstance(s, dict) else None for s in sentences]
        yield from _one_ref(inp, root, ref, [(f"ref{ref_id}#{k}", t) for k, t in enumerate(texts)], split, source)


def _one_ref(inp: _Inputs, root: Path, ref: dict, texts: list[tuple[str, Any]], split: str | None, source: str,
             image_rel: str | None = None) -> Iterator[TaskRecord | Reject]:
    img = ref.get("image_id")
    image_id = f"coco_{img}"
    row_split = split or str(ref.get("split") or "train")
    im = inp.images.get(img)
    if image_rel is not None:
        image_path = os.path.abspath(os.path.join(root, image_rel))
    elif im is not None and isinstance(im.get("file_name"), str):
        image_path = _locate(root, im["file_name"], "")
    else:
        image_path = None
    ann = inp.anns.get(ref.get("ann_id"))
    box = box_of(ann.get("bbox")) if ann is not None else None
    problem = None
    if ann is None:
        problem = f"annotation {ref.get('ann_id')} of ref {ref.get('ref_id')} is not in instances.json"
    elif box is None:
        problem = f"annotation {ref.get('ann_id')} has no valid [x, y, w, h] bbox (got {ann.get('bbox')!r})"
    cat = inp.categories.get(ref.get("category_id", ann.get("category_id") if ann else None))
    for example_id, text in texts:
        if problem is not None:
            yield Reject(reason="bad_box", detail=problem, image_id=image_id, caption_id=example_id,
                         caption=text if isinstance(text, str) else None, split=row_split, source=source,
                         image_path=image_path)
            continue
        yield TaskRecord(example_id=example_id, split=row_split, image_id=image_id, source=source,
                         image_path=image_path,
                         fields={"text": text, "ref_id": _int(ref.get("ref_id")), "ann_id": _int(ref.get("ann_id")),
                                 "category": cat, "box": box, "proposals": _proposals(inp, img)})


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _list_rows(inp: _Inputs, root: Path, split: str | None) -> Iterator[TaskRecord | Reject]:
    refs = {r.get("ref_id"): r for r in inp.refs}
    seen: dict[Any, int] = {}
    for path, data in inp.lists:
        source = source_label("albef", path)
        file_split = split or infer_split(path.name) or "train"
        for i, e in enumerate(data):
            ref_id, text, image = e.get("ref_id"), e.get("text"), e.get("image")
            has_id = ref_id is not None and not isinstance(ref_id, (bool, dict, list))
            k = seen.get(ref_id, 0) if has_id else 0
            if has_id:
                seen[ref_id] = k + 1
            example_id = f"ref{ref_id}#{k}" if has_id else f"{path.name}:{i}"
            if not isinstance(image, str) or not image:
                yield Reject(reason="missing_image", detail="the entry has no 'image' path", caption_id=example_id,
                             caption=text if isinstance(text, str) else None, split=file_split, source=source)
                continue
            if inp.refs and has_id:
                ref = refs.get(ref_id)
                if ref is None:
                    yield Reject(reason="unknown_ref", detail=f"ref_id {ref_id!r} is not in the refs file",
                                 caption_id=example_id, caption=text if isinstance(text, str) else None,
                                 split=file_split, source=source, image_path=os.path.abspath(os.path.join(root, image)))
                    continue
                yield from _one_ref(inp, root, ref, [(example_id, text)], split, source, image_rel=image)
                continue
            image_id = albef_image_id(image, "coco" if "coco" in image.lower() else path.name)
            img = int(image_id[5:]) if image_id.startswith("coco_") and image_id[5:].isdigit() else None
            yield TaskRecord(example_id=example_id, split=file_split, image_id=image_id, source=source,
                             image_path=os.path.abspath(os.path.join(root, image)),
                             fields={"text": text, "ref_id": _int(ref_id), "ann_id": None, "category": None,
                                     "box": None, "proposals": _proposals(inp, img) if img is not None else None})


def read_refcoco(inputs: Sequence[str | Path], images: str | Path | None = None, split: str | None = None) -> Records:
    """Rows of the grounding task table from RefCOCO-family files (see the module doc)."""
    files = input_files(inputs, "RefCOCO file")
    root = image_root(images, files[0])
    inp = _Inputs()
    for path in files:
        _classify(path, inp)
    if inp.refs and not inp.anns:
        raise InputError(files[0], "refs given without instances.json",
                         "pass the instances.json next to refs(unc).p (it holds the boxes)")
    if not inp.refs and not inp.lists:
        raise InputError(files[0], "no referring expressions in the inputs", f"expected {EXPECTED}")
    if inp.lists:
        total = sum(len(d) for _, d in inp.lists)
        return Records(_list_rows(inp, root, split), total=total)
    total = sum(max(0, len(r.get("sentences") or [])) if isinstance(r.get("sentences"), list) else 0 for r in inp.refs)
    return Records(_ref_rows(inp, root, split), total=total)
