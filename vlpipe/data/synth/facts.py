"""What the task writers may say about a scene: names, counts, words for backgrounds and numbers.

Everything here is read off the ground truth (:class:`~vlpipe.data.synth.scene.Scene`), so any
statement built from it is true of the image; the task writers build false or undecidable ones
on purpose, from the same facts.

"Kind" of an object = its key (category, colour): a red circle and a blue circle are different
kinds, two dogs are the same kind. A pictogram's colour is None.
"""

from __future__ import annotations

from .scene import Scene, SceneObject
from .vocab import BACKGROUND_BY_NAME, CATEGORIES, CATEGORY_BY_NAME, COLORS, SHAPES, article

Key = tuple[str, "str | None"]

#: Every kind of thing that can be drawn: all pictogram categories, every shape in every colour.
ALL_KEYS: tuple[Key, ...] = tuple(
    [(c.name, None) for c in CATEGORIES] + [(s, c) for s in SHAPES for c in COLORS]
)

#: Pictogram categories that are living things (RefCOCO+ testA holds refs to these).
LIVING = frozenset({"dog", "cat", "bird", "horse", "cow", "pig", "sheep", "rabbit", "fish", "person"})
VEHICLES = frozenset({"car", "bus", "bicycle", "motorcycle", "boat", "airplane", "train"})

#: Background -> the one-word answer to "where is the dog?" (the plain background has none).
BACKGROUND_WORD: dict[str, str | None] = {
    "beach": "beach", "grass": "field", "snow": "snow", "road": "road", "water": "water", "plain": None,
}
#: Background -> a noun phrase for "both images show ..." / "the picture shows ...".
BACKGROUND_SCENE: dict[str, str] = {name: b.scenes[0] for name, b in BACKGROUND_BY_NAME.items()}

#: Numbers as words, for sentences ("three dogs in total").
NUMBER_WORD = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def singular(key: Key) -> str:
    """'dog', 'red circle'."""
    category, color = key
    if color is None and category in CATEGORY_BY_NAME:
        return CATEGORY_BY_NAME[category].nouns[0][0]
    return f"{color} {category}" if color else category


def plural(key: Key) -> str:
    """'dogs', 'red circles', 'sheep'."""
    category, color = key
    if color is None and category in CATEGORY_BY_NAME:
        return CATEGORY_BY_NAME[category].nouns[0][1]
    noun = SHAPES.get(category, category + "s")
    return f"{color} {noun}" if color else noun


def counted(key: Key, n: int) -> str:
    """'a dog', 'an apple', 'two red circles', 'no cats' (exact counts)."""
    if n == 1:
        word = singular(key)
        return f"{article(word)} {word}"
    return f"{NUMBER_WORD.get(n, str(n))} {plural(key)}"


def name_of(o: SceneObject) -> str:
    """The canonical name of an object: 'dog', 'red circle'."""
    return singular(o.key)


def counts(scene: Scene) -> dict[Key, int]:
    """Objects per kind, in order of first appearance."""
    out: dict[Key, int] = {}
    for o in scene.objects:
        out[o.key] = out.get(o.key, 0) + 1
    return out


def count_category(scene: Scene, category: str) -> int:
    """Objects of a category whatever their colour (all circles, all dogs)."""
    return sum(1 for o in scene.objects if o.category == category)


def members(scene: Scene, key: Key) -> list[int]:
    return [i for i, o in enumerate(scene.objects) if o.key == key]


def is_shape(key: Key) -> bool:
    return key[1] is not None


def be(n: int) -> str:
    return "is" if n == 1 else "are"


def sentence_case(text: str) -> str:
    """'what color is the circle' -> 'What color is the circle?' style capitalisation."""
    return text[:1].upper() + text[1:]
