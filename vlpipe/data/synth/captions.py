"""COCO-style captions that are true of their scene.

Objects of the same kind (same category, or same shape and colour) form a *group*; a caption names
a group with its exact count ("a dog", "two red circles"), optionally a size word when all its
members share the size class, and a noun or synonym of the category. Relation captions only relate
two groups when the relation holds between every member of one and every member of the other.
Background phrases come from the scene's background.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .scene import Scene, rng_for
from .vocab import (
    BACKGROUND_BY_NAME,
    CATEGORY_BY_NAME,
    NUMBER_WORDS,
    RELATION_PHRASES,
    SHAPES,
    SIZE_WORDS,
    article,
)

CAPTIONS_PER_IMAGE = 5

_PREFIXES = ("a photo of", "a picture of", "an image of", "a drawing of", "a cartoon of")
_CANONICAL_P = 0.6
_SIZE_WORD_P = 0.25
_BG_P = 0.8


@dataclass(frozen=True)
class Group:
    """Objects of one kind in a scene: the indices of its members in ``scene.objects``."""

    kind: str
    category: str
    color: str | None
    members: tuple[int, ...]
    sizes: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.members)


def groups_of(scene: Scene) -> list[Group]:
    """The scene's objects grouped by kind, in order of first appearance."""
    members: dict[tuple[str, str | None], list[int]] = {}
    for k, o in enumerate(scene.objects):
        members.setdefault(o.key, []).append(k)
    out = []
    for (category, color), idx in members.items():
        first = scene.objects[idx[0]]
        out.append(Group(first.kind, category, color, tuple(idx),
                         tuple(scene.objects[i].size for i in idx)))
    return out


def group_holds(scene: Scene, a: Group, predicate: str, b: Group) -> bool:
    """Whether every member of ``a`` is ``predicate`` every member of ``b``."""
    return all(scene.holds(i, predicate, j) for i in a.members for j in b.members)


def noun_phrase(group: Group, rng: random.Random) -> str:
    """'a dog', 'two puppies', 'a big red circle', 'three small stars'... with the exact count."""
    words = []
    sizes = set(group.sizes)
    if len(sizes) == 1 and rng.random() < (_SIZE_WORD_P if group.count == 1 else _SIZE_WORD_P / 2):
        words.append(rng.choice(SIZE_WORDS[sizes.pop()]))
    if group.kind == "shape":
        words.append(group.color or "")
        words.append(group.category if group.count == 1 else SHAPES[group.category])
    else:
        cat = CATEGORY_BY_NAME[group.category]
        nouns = [n for n, _ in cat.nouns]
        noun = nouns[0] if len(nouns) == 1 or rng.random() < _CANONICAL_P else rng.choice(nouns[1:])
        words.append(noun if group.count == 1 else cat.plural(noun))
    det = article(words[0]) if group.count == 1 else NUMBER_WORDS[group.count]
    return " ".join([det, *words])


def join_list(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


class _Context:
    def __init__(self, scene: Scene, rng: random.Random):
        self.scene = scene
        self.rng = rng
        self.groups = groups_of(scene)
        self.background = BACKGROUND_BY_NAME[scene.background]
        self.pairs = [
            (a, p, b)
            for a in self.groups
            for b in self.groups
            if a is not b
            for p in RELATION_PHRASES
            if group_holds(scene, a, p, b)
        ]

    def some_groups(self) -> list[Group]:
        groups = list(self.groups)
        self.rng.shuffle(groups)
        if len(groups) > 1 and self.rng.random() < 0.4:
            groups = groups[: self.rng.randint(1, len(groups) - 1)]
        return groups

    def listing(self, groups: list[Group]) -> str:
        return join_list([noun_phrase(g, self.rng) for g in groups])

    def where(self, p: float = _BG_P) -> str:
        return self.rng.choice(self.background.phrases) if self.rng.random() < p else ""


def _plain_list(c: _Context) -> str:
    return f"{c.listing(c.some_groups())} {c.where(1.0)}"


def _prefixed(c: _Context) -> str:
    return f"{c.rng.choice(_PREFIXES)} {c.listing(c.some_groups())} {c.where()}"


def _there(c: _Context) -> str:
    groups = c.some_groups()
    verb = "is" if groups[0].count == 1 else "are"
    return f"there {verb} {c.listing(groups)} {c.where()}"


def _scene_with(c: _Context) -> str:
    return f"{c.rng.choice(c.background.scenes)} with {c.listing(c.some_groups())}"


def _relation(c: _Context) -> str | None:
    if not c.pairs:
        return None
    a, predicate, b = c.rng.choice(c.pairs)
    rel = c.rng.choice(RELATION_PHRASES[predicate])
    na, nb = noun_phrase(a, c.rng), noun_phrase(b, c.rng)
    form = c.rng.randrange(5)
    if form == 0:
        return f"{na} {c.where(1.0)} {rel} {nb}"
    if form == 1:
        return f"{na} {rel} {nb} {c.where()}"
    if form == 2:
        verb = "is" if a.count == 1 else "are"
        return f"there {verb} {na} {rel} {nb} {c.where(0.5)}"
    if form == 3:
        return f"{c.rng.choice(_PREFIXES)} {na} {rel} {nb} {c.where(0.5)}"
    return f"{na} {rel} {nb}"


#: Caption templates and how often each is tried.
TEMPLATES: tuple[tuple[Callable[[_Context], str | None], float], ...] = (
    (_plain_list, 0.25),
    (_prefixed, 0.2),
    (_there, 0.15),
    (_scene_with, 0.15),
    (_relation, 0.25),
)


def _tidy(text: str) -> str:
    return " ".join(text.lower().split())


def write_captions(scene: Scene, rng: random.Random, n: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``n`` different true captions of ``scene`` (repeats only if the scene allows too few)."""
    c = _Context(scene, rng)
    fns = [f for f, _ in TEMPLATES]
    weights = [w for _, w in TEMPLATES]
    out: list[str] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        text = rng.choices(fns, weights)[0](c)
        if text is not None and (text := _tidy(text)) not in out:
            out.append(text)
    while len(out) < n:  # pragma: no cover - every scene has far more than n captions
        out.append(out[len(out) % max(1, len(out))])
    return out


def caption_scene(scene: Scene, seed: int) -> Scene:
    """Fill ``scene.captions`` from the scene's own caption stream; returns the scene."""
    scene.captions = write_captions(scene, rng_for(seed, scene.index, "captions"))
    return scene
