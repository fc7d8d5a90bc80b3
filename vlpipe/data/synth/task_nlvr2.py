"""Task "nlvr2": sentences about pairs of images (NLVR2 JSON Lines, plus ALBEF's nlvr json lists).

Every image of a split is the left image of one pair, its right image drawn from the same split
(never itself). Every pair gets :data:`SENTENCES_PER_PAIR` sentences, one true and one false, so
the labels are exactly balanced. A template is drawn first, then a sentence of it with the wanted
label (so no template gives the label away). Templates, counting objects of one kind (a category,
or a shape in a colour):

* "There are exactly three dogs in total." / "There is exactly one cat in total." /
  "There are no cows in either image." (sum over both images)
* "The left image has at least one red circle." / "The right image has exactly two dogs."
* "The left image has more dogs than the right image."
* "Each image has at least one tree."
* "Both images show a beach." / "The right image shows a snowy landscape."

"Has a dog" means "at least one" here, as in NLVR2; exact numbers say "exactly".

Files (splits train, val -> dev, test; a split with fewer than two images has no pairs)::

    nlvr2_train.json, nlvr2_dev.json, nlvr2_test.json   JSON Lines, one object per sentence:
      {"validation": {}, "sentence", "left_url", "writer", "label": "True" | "False", "synset",
       "query", "identifier": "<split>-<set>-0-<k>", "extra_validations": {}, "right_url"}
      (+ "directory" in train, as upstream); left_url / right_url are the image paths
      relative to the world folder (upstream: the web address the image was taken from).
    nlvr_train.json, nlvr_dev.json, nlvr_test.json      ALBEF: [{"images": [left, right],
                                                         "sentence", "label": "True" | "False"}]
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .facts import ALL_KEYS, BACKGROUND_SCENE, NUMBER_WORD, Key, counts, plural, sentence_case, singular
from .files import write_json, write_jsonl
from .scene import Scene

SENTENCES_PER_PAIR = 2
SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}
SIDES = ("left", "right")

Pair = tuple[Scene, Scene]
#: (sentence, label, the kind it names or None)
Sentence = tuple[str, bool, "Key | None"]
#: A template: (pair, kinds to talk about, rng) -> every sentence it can say with its label
Template = Callable[[Pair, list[Key], random.Random], list[Sentence]]


def _count(scene: Scene, key: Key) -> int:
    return counts(scene).get(key, 0)


def _total(pair: Pair, keys: list[Key], rng: random.Random) -> list[Sentence]:
    out: list[Sentence] = []
    for key in keys:
        total = _count(pair[0], key) + _count(pair[1], key)
        for n in sorted({total, max(0, total - 1), total + 1, rng.randint(0, 6)}):
            if n == 0:
                text = f"there are no {plural(key)} in either image"
            elif n == 1:
                text = f"there is exactly one {singular(key)} in total"
            else:
                text = f"there are exactly {NUMBER_WORD[n]} {plural(key)} in total"
            out.append((text, n == total, key))
    return out


def _side(pair: Pair, keys: list[Key], rng: random.Random) -> list[Sentence]:
    out: list[Sentence] = []
    for side, scene in zip(SIDES, pair):
        for key in keys:
            n = _count(scene, key)
            out.append((f"the {side} image has at least one {singular(key)}", n >= 1, key))
            m = rng.choice([k for k in (1, 2, 3) if k != n] + [n] * (n > 0))
            text = f"the {side} image has exactly one {singular(key)}" if m == 1 else \
                f"the {side} image has exactly {NUMBER_WORD[m]} {plural(key)}"
            out.append((text, m == n, key))
    return out


def _more(pair: Pair, keys: list[Key], rng: random.Random) -> list[Sentence]:
    out: list[Sentence] = []
    for key in keys:
        left, right = _count(pair[0], key), _count(pair[1], key)
        out.append((f"the left image has more {plural(key)} than the right image", left > right, key))
        out.append((f"the right image has more {plural(key)} than the left image", right > left, key))
    return out


def _each(pair: Pair, keys: list[Key], rng: random.Random) -> list[Sentence]:
    return [(f"each image has at least one {singular(key)}", all(_count(s, key) >= 1 for s in pair), key)
            for key in keys]


def _background(pair: Pair, keys: list[Key], rng: random.Random) -> list[Sentence]:
    out: list[Sentence] = []
    for bg, phrase in BACKGROUND_SCENE.items():
        out.append((f"both images show {phrase}", all(s.background == bg for s in pair), None))
        for side, scene in zip(SIDES, pair):
            out.append((f"the {side} image shows {phrase}", scene.background == bg, None))
    return out


TEMPLATES: dict[str, Template] = {
    "total": _total, "side": _side, "more": _more, "each": _each, "background": _background,
}


def sentences_for(pair: Pair, rng: random.Random) -> list[Sentence]:
    """One true and one false sentence about ``pair``, in a drawn order."""
    present: list[Key] = []
    for s in pair:
        for key in counts(s):
            if key not in present:
                present.append(key)
    absent = [k for k in ALL_KEYS if k[1] is None and k not in present]
    keys = present + rng.sample(absent, 2)
    labels = [True, False]
    rng.shuffle(labels)
    out: list[Sentence] = []
    for want in labels:
        names = list(TEMPLATES)
        rng.shuffle(names)
        for name in names:
            said = {o[0] for o in out}
            candidates = [c for c in TEMPLATES[name](pair, keys, rng) if c[1] == want and c[0] not in said]
            if candidates:
                out.append(rng.choice(candidates))
                break
    return out


def write_nlvr2_task(scenes: list[Scene], rng: random.Random, out_dir: Path) -> list[str]:
    """NLVR2 ``nlvr2_{train,dev,test}.json`` (JSON Lines) and ALBEF's ``nlvr_{train,dev,test}.json``."""
    files = []
    for split, name in SPLIT_FILES.items():
        imgs = [s for s in scenes if s.split == split]
        rows: list[dict[str, Any]] = []
        albef: list[dict[str, Any]] = []
        if len(imgs) >= 2:
            for set_id, left in enumerate(imgs):
                right = imgs[(set_id + rng.randint(1, len(imgs) - 1)) % len(imgs)]
                for k, (text, label, key) in enumerate(sentences_for((left, right), rng)):
                    sentence = sentence_case(text) + "."
                    noun = singular(key) if key is not None else "scene"
                    row: dict[str, Any] = {
                        "validation": {}, "sentence": sentence, "left_url": left.file_name, "writer": "vlpipe",
                        "label": str(label), "synset": noun, "query": noun,
                        "identifier": f"{name}-{set_id}-0-{k}", "extra_validations": {},
                        "right_url": right.file_name,
                    }
                    if name == "train":
                        row["directory"] = set_id % 100
                    rows.append(row)
                    albef.append({"images": [left.file_name, right.file_name], "sentence": sentence,
                                  "label": str(label)})
        write_jsonl(out_dir / f"nlvr2_{name}.json", rows)
        write_json(out_dir / f"nlvr_{name}.json", albef)
        files += [f"nlvr2_{name}.json", f"nlvr_{name}.json"]
    return files
