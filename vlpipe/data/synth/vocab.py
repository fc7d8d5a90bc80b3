"""The words and things of the pictogram world: categories, shapes, colours, backgrounds.

Everything a caption may say is listed here, with the plural of every noun, so captions can be
generated from it and checked against the ground truth with it (see :func:`noun_index`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """A pictogram category: one OpenMoji glyph and the nouns that name it.

    ``nouns`` maps each noun (the canonical name first) to its plural.
    """

    name: str
    codepoint: int
    nouns: tuple[tuple[str, str], ...]

    @property
    def glyph(self) -> str:
        return chr(self.codepoint)

    def plural(self, noun: str) -> str:
        return dict(self.nouns)[noun]


def _cat(name: str, codepoint: int, *nouns: tuple[str, str]) -> Category:
    return Category(name, codepoint, nouns)


#: The ~28 pictogram categories (OpenMoji glyphs chosen to be recognisable at 20-50 px).
CATEGORIES: tuple[Category, ...] = (
    _cat("dog", 0x1F415, ("dog", "dogs"), ("puppy", "puppies")),
    _cat("cat", 0x1F408, ("cat", "cats"), ("kitten", "kittens")),
    _cat("bird", 0x1F426, ("bird", "birds")),
    _cat("horse", 0x1F40E, ("horse", "horses"), ("pony", "ponies")),
    _cat("cow", 0x1F404, ("cow", "cows")),
    _cat("pig", 0x1F416, ("pig", "pigs")),
    _cat("sheep", 0x1F411, ("sheep", "sheep"), ("lamb", "lambs")),
    _cat("rabbit", 0x1F407, ("rabbit", "rabbits"), ("bunny", "bunnies")),
    _cat("fish", 0x1F41F, ("fish", "fish")),
    _cat("person", 0x1F9CD, ("person", "people"), ("man", "men")),
    _cat("car", 0x1F697, ("car", "cars")),
    _cat("bus", 0x1F68D, ("bus", "buses")),
    _cat("bicycle", 0x1F6B2, ("bicycle", "bicycles"), ("bike", "bikes")),
    _cat("motorcycle", 0x1F3CD, ("motorcycle", "motorcycles"), ("motorbike", "motorbikes")),
    _cat("boat", 0x26F5, ("boat", "boats"), ("sailboat", "sailboats")),
    _cat("airplane", 0x2708, ("airplane", "airplanes"), ("plane", "planes")),
    _cat("train", 0x1F682, ("train", "trains"), ("locomotive", "locomotives")),
    _cat("tree", 0x1F333, ("tree", "trees")),
    _cat("flower", 0x1F33B, ("flower", "flowers"), ("sunflower", "sunflowers")),
    _cat("house", 0x1F3E0, ("house", "houses")),
    _cat("ball", 0x26BD, ("ball", "balls"), ("football", "footballs")),
    _cat("umbrella", 0x2602, ("umbrella", "umbrellas")),
    _cat("guitar", 0x1F3B8, ("guitar", "guitars")),
    _cat("cake", 0x1F382, ("cake", "cakes")),
    _cat("apple", 0x1F34E, ("apple", "apples")),
    _cat("banana", 0x1F34C, ("banana", "bananas")),
    _cat("chair", 0x1FA91, ("chair", "chairs")),
    _cat("clock", 0x23F0, ("clock", "clocks")),
)
CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}

#: Geometric shapes (drawn, not glyphs) and their plurals.
SHAPES: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
}

#: Shape colours: name -> RGB fill.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (250, 215, 30),
    "orange": (250, 140, 20),
    "purple": (140, 50, 180),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}

#: Size classes -> the adjectives a caption may use for them.
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "large": ("large", "big"),
}

#: Count -> number word (1 is written "a"/"an" in captions).
NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Background:
    """A procedurally drawn backdrop and how captions may refer to it.

    ``phrases`` follow a noun ("a dog on the beach"); ``scenes`` are noun phrases for
    "<scene> with <objects>" captions ("a beach with a dog"); ``avoid_colors`` are shape colours
    that would not stand out on it; ``likely`` are categories sampled more often on it.
    """

    name: str
    phrases: tuple[str, ...]
    scenes: tuple[str, ...]
    avoid_colors: tuple[str, ...]
    likely: tuple[str, ...]


BACKGROUNDS: tuple[Background, ...] = (
    Background(
        "beach",
        ("on the beach", "on the sand", "at the beach", "on a sandy beach"),
        ("a beach", "a sandy beach"),
        ("yellow",),
        ("dog", "person", "umbrella", "ball", "bird", "boat", "cat"),
    ),
    Background(
        "grass",
        ("on the grass", "in a field", "on a lawn", "in a grassy field"),
        ("a field", "a grassy field", "a meadow"),
        ("green",),
        ("dog", "cow", "horse", "sheep", "rabbit", "tree", "flower", "ball"),
    ),
    Background(
        "snow",
        ("on snow", "in the snow", "on the snow"),
        ("a snowy landscape", "a snowy scene"),
        ("white",),
        ("dog", "person", "tree", "house", "rabbit", "bird"),
    ),
    Background(
        "road",
        ("on the road", "on the street", "on a road"),
        ("a road", "a street"),
        ("black",),
        ("car", "bus", "bicycle", "motorcycle", "person", "dog"),
    ),
    Background(
        "water",
        ("on the water", "in the water"),
        ("open water", "blue water"),
        ("blue",),
        ("boat", "fish", "bird", "airplane"),
    ),
    Background(
        "plain",
        ("on a plain background", "on a blank background", "against a plain background"),
        ("a plain background", "a blank background"),
        ("white",),
        (),
    ),
)
BACKGROUND_BY_NAME: dict[str, Background] = {b.name: b for b in BACKGROUNDS}

#: Relation predicates between two objects -> the phrases a caption may use for them.
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside", "near"),
}


def noun_index() -> dict[str, tuple[str, bool]]:
    """Every noun a caption may use -> (category or shape name, is_plural)."""
    index: dict[str, tuple[str, bool]] = {}
    for c in CATEGORIES:
        for singular, plural in c.nouns:
            index[singular] = (c.name, False)
            index.setdefault(plural, (c.name, True))
    for shape, plural in SHAPES.items():
        index[shape] = (shape, False)
        index[plural] = (shape, True)
    return index


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (by its first letter, which is right for this vocabulary)."""
    return "an" if word[:1] in "aeiou" else "a"
