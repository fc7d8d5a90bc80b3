"""Task "refcoco": referring expressions (RefCOCO+ as REFER and ALBEF's grounding files use it).

An object gets a *ref* when at least one expression singles it out in its image; every
expression is checked against the scene: the objects it describes must be exactly that one.
Expressions, simplest first (a leading "the" is dropped half of the time):

* the kind alone: "the dog", "puppy", "the red circle", "the circle" (if it is the only circle);
* kind + size when that separates it: "the big dog", "small red circle";
* kind + relation to an object that is itself the only one of its kind:
  "the dog to the left of the car", "red circle above the tree".

Note: real RefCOCO+ forbids absolute location words ("left dog"); relations between two objects
are kept here because they are the part of the world that needs grounding to resolve.

Up to :data:`MAX_SENTENCES` expressions per ref. Splits as RefCOCO+ (UNC): ``train``, ``val``,
and the test split is cut into ``testA`` (refs to people and animals) and ``testB`` (other
things). Boxes are COCO ``[x, y, w, h]`` in pixels.

Files::

    refcoco+/instances.json   COCO instances: images, annotations (every object: id, image_id,
                              category_id, bbox, area, iscrowd, segmentation = its box polygon),
                              categories (28 pictogram categories, then circle, square, triangle, star)
    refcoco+/refs(unc).p      pickle (protocol 2) of the refs list, as REFER loads it:
                              [{sent_ids, file_name, ann_id, ref_id, image_id, split,
                                sentences: [{tokens, raw, sent_id, sent}], category_id}]
    refcoco+/dets.json        proposals: {str(image_id): [[x, y, w, h], ...]} = every object's box
                              + PROPOSAL_DISTRACTORS jittered boxes, shuffled
    refcoco+/cocos.json       ground-truth boxes: {str(image_id): [[x, y, w, h], ...]}
    refcoco+_train.json       ALBEF: [{image, text, ref_id}] one per expression (train refs)
    refcoco+_val.json, refcoco+_test.json   same for val, and testA + testB
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .facts import LIVING, VEHICLES, counts, name_of
from .files import COCO_INFO, DATE_CAPTURED, tokenize, write_json, write_pickle
from .scene import Scene, SceneObject
from .vocab import CATEGORIES, CATEGORY_BY_NAME, RELATION_PHRASES, SHAPES, SIZE_WORDS

MAX_SENTENCES = 3
PROPOSAL_DISTRACTORS = 2

#: COCO-style categories: pictograms 1..28 in vocabulary order, then the shapes.
CATEGORY_IDS: dict[str, int] = {name: k + 1 for k, name in enumerate([c.name for c in CATEGORIES] + list(SHAPES))}


def supercategory(name: str) -> str:
    if name in SHAPES:
        return "shape"
    if name == "person":
        return "person"
    if name in LIVING:
        return "animal"
    if name in VEHICLES:
        return "vehicle"
    return "object"


@dataclass(frozen=True)
class Spec:
    """What an expression says: category, colour (None: any), size class (None: any), relation."""

    category: str
    color: str | None = None
    size: str | None = None
    predicate: str | None = None
    anchor: int | None = None

    def matches(self, scene: Scene) -> list[int]:
        return [
            i for i, o in enumerate(scene.objects)
            if o.category == self.category
            and (self.color is None or o.color == self.color)
            and (self.size is None or o.size == self.size)
            and (self.predicate is None or scene.holds(i, self.predicate, self.anchor))
        ]


def _anchor_name(scene: Scene, a: int) -> str | None:
    """How to name object ``a`` so that it is unique in the scene, or None."""
    o = scene.objects[a]
    if counts(scene)[o.key] == 1:
        return name_of(o)
    return None


def specs_for(scene: Scene, k: int) -> list[Spec]:
    """Every expression spec that picks out exactly object ``k``, simplest first."""
    o = scene.objects[k]
    color = o.color
    candidates = [Spec(o.category)]
    if color is not None:
        candidates.append(Spec(o.category, color))
    candidates += [Spec(o.category, None, o.size), *([Spec(o.category, color, o.size)] if color else [])]
    for a in range(len(scene.objects)):
        if a != k and _anchor_name(scene, a) is not None:
            for predicate in RELATION_PHRASES:
                if scene.holds(k, predicate, a):
                    candidates.append(Spec(o.category, color, None, predicate, a))
    return [s for s in candidates if s.matches(scene) == [k]]


def express(scene: Scene, o: SceneObject, spec: Spec, rng: random.Random) -> str:
    """The words of ``spec`` ("the big dog to the left of the car")."""
    if o.kind == "pictogram":
        nouns = [n for n, _ in CATEGORY_BY_NAME[o.category].nouns]
        noun = nouns[0] if len(nouns) == 1 or rng.random() < 0.6 else rng.choice(nouns[1:])
    else:
        noun = o.category
    words = []
    if spec.size is not None:
        words.append(rng.choice(SIZE_WORDS[spec.size]))
    if spec.color is not None:
        words.append(spec.color)
    words.append(noun)
    if spec.predicate is not None and spec.anchor is not None:
        words += [rng.choice(RELATION_PHRASES[spec.predicate]), "the", _anchor_name(scene, spec.anchor) or ""]
    text = " ".join(words)
    return text if rng.random() < 0.5 else "the " + text


def ref_split(scene: Scene, o: SceneObject) -> str:
    if scene.split != "test":
        return scene.split
    return "testA" if o.category in LIVING else "testB"


def _box(b: tuple[int, int, int, int]) -> list[float]:
    return [float(v) for v in b]


def _jitter(rng: random.Random, box: tuple[int, int, int, int], size: int) -> list[float]:
    x, y, w, h = box
    nw = max(2.0, w * rng.uniform(0.6, 1.4))
    nh = max(2.0, h * rng.uniform(0.6, 1.4))
    nx = min(max(0.0, x + w / 2 + w * rng.uniform(-0.4, 0.4) - nw / 2), size - nw)
    ny = min(max(0.0, y + h / 2 + h * rng.uniform(-0.4, 0.4) - nh / 2), size - nh)
    return [round(max(0.0, nx), 2), round(max(0.0, ny), 2), round(min(nw, size), 2), round(min(nh, size), 2)]


def write_refcoco_task(scenes: list[Scene], rng: random.Random, out_dir: Path) -> list[str]:
    """REFER-style ``refcoco+/`` files and ALBEF's ``refcoco+_{train,val,test}.json``."""
    images, annotations, refs = [], [], []
    dets: dict[str, list[list[float]]] = {}
    cocos: dict[str, list[list[float]]] = {}
    albef: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    ref_id = sent_id = 0
    for s in scenes:
        filename = s.file_name.split("/")[-1]
        images.append({"license": 0, "file_name": filename, "coco_url": "", "height": s.size, "width": s.size,
                       "date_captured": DATE_CAPTURED, "flickr_url": "", "id": s.image_id})
        boxes = []
        for k, o in enumerate(s.objects):
            x, y, w, h = o.bbox
            ann_id = s.image_id * 100 + k + 1
            annotations.append({
                "segmentation": [[float(x), float(y), float(x + w), float(y), float(x + w), float(y + h),
                                  float(x), float(y + h)]],
                "area": float(w * h), "iscrowd": 0, "image_id": s.image_id, "bbox": _box(o.bbox),
                "category_id": CATEGORY_IDS[o.category], "id": ann_id,
            })
            boxes.append(_box(o.bbox))
            specs = specs_for(s, k)
            if not specs:
                continue
            texts: list[str] = []
            for spec in specs[:1] + rng.sample(specs[1:], len(specs) - 1):
                text = express(s, o, spec, rng)
                if text not in texts:
                    texts.append(text)
                if len(texts) == MAX_SENTENCES:
                    break
            sentences = []
            for text in texts:
                sentences.append({"tokens": tokenize(text), "raw": text, "sent_id": sent_id,
                                  "sent": " ".join(tokenize(text))})
                sent_id += 1
            split = ref_split(s, o)
            refs.append({
                "sent_ids": [x["sent_id"] for x in sentences], "file_name": f"{filename[:-4]}_{ann_id}.jpg",
                "ann_id": ann_id, "ref_id": ref_id, "image_id": s.image_id, "split": split,
                "sentences": sentences, "category_id": CATEGORY_IDS[o.category],
            })
            albef["test" if split.startswith("test") else split] += [
                {"image": s.file_name, "text": x["raw"], "ref_id": ref_id} for x in sentences
            ]
            ref_id += 1
        cocos[str(s.image_id)] = boxes
        proposals = list(boxes)
        for _ in range(PROPOSAL_DISTRACTORS if s.objects else 0):
            proposals.append(_jitter(rng, rng.choice(s.objects).bbox, s.size))
        rng.shuffle(proposals)
        dets[str(s.image_id)] = proposals

    categories = [{"supercategory": supercategory(name), "id": cid, "name": name} for name, cid in CATEGORY_IDS.items()]
    files = []
    write_json(out_dir / "refcoco+/instances.json", {
        "info": COCO_INFO, "images": images, "licenses": [], "annotations": annotations, "categories": categories,
    })
    write_pickle(out_dir / "refcoco+/refs(unc).p", refs)
    write_json(out_dir / "refcoco+/dets.json", dets)
    write_json(out_dir / "refcoco+/cocos.json", cocos)
    files += ["refcoco+/instances.json", "refcoco+/refs(unc).p", "refcoco+/dets.json", "refcoco+/cocos.json"]
    for split, rows in albef.items():
        write_json(out_dir / f"refcoco+_{split}.json", rows)
        files.append(f"refcoco+_{split}.json")
    return files
