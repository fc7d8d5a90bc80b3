"""Scenes of the pictogram world: what is where, sampled deterministically per (seed, image).

A scene is a background plus 1-4 objects (pictograms or coloured shapes), each with a size class
and a pixel bounding box, and the spatial relations that hold between object pairs. Everything
is drawn from :func:`rng_for` ``(seed, index, stream)`` (seeded from a string, so independent of
``PYTHONHASHSEED``, the process and the order images are made in).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .render import object_extent
from .vocab import BACKGROUND_BY_NAME, BACKGROUNDS, CATEGORIES, COLORS, SHAPES

#: Longest side of an object tile, as fractions of the image size, per size class.
SIZE_FRACTIONS: dict[str, tuple[float, ...]] = {"small": (0.22, 0.26), "large": (0.38, 0.44)}
#: Relation predicates in the order they are listed.
PREDICATES = ("left of", "right of", "above", "below", "next to")

_N_OBJECTS = ((1, 0.2), (2, 0.35), (3, 0.3), (4, 0.15))
_SHAPE_P = 0.3
_SHAPE_P_PLAIN = 0.5
_LIKELY_P = 0.5
_REPEAT_P = 0.3
_MAX_OVERLAP = 0.05
_TRIES = 40


def rng_for(seed: int, index: int, stream: str) -> random.Random:
    """The random stream ``stream`` ("scene", "captions", ...) of image ``index`` under ``seed``."""
    return random.Random(f"vlpipe-synth/{stream}/{seed}/{index}")


@dataclass(frozen=True)
class SceneObject:
    """One thing in a scene.

    ``kind`` is "pictogram" (``category`` is a category name, ``color`` None) or "shape"
    (``category`` is a shape name, ``color`` a colour name). ``bbox`` is (x, y, w, h) in pixels,
    tight around the drawn pixels. ``longest`` is the tile size it was drawn at; ``flip`` whether
    the pictogram faces the other way.
    """

    kind: str
    category: str
    color: str | None
    size: str
    bbox: tuple[int, int, int, int]
    longest: int
    flip: bool = False

    @property
    def key(self) -> tuple[str, str | None]:
        """What makes two objects "the same kind of thing" for counting: category (+ colour)."""
        return (self.category, self.color)

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class Relation:
    """``objects[subject]`` is ``predicate`` ``objects[object]`` ("left of", "above", ...)."""

    subject: int
    predicate: str
    object: int


@dataclass
class Scene:
    """One image of the world with its full ground truth."""

    index: int
    image_id: int
    split: str
    size: int
    background: str
    variant: int
    objects: list[SceneObject]
    relations: list[Relation]
    captions: list[str] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        """Path of the image under the output folder, in the COCO 2014 layout."""
        return image_file_name(self.image_id, self.split)

    def holds(self, subject: int, predicate: str, obj: int) -> bool:
        return Relation(subject, predicate, obj) in self.relations

    def to_dict(self) -> dict[str, Any]:
        """The scene as stored in ``scenes.json`` (see :mod:`vlpipe.data.synth`)."""
        return {
            "image_id": self.image_id,
            "index": self.index,
            "file_name": self.file_name,
            "split": self.split,
            "width": self.size,
            "height": self.size,
            "background": self.background,
            "objects": [
                {
                    "id": k,
                    "kind": o.kind,
                    "category": o.category,
                    "color": o.color,
                    "size": o.size,
                    "bbox": list(o.bbox),
                    "flip": o.flip,
                }
                for k, o in enumerate(self.objects)
            ],
            "relations": [
                {"subject": r.subject, "predicate": r.predicate, "object": r.object}
                for r in self.relations
            ],
            "captions": list(self.captions),
            "variant": self.variant,
        }


def image_file_name(image_id: int, split: str) -> str:
    """COCO 2014 layout: train images in train2014/, val and test images in val2014/."""
    folder = "train2014" if split == "train" else "val2014"
    return f"{folder}/COCO_{folder}_{image_id:012d}.jpg"


# -- relations ----------------------------------------------------------------------------------
def relations_between(a: SceneObject, b: SceneObject, image_size: int) -> list[str]:
    """The predicates p for which "a is p b" holds, judged from the two bounding boxes.

    "left of"/"right of": the boxes are apart horizontally (a tenth of the narrower one may
    overlap) and the horizontal offset of the centres is at least half the vertical one.
    "above"/"below": likewise vertically. "next to": apart horizontally, centres at most half the
    taller height apart vertically, and a gap of at most a quarter of the image.
    """
    ax, ay, aw, ah = a.bbox
    bx, by, bw, bh = b.bbox
    (acx, acy), (bcx, bcy) = a.center, b.center
    dx, dy = abs(acx - bcx), abs(acy - bcy)
    tol_x, tol_y = 0.1 * min(aw, bw), 0.1 * min(ah, bh)
    out = []
    a_left = ax + aw <= bx + tol_x
    a_right = bx + bw <= ax + tol_x
    if a_left and dx >= 0.5 * dy:
        out.append("left of")
    if a_right and dx >= 0.5 * dy:
        out.append("right of")
    if ay + ah <= by + tol_y and dy >= 0.5 * dx:
        out.append("above")
    if by + bh <= ay + tol_y and dy >= 0.5 * dx:
        out.append("below")
    gap = (bx - (ax + aw)) if a_left else (ax - (bx + bw)) if a_right else None
    if gap is not None and dy <= 0.5 * max(ah, bh) and gap <= 0.25 * image_size:
        out.append("next to")
    return out


def scene_relations(objects: list[SceneObject], image_size: int) -> list[Relation]:
    rels = []
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            if i != j:
                rels += [Relation(i, p, j) for p in relations_between(a, b, image_size)]
    return rels


# -- sampling -----------------------------------------------------------------------------------
def _weighted(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    r, acc = rng.random(), 0.0
    for value, p in table:
        acc += p
        if r < acc:
            return value
    return table[-1][0]


def _sample_kind(rng: random.Random, background: str) -> tuple[str, str, str | None]:
    bg = BACKGROUND_BY_NAME[background]
    if rng.random() < (_SHAPE_P_PLAIN if background == "plain" else _SHAPE_P):
        shape = rng.choice(list(SHAPES))
        color = rng.choice([c for c in COLORS if c not in bg.avoid_colors])
        return "shape", shape, color
    if bg.likely and rng.random() < _LIKELY_P:
        return "pictogram", rng.choice(bg.likely), None
    return "pictogram", rng.choice(CATEGORIES).name, None


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area over the smaller box's area."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    return ix * iy / min(a[2] * a[3], b[2] * b[3])


def _place(rng: random.Random, w: int, h: int, size: int,
           placed: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    margin = max(1, round(size * 0.02))
    for _ in range(_TRIES):
        x = rng.randint(margin, max(margin, size - w - margin))
        y = rng.randint(margin, max(margin, size - h - margin))
        box = (x, y, w, h)
        if all(_overlap(box, p) <= _MAX_OVERLAP for p in placed):
            return box
    return None


def sample_scene(seed: int, index: int, size: int, split: str) -> Scene:
    """The scene of image ``index`` (0-based; its image id is ``index + 1``) under ``seed``.

    Depends only on (seed, index, size); ``split`` only decides where its file goes. Captions
    are left empty: :func:`vlpipe.data.synth.captions.write_captions` adds them.
    """
    rng = rng_for(seed, index, "scene")
    background = rng.choice(BACKGROUNDS).name
    n = _weighted(rng, _N_OBJECTS)
    kinds: list[tuple[str, str, str | None]] = []
    while len(kinds) < n:
        kind = _sample_kind(rng, background)
        left = n - len(kinds)
        repeat = rng.randint(2, left) if left >= 2 and rng.random() < _REPEAT_P else 1
        kinds += [kind] * repeat
    large_p = 0.45 if n <= 2 else 0.25
    objects: list[SceneObject] = []
    for kind, category, color in kinds:
        size_class = "large" if rng.random() < large_p else "small"
        flip = kind == "pictogram" and rng.random() < 0.5
        box = None
        for cls in (size_class, "small") if size_class == "large" else (size_class,):
            longest = round(size * rng.choice(SIZE_FRACTIONS[cls]))
            w, h = object_extent(kind, category, color, longest)
            box = _place(rng, w, h, size, [o.bbox for o in objects])
            if box is not None:
                size_class = cls
                break
        if box is None:
            continue  # no room left: the scene has fewer objects
        objects.append(SceneObject(kind, category, color, size_class, box, longest, flip))
    return Scene(
        index=index,
        image_id=index + 1,
        split=split,
        size=size,
        background=background,
        variant=rng.getrandbits(32),
        objects=objects,
        relations=scene_relations(objects, size),
    )
