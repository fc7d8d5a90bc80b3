"""Task "vqa": VQA v2 questions and annotations (plus ALBEF's vqa json lists) from the scenes.

Up to :data:`QUESTIONS_PER_IMAGE` questions per image, each of a different kind:

==========  ======================================  ==============  ==============================
kind        question                                answer_type     answer
==========  ======================================  ==============  ==============================
existence   "Is there a cat?"                       yes/no          yes / no (alternating: balanced)
count       "How many dogs are there?"              number          "2" (digits; "0" for absent kinds)
color       "What color is the circle?"             other           the colour of every such shape
shape       "Which shape is red?"                   other           the only red shape's name
relation    "What is to the left of the car?"       other           the one object in that relation
where       "Where is the dog?"                     other           beach / field / snow / road / water
==========  ======================================  ==============  ==============================

Every question has 10 human-style answers: the true answer, with a few (0-4, drawn per question)
replaced by plausible mistakes (another colour, a count off by one, the opposite yes/no, a
synonym), so the official soft score ``min(#matching answers / 3, 1)`` is exercised and the
``multiple_choice_answer`` (the most frequent answer) is always the true one. Mistakes have
``answer_confidence`` "maybe" or "no", true answers mostly "yes".

``question_id = image_id * 1000 + k`` as upstream. Files (COCO 2014 layout: val and test images
are both in val2014, so test questions and their annotations are in the ``val2014`` files; the
Karpathy split file ``dataset_coco.json`` or ``vqa_test.json`` tells them apart)::

    v2_OpenEnded_mscoco_train2014_questions.json   {info, task_type, data_type, data_subtype,
    v2_OpenEnded_mscoco_val2014_questions.json      questions: [{image_id, question, question_id}], license}
    v2_mscoco_train2014_annotations.json           {info, license, data_type, data_subtype, annotations:
    v2_mscoco_val2014_annotations.json              [{question_type, multiple_choice_answer, answers: [10 x
                                                     {answer, answer_confidence, answer_id}], image_id,
                                                     answer_type, question_id}]}
    vqa_train.json, vqa_val.json                   ALBEF: [{question_id, question, answer: [10], image, dataset: "vqa"}]
    vqa_test.json                                  ALBEF: [{question_id, question, image, dataset: "vqa"}] (no answers)
    answer_list.json                               ALBEF: every distinct multiple_choice_answer, sorted
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .facts import (
    ALL_KEYS,
    BACKGROUND_WORD,
    count_category,
    counts,
    name_of,
    plural,
    singular,
)
from .files import write_json
from .scene import Scene
from .vocab import CATEGORY_BY_NAME, COLORS, SHAPES, article

QUESTIONS_PER_IMAGE = 4
ANSWERS_PER_QUESTION = 10

VQA_INFO = {
    "description": "vlpipe synthetic pictogram world (VQA v2 layout)",
    "url": "",
    "version": "2.0",
    "year": 2017,
    "contributor": "vlpipe",
    "date_created": "2017-01-01 00:00:00",
}
VQA_LICENSE = {"url": "", "name": "vlpipe synthetic data (generated, no third-party content)"}

_WHERE_SYNONYMS = {
    "beach": ("sand", "ocean", "shore"), "field": ("grass", "park", "meadow"),
    "snow": ("mountain", "outside", "winter"), "road": ("street", "city", "highway"),
    "water": ("ocean", "lake", "sea"),
}
_RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above",
                   "below": "below", "next to": "next to"}

#: (question, answer, answer_type, question_type, wrong answers to draw noise from)
QA = tuple[str, str, str, str, tuple[str, ...]]


class _Balance:
    """Alternates yes and no for existence questions, so the two are balanced to within one."""

    def __init__(self) -> None:
        self.next_yes = True

    def take(self) -> bool:
        value, self.next_yes = self.next_yes, not self.next_yes
        return value


def _existence(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    present = sorted({o.category for o in scene.objects if o.kind == "pictogram"})
    present_shapes = sorted({o.category for o in scene.objects if o.kind == "shape"})
    want_yes = balance.take()
    if want_yes:
        if not present and not present_shapes:
            return []
        category = rng.choice(present + present_shapes)
    else:
        absent = [c for c in CATEGORY_BY_NAME if count_category(scene, c) == 0]
        absent += [s for s in SHAPES if count_category(scene, s) == 0]
        category = rng.choice(absent)
    noun = singular((category, None))
    answer = "yes" if want_yes else "no"
    return [(f"Is there {article(noun)} {noun}?", answer, "yes/no", "is there a",
             ("no" if want_yes else "yes",))]


def _count(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    out: list[QA] = []
    for key, n in counts(scene).items():
        if key[1] is not None:  # shapes: by colour and shape, and by shape alone
            out.append((f"How many {plural(key)} are there?", str(n), "number", "how many",
                        _near(n)))
            total = count_category(scene, key[0])
            out.append((f"How many {SHAPES[key[0]]} are there?", str(total), "number", "how many",
                        _near(total)))
        else:
            out.append((f"How many {plural(key)} are there?", str(n), "number", "how many", _near(n)))
    if rng.random() < 0.15:  # now and then a kind that is not there: "0"
        absent = [k for k in ALL_KEYS if k[1] is None and count_category(scene, k[0]) == 0]
        key = rng.choice(absent)
        out = [(f"How many {plural(key)} are there?", "0", "number", "how many", ("1",))]
    return out


def _near(n: int) -> tuple[str, ...]:
    return tuple(str(m) for m in (n - 1, n + 1) if m >= 0)


def _color(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    out: list[QA] = []
    for shape in SHAPES:
        colors = {o.color for o in scene.objects if o.category == shape}
        if len(colors) != 1:
            continue  # absent, or two colours: "the circle" would not say which
        color = colors.pop()
        n = count_category(scene, shape)
        q = f"What color is the {shape}?" if n == 1 else f"What color are the {SHAPES[shape]}?"
        qtype = "what color is the" if n == 1 else "what color are the"
        out.append((q, color, "other", qtype, tuple(c for c in COLORS if c != color)))
    return out


def _shape(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    out: list[QA] = []
    for color in COLORS:
        shapes = {o.category for o in scene.objects if o.color == color}
        if len(shapes) == 1:
            shape = shapes.pop()
            out.append((f"Which shape is {color}?", shape, "other", "which",
                        tuple(s for s in SHAPES if s != shape)))
    return out


def _relation(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    out: list[QA] = []
    n_of = counts(scene)
    for x, ox in enumerate(scene.objects):
        if n_of[ox.key] != 1:
            continue  # "the dog" must be the only dog
        for predicate, words in _RELATION_WORDS.items():
            subjects = [j for j in range(len(scene.objects)) if scene.holds(j, predicate, x)]
            if len(subjects) != 1:
                continue
            subject = scene.objects[subjects[0]]
            answer = name_of(subject)
            wrong = tuple(sorted({name_of(o) for o in scene.objects} - {answer, name_of(ox)}))
            if not wrong and subject.kind == "pictogram":  # a synonym: "puppy" for "dog"
                wrong = tuple(n for n, _ in CATEGORY_BY_NAME[subject.category].nouns[1:])
            out.append((f"What is {words} the {name_of(ox)}?", answer, "other", "what is",
                        wrong or ("nothing",)))
    return out


def _where(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    word = BACKGROUND_WORD[scene.background]
    if word is None:
        return []
    out: list[QA] = []
    for key, n in counts(scene).items():
        q = f"Where is the {singular(key)}?" if n == 1 else f"Where are the {plural(key)}?"
        out.append((q, word, "other", "where is the" if n == 1 else "where are the", _WHERE_SYNONYMS[word]))
    return out


#: Question kinds, in the order they are listed (the order asked is drawn per image).
KINDS: dict[str, Callable[[Scene, random.Random, _Balance], list[QA]]] = {
    "existence": _existence,
    "count": _count,
    "color": _color,
    "shape": _shape,
    "relation": _relation,
    "where": _where,
}


def ten_answers(rng: random.Random, truth: str, wrong: tuple[str, ...]) -> list[dict[str, Any]]:
    """10 answers: the truth, with 0-4 of them replaced by mistakes drawn from ``wrong``."""
    r = rng.random()
    n_wrong = 0 if r < 0.5 else 1 if r < 0.75 else 2 if r < 0.9 else 3 if r < 0.97 else 4
    slots = set(rng.sample(range(ANSWERS_PER_QUESTION), n_wrong)) if wrong else set()
    answers = []
    for k in range(ANSWERS_PER_QUESTION):
        if k in slots:
            answers.append({"answer": rng.choice(wrong), "answer_confidence": rng.choice(("maybe", "no")),
                            "answer_id": k + 1})
        else:
            answers.append({"answer": truth, "answer_confidence": "yes" if rng.random() < 0.9 else "maybe",
                            "answer_id": k + 1})
    return answers


def most_common(answers: list[str]) -> str:
    """The most frequent answer (ties: the first of them in order)."""
    c = Counter(answers)
    best = max(c.values())
    return next(a for a in answers if c[a] == best)


def questions_of(scene: Scene, rng: random.Random, balance: _Balance) -> list[QA]:
    """Up to QUESTIONS_PER_IMAGE questions about ``scene``, each of a different kind."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    if "existence" in kinds:  # always ask one: keeps yes/no balanced and every image asked
        kinds.remove("existence")
        kinds.insert(rng.randrange(QUESTIONS_PER_IMAGE), "existence")
    out: list[QA] = []
    for kind in kinds:
        if len(out) == QUESTIONS_PER_IMAGE:
            break
        candidates = [c for c in KINDS[kind](scene, rng, balance) if c[0] not in {q[0] for q in out}]
        if candidates:
            out.append(rng.choice(candidates))
    return out


def write_vqa_task(scenes: list[Scene], rng: random.Random, out_dir: Path) -> list[str]:
    """VQA v2 question/annotation files (train2014, val2014) and ALBEF's vqa json lists."""
    balance = _Balance()
    subtypes = ("train2014", "val2014")
    questions: dict[str, list[dict[str, Any]]] = {s: [] for s in subtypes}
    annotations: dict[str, list[dict[str, Any]]] = {s: [] for s in subtypes}
    albef: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for s in scenes:
        subtype = s.file_name.split("/")[0]
        for k, (question, truth, answer_type, question_type, wrong) in enumerate(questions_of(s, rng, balance)):
            qid = s.image_id * 1000 + k
            answers = ten_answers(rng, truth, wrong)
            raw = [a["answer"] for a in answers]
            questions[subtype].append({"image_id": s.image_id, "question": question, "question_id": qid})
            annotations[subtype].append({
                "question_type": question_type,
                "multiple_choice_answer": most_common(raw),
                "answers": answers,
                "image_id": s.image_id,
                "answer_type": answer_type,
                "question_id": qid,
            })
            row: dict[str, Any] = {"question_id": qid, "question": question}
            if s.split != "test":
                row["answer"] = raw
            row.update({"image": s.file_name, "dataset": "vqa"})
            albef[s.split].append(row)

    files = []
    for subtype in subtypes:
        rel = f"v2_OpenEnded_mscoco_{subtype}_questions.json"
        write_json(out_dir / rel, {
            "info": VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype,
            "questions": questions[subtype], "license": VQA_LICENSE,
        })
        files.append(rel)
        rel = f"v2_mscoco_{subtype}_annotations.json"
        write_json(out_dir / rel, {
            "info": VQA_INFO, "license": VQA_LICENSE, "data_type": "mscoco", "data_subtype": subtype,
            "annotations": annotations[subtype],
        })
        files.append(rel)
    for split, rows in albef.items():
        write_json(out_dir / f"vqa_{split}.json", rows)
        files.append(f"vqa_{split}.json")
    answer_list = sorted({a["multiple_choice_answer"] for part in annotations.values() for a in part})
    write_json(out_dir / "answer_list.json", answer_list)
    files.append("answer_list.json")
    return files
