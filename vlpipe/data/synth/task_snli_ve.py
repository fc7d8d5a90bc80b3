"""Task "snli_ve": visual entailment (SNLI-VE JSON Lines, plus ALBEF's ve json lists).

Every image gets :data:`PER_LABEL` hypotheses of each label, so the labels are exactly balanced:

* ``entailment``: true of the scene graph: exact counts ("there are two dogs"), a thing and the
  background ("a dog is on the beach"), shape colours ("the circle is red"), relations that hold
  between every member of two kinds ("a dog is to the left of a car");
* ``contradiction``: false of it: too high a count ("there are three dogs" for two), a colour no
  such shape has, a thing that is not there, the wrong background, or the inverse of a relation
  that holds ("a dog is to the right of a car");
* ``neutral``: what a picture cannot decide: states of mind, ownership, history, the season or
  the photographer ("the dog is hungry", "the car belongs to a doctor", "the photo was taken on a
  sunday"); seasons are not said of snowy scenes.

Counting follows the captions: "a dog" / "two dogs" name the exact number of that kind.

Files, one JSON object per line, with the upstream fields (``sentence1`` is one of the image's
captions, as SNLI's premises are Flickr30k captions; parses are flat placeholders)::

    snli_ve_train.jsonl, snli_ve_dev.jsonl, snli_ve_test.jsonl   (splits train, val, test)
      {"Flickr30K_ID": "COCO_train2014_000000000001", "annotator_labels": [label],
       "captionID": "COCO_train2014_000000000001.jpg#2", "gold_label": label,
       "pairID": "COCO_train2014_000000000001.jpg#2r0e", "sentence1": caption,
       "sentence1_binary_parse", "sentence1_parse", "sentence2": hypothesis,
       "sentence2_binary_parse", "sentence2_parse"}
    ve_train.json, ve_dev.json, ve_test.json   ALBEF: [{"image": "train2014/COCO_train2014_000000000001",
                                               "sentence": hypothesis, "label": label}]  (image + ".jpg")

``Flickr30K_ID`` is the image file's stem: the image is ``<id>.jpg`` under ``train2014/`` or
``val2014/`` of the world (the SNLI-VE reader looks there as it would in ``flickr30k-images/``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .captions import group_holds, groups_of, noun_phrase
from .facts import BACKGROUND_SCENE, LIVING, VEHICLES, Key, be, count_category, counted, counts, plural, singular
from .files import write_json, write_jsonl
from .scene import Scene
from .vocab import BACKGROUND_BY_NAME, CATEGORY_BY_NAME, COLORS, RELATION_PHRASES, SHAPES

PER_LABEL = 2
LABELS = ("entailment", "neutral", "contradiction")
SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

_NEUTRAL_LIVING = ("is hungry", "is tired", "is happy", "is waiting for a friend", "is about to run away",
                   "is looking for food", "is very old", "is making a noise")
_NEUTRAL_PERSON = ("is on holiday", "is named john", "is late for work", "is thinking about dinner")
_NEUTRAL_VEHICLE = ("is brand new", "is out of fuel", "belongs to a doctor", "is going to the city",
                    "was washed yesterday", "is for sale")
_NEUTRAL_THING = ("was bought yesterday", "belongs to a child", "is very expensive", "is a birthday present",
                  "is made in france")
_NEUTRAL_SHAPE = ("was drawn by a child", "was drawn first", "was drawn in the morning", "was drawn with a pen")
_NEUTRAL_PHOTO = ("the photo was taken on a sunday", "the picture was taken last year",
                  "the photographer is a woman", "the picture was taken by a tourist", "it is a holiday")
_NEUTRAL_SEASON = ("the photo was taken in summer", "the picture was taken in spring")


def _entailments(scene: Scene, rng: random.Random) -> list[str]:
    groups = groups_of(scene)
    bg = BACKGROUND_BY_NAME[scene.background]
    out = []
    for g in groups:
        out.append(f"there {be(g.count)} {noun_phrase(g, rng)}")
        out.append(f"{noun_phrase(g, rng)} {be(g.count)} {rng.choice(bg.phrases)}")
    for shape in SHAPES:
        colors = {o.color for o in scene.objects if o.category == shape}
        if len(colors) == 1:
            n = count_category(scene, shape)
            subject = f"the {shape}" if n == 1 else f"the {SHAPES[shape]}"
            out.append(f"{subject} {be(n)} {colors.pop()}")
    for a in groups:
        for b in groups:
            if a is b:
                continue
            for predicate, phrases in RELATION_PHRASES.items():
                if group_holds(scene, a, predicate, b):
                    out.append(f"{noun_phrase(a, rng)} {be(a.count)} {rng.choice(phrases)} {noun_phrase(b, rng)}")
    out.append(f"the picture shows {BACKGROUND_SCENE[scene.background]}")
    return out


def _contradictions(scene: Scene, rng: random.Random) -> list[str]:
    n_of = counts(scene)
    groups = groups_of(scene)
    out = []
    for key, n in n_of.items():  # wrong count: always more than there are, never "a dog" for two dogs
        wrong = n + rng.choice((1, 2))
        out.append(f"there {be(wrong)} {counted(key, wrong)}")
    for key, n in n_of.items():  # wrong colour
        if key[1] is not None:
            color = rng.choice([c for c in COLORS if (key[0], c) not in n_of])
            out.append(f"there {be(1)} {counted((key[0], color), 1)}")
    absent = [c for c in CATEGORY_BY_NAME if count_category(scene, c) == 0]
    for category in rng.sample(absent, 2):  # things that are not there
        out.append(f"there {be(1)} {counted((category, None), 1)}")
    others = [b for b in BACKGROUND_BY_NAME if b != scene.background]
    key, n = rng.choice(list(n_of.items()))  # wrong background
    other = BACKGROUND_BY_NAME[rng.choice(others)]
    out.append(f"{counted(key, n)} {be(n)} {rng.choice(other.phrases)}")
    out.append(f"the picture shows {BACKGROUND_SCENE[rng.choice(others)]}")
    for a in groups:  # inverse relations
        for b in groups:
            if a is b:
                continue
            for predicate, inverse in _INVERSE.items():
                if group_holds(scene, a, predicate, b):
                    out.append(f"{noun_phrase(a, rng)} {be(a.count)} {rng.choice(RELATION_PHRASES[inverse])} "
                               f"{noun_phrase(b, rng)}")
    return out


def _neutral_predicates(key: Key) -> tuple[str, ...]:
    category, color = key
    if color is not None:
        return _NEUTRAL_SHAPE
    if category == "person":
        return _NEUTRAL_PERSON + _NEUTRAL_LIVING[:4]
    if category in LIVING:
        return _NEUTRAL_LIVING
    if category in VEHICLES:
        return _NEUTRAL_VEHICLE
    return _NEUTRAL_THING


def _neutrals(scene: Scene, rng: random.Random) -> list[str]:
    out = []
    for key, n in counts(scene).items():
        subject = f"the {singular(key)}" if n == 1 else f"one of the {plural(key)}"
        for predicate in rng.sample(_neutral_predicates(key), 2):
            out.append(f"{subject} {predicate}")
    out += list(_NEUTRAL_PHOTO)
    if scene.background != "snow":
        out += list(_NEUTRAL_SEASON)
    return out


def hypotheses(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """``PER_LABEL`` (hypothesis, label) pairs per label for ``scene``, in a drawn order."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for label, make in (("entailment", _entailments), ("neutral", _neutrals), ("contradiction", _contradictions)):
        candidates = []
        for text in make(scene, rng):
            text = " ".join(text.split())
            if text not in seen and text not in candidates:
                candidates.append(text)
        for text in rng.sample(candidates, min(PER_LABEL, len(candidates))):
            seen.add(text)
            out.append((text, label))
    rng.shuffle(out)
    return out


def flat_parses(text: str) -> tuple[str, str]:
    """Placeholder (binary parse, parse) in SNLI's bracket notation: right-branching, tags X."""
    words = text.split()
    binary = words[-1]
    for w in reversed(words[:-1]):
        binary = f"( {w} {binary} )"
    parse = "(ROOT (S " + " ".join(f"(X {w})" for w in words) + "))"
    return binary, parse


def write_snli_ve_task(scenes: list[Scene], rng: random.Random, out_dir: Path) -> list[str]:
    """SNLI-VE ``snli_ve_{train,dev,test}.jsonl`` and ALBEF's ``ve_{train,dev,test}.json``."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_FILES.values()}
    albef: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLIT_FILES.values()}
    for s in scenes:
        split = SPLIT_FILES[s.split]
        stem = s.file_name.split("/")[-1].rsplit(".", 1)[0]
        for j, (hypothesis, label) in enumerate(hypotheses(s, rng)):
            k = j % len(s.captions)
            premise = s.captions[k]
            caption_id = f"{stem}.jpg#{k}"
            b1, p1 = flat_parses(premise)
            b2, p2 = flat_parses(hypothesis)
            rows[split].append({
                "Flickr30K_ID": stem,
                "annotator_labels": [label],
                "captionID": caption_id,
                "gold_label": label,
                "pairID": f"{caption_id}r{j}{label[0]}",
                "sentence1": premise,
                "sentence1_binary_parse": b1,
                "sentence1_parse": p1,
                "sentence2": hypothesis,
                "sentence2_binary_parse": b2,
                "sentence2_parse": p2,
            })
            albef[split].append({"image": s.file_name.rsplit(".", 1)[0], "sentence": hypothesis, "label": label})
    files = []
    for split in SPLIT_FILES.values():
        write_jsonl(out_dir / f"snli_ve_{split}.jsonl", rows[split])
        write_json(out_dir / f"ve_{split}.json", albef[split])
        files += [f"snli_ve_{split}.jsonl", f"ve_{split}.json"]
    return files
