"""Downstream-task files of the synthetic world: determinism, upstream schemas, ground truth, CLI round trip."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.test_synth import _check_caption
from vlpipe.artifacts import read_manifest
from vlpipe.data.readers.refcoco import load_pickle
from vlpipe.data.shards import list_shards
from vlpipe.data.synth import TASKS, generate
from vlpipe.data.synth.facts import ALL_KEYS, BACKGROUND_SCENE, BACKGROUND_WORD, LIVING, NUMBER_WORD, plural, singular
from vlpipe.data.synth.generate import make_scene
from vlpipe.data.synth.task_snli_ve import (
    _NEUTRAL_LIVING,
    _NEUTRAL_PERSON,
    _NEUTRAL_PHOTO,
    _NEUTRAL_SEASON,
    _NEUTRAL_SHAPE,
    _NEUTRAL_THING,
    _NEUTRAL_VEHICLE,
)
from vlpipe.data.synth.vocab import COLORS, RELATION_PHRASES, SHAPES, SIZE_WORDS, noun_index
from vlpipe.data.task_tables import GROUNDING_SCHEMA, NLVR2_SCHEMA, VE_SCHEMA, VQA_SCHEMA

N, SIZE, SEED = 60, 48, 3
ALL_TASKS = ["captions", "vqa", "snli_ve", "nlvr2", "refcoco"]
TASK_FILES = [
    "v2_OpenEnded_mscoco_train2014_questions.json", "v2_OpenEnded_mscoco_val2014_questions.json",
    "v2_mscoco_train2014_annotations.json", "v2_mscoco_val2014_annotations.json",
    "vqa_train.json", "vqa_val.json", "vqa_test.json", "answer_list.json",
    "snli_ve_train.jsonl", "snli_ve_dev.jsonl", "snli_ve_test.jsonl", "ve_train.json", "ve_dev.json", "ve_test.json",
    "nlvr2_train.json", "nlvr2_dev.json", "nlvr2_test.json", "nlvr_train.json", "nlvr_dev.json", "nlvr_test.json",
    "refcoco+/instances.json", "refcoco+/refs(unc).p", "refcoco+/dets.json", "refcoco+/cocos.json",
    "refcoco+_train.json", "refcoco+_val.json", "refcoco+_test.json",
]
SPLIT_FILE = {"train": "train", "val": "dev", "test": "test"}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Seed 3 in-process, seed 3 with 2 workers, seed 4: all tasks, 60 images at 48 px."""
    base = tmp_path_factory.mktemp("tasks")
    out = {}
    for name, seed, workers in (("a", SEED, 1), ("b", SEED, 2), ("c", SEED + 1, 1)):
        stats = generate(base / name, N, seed=seed, size=SIZE, workers=workers, tasks=ALL_TASKS)
        out[name] = (base / name, stats)
    return out


@pytest.fixture(scope="module")
def world(worlds):
    folder = worlds["a"][0]
    scenes = {im["image_id"]: im for im in _load(folder, "scenes.json")["images"]}
    return folder, scenes


def _load(folder: Path, rel: str):
    return json.loads((folder / rel).read_text(encoding="utf-8"))


def _jsonl(folder: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (folder / rel).read_text(encoding="utf-8").splitlines()]


def _scene(folder: Path, image_id: int):
    """The Scene object (with relations) of an image of the world."""
    im = _load(folder, "scenes.json")["images"][image_id - 1]
    return make_scene(SEED, im["index"], SIZE, im["split"])


def _balanced(counter: Counter, keys) -> None:
    values = [counter[k] for k in keys]
    mean = sum(values) / len(values)
    assert all(abs(v - mean) <= 0.15 * mean for v in values), counter


# -- registry and determinism ---------------------------------------------------------------------
def test_tasks_registered(worlds):
    assert list(TASKS) == ALL_TASKS
    stats = worlds["a"][1]
    assert stats["tasks"] == ALL_TASKS
    assert set(TASK_FILES) <= set(stats["files"])


def test_same_seed_same_bytes_whatever_the_workers(worlds):
    a, b, c = worlds["a"][0], worlds["b"][0], worlds["c"][0]
    for rel in TASK_FILES:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert worlds["b"][1]["workers"] == 2
    for rel in ("v2_OpenEnded_mscoco_train2014_questions.json", "snli_ve_train.jsonl", "nlvr2_train.json",
                "refcoco+/dets.json"):
        assert (a / rel).read_bytes() != (c / rel).read_bytes(), rel


def test_scene_make_matches_scenes_file(world):
    folder, scenes = world
    s = _scene(folder, 5)
    assert [list(o.bbox) for o in s.objects] == [o["bbox"] for o in scenes[5]["objects"]]


# -- VQA v2 -----------------------------------------------------------------------------------------
_NOUN = noun_index()
_KEY_OF = {singular(k): k for k in ALL_KEYS} | {plural(k): k for k in ALL_KEYS}
_REL_OF = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below",
           "next to": "next to"}


def _vqa_truth(scene, question: str) -> str:
    """The answer to a generated question, computed from the scene."""
    objs = scene.objects
    if m := re.fullmatch(r"Is there an? (\w+)\?", question):
        return "yes" if any(o.category == m.group(1) for o in objs) else "no"
    if m := re.fullmatch(r"How many (.+) are there\?", question):
        words = m.group(1)
        if words in SHAPES.values():
            shape = next(s for s, p in SHAPES.items() if p == words)
            return str(sum(o.category == shape for o in objs))
        return str(sum(o.key == _KEY_OF[words] for o in objs))
    if m := re.fullmatch(r"What color (?:is|are) the (\w+)\?", question):
        shape = m.group(1) if m.group(1) in SHAPES else next(s for s, p in SHAPES.items() if p == m.group(1))
        colors = {o.color for o in objs if o.category == shape}
        assert len(colors) == 1
        return colors.pop()
    if m := re.fullmatch(r"Which shape is (\w+)\?", question):
        shapes = {o.category for o in objs if o.color == m.group(1)}
        assert len(shapes) == 1
        return shapes.pop()
    if m := re.fullmatch(r"Where (?:is|are) the (.+)\?", question):
        assert any(o.key == _KEY_OF[m.group(1)] for o in objs)
        return BACKGROUND_WORD[scene.background]
    if m := re.fullmatch(r"What is (to the left of|to the right of|above|below|next to) the (.+)\?", question):
        ref = [i for i, o in enumerate(objs) if o.key == _KEY_OF[m.group(2)]]
        assert len(ref) == 1
        subjects = [j for j in range(len(objs)) if scene.holds(j, _REL_OF[m.group(1)], ref[0])]
        assert len(subjects) == 1
        return singular(objs[subjects[0]].key)
    raise AssertionError(f"unknown question form: {question!r}")


def test_vqa_upstream_schema(world):
    folder, scenes = world
    seen_images = {}
    for subtype, splits in (("train2014", {"train"}), ("val2014", {"val", "test"})):
        q = _load(folder, f"v2_OpenEnded_mscoco_{subtype}_questions.json")
        a = _load(folder, f"v2_mscoco_{subtype}_annotations.json")
        assert list(q) == ["info", "task_type", "data_type", "data_subtype", "questions", "license"]
        assert q["task_type"] == "Open-Ended" and q["data_type"] == "mscoco" and q["data_subtype"] == subtype
        assert {"info", "license", "data_type", "data_subtype", "annotations"} == set(a)
        assert len(q["questions"]) == len(a["annotations"]) > 0
        for question, ann in zip(q["questions"], a["annotations"]):
            assert set(question) == {"image_id", "question", "question_id"}
            assert set(ann) == {"question_type", "multiple_choice_answer", "answers", "image_id", "answer_type",
                                "question_id"}
            assert ann["question_id"] == question["question_id"] and ann["image_id"] == question["image_id"]
            assert question["question_id"] // 1000 == question["image_id"]
            assert scenes[question["image_id"]]["split"] in splits
            assert question["question"][0].isupper() and question["question"].endswith("?")
            assert [x["answer_id"] for x in ann["answers"]] == list(range(1, 11))
            assert all(set(x) == {"answer", "answer_confidence", "answer_id"} for x in ann["answers"])
            assert {x["answer_confidence"] for x in ann["answers"]} <= {"yes", "maybe", "no"}
            assert ann["answer_type"] in ("yes/no", "number", "other")
            seen_images.setdefault(question["image_id"], 0)
            seen_images[question["image_id"]] += 1
    assert set(seen_images) == set(scenes)  # every image has questions
    assert max(seen_images.values()) <= 4


def test_vqa_answers_are_true_and_noisy(world):
    folder, scenes = world
    yes_no, kinds, exact, noisy = Counter(), Counter(), 0, 0
    for subtype in ("train2014", "val2014"):
        q = _load(folder, f"v2_OpenEnded_mscoco_{subtype}_questions.json")["questions"]
        a = _load(folder, f"v2_mscoco_{subtype}_annotations.json")["annotations"]
        for question, ann in zip(q, a):
            truth = _vqa_truth(_scene(folder, question["image_id"]), question["question"])
            answers = [x["answer"] for x in ann["answers"]]
            assert ann["multiple_choice_answer"] == truth, (question, ann)
            assert answers.count(truth) >= 6
            exact += answers.count(truth) == 10
            noisy += answers.count(truth) < 10
            kinds[ann["question_type"]] += 1
            if ann["answer_type"] == "yes/no":
                yes_no[truth] += 1
            if ann["answer_type"] == "number":
                assert truth.isdigit()
    _balanced(yes_no, ["yes", "no"])
    assert exact > 0 and noisy > 0  # the soft score min(#matches / 3, 1) has partial cases
    assert {"is there a", "how many", "what is", "which"} <= set(kinds)
    assert any(k.startswith("what color") for k in kinds) and any(k.startswith("where") for k in kinds)


def test_vqa_albef_lists(world):
    folder, scenes = world
    ann = {a["question_id"]: a for sub in ("train2014", "val2014")
           for a in _load(folder, f"v2_mscoco_{sub}_annotations.json")["annotations"]}
    total = 0
    for split in ("train", "val", "test"):
        rows = _load(folder, f"vqa_{split}.json")
        total += len(rows)
        for r in rows:
            keys = {"question_id", "question", "image", "dataset"} | ({"answer"} if split != "test" else set())
            assert set(r) == keys and r["dataset"] == "vqa"
            assert scenes[r["question_id"] // 1000]["file_name"] == r["image"]
            assert scenes[r["question_id"] // 1000]["split"] == split
            if split != "test":
                assert r["answer"] == [x["answer"] for x in ann[r["question_id"]]["answers"]]
    assert total == len(ann)
    answer_list = _load(folder, "answer_list.json")
    assert answer_list == sorted(set(answer_list)) and {a["multiple_choice_answer"] for a in ann.values()} == set(answer_list)


# -- SNLI-VE ------------------------------------------------------------------------------------------
SNLI_KEYS = {"Flickr30K_ID", "annotator_labels", "captionID", "gold_label", "pairID", "sentence1",
             "sentence1_binary_parse", "sentence1_parse", "sentence2", "sentence2_binary_parse", "sentence2_parse"}
_NEUTRAL_PREDICATES = set(_NEUTRAL_LIVING + _NEUTRAL_PERSON + _NEUTRAL_VEHICLE + _NEUTRAL_THING + _NEUTRAL_SHAPE)


def _statement_true(scene, text: str) -> bool:
    if m := re.fullmatch(r"the picture shows (.+)", text):
        return BACKGROUND_SCENE[scene.background] == m.group(1)
    if m := re.fullmatch(r"the (\w+) (?:is|are) (\w+)", text):
        shape = m.group(1) if m.group(1) in SHAPES else next(s for s, p in SHAPES.items() if p == m.group(1))
        return {o.color for o in scene.objects if o.category == shape} == {m.group(2)}
    try:
        _check_caption(scene, text)
    except AssertionError:
        return False
    return True


def test_snli_ve_schema_labels_and_truth(world):
    folder, scenes = world
    pair_ids = set()
    for split, name in SPLIT_FILE.items():
        rows = _jsonl(folder, f"snli_ve_{name}.jsonl")
        albef = _load(folder, f"ve_{name}.json")
        assert len(rows) == len(albef) == 6 * sum(s["split"] == split for s in scenes.values())
        labels = Counter()
        for r, a in zip(rows, albef):
            assert set(r) == SNLI_KEYS
            assert r["annotator_labels"] == [r["gold_label"]] and r["pairID"].startswith(r["captionID"] + "r")
            assert r["pairID"] not in pair_ids
            pair_ids.add(r["pairID"])
            image_id = int(r["Flickr30K_ID"][-12:])
            im = scenes[image_id]
            assert im["file_name"].endswith(r["Flickr30K_ID"] + ".jpg") and im["split"] == split
            assert (folder / im["file_name"]).is_file()
            assert r["sentence1"] in im["captions"]
            assert r["sentence2_parse"].startswith("(ROOT (S ") and r["sentence2_binary_parse"].startswith("( ")
            assert a == {"image": im["file_name"][:-4], "sentence": r["sentence2"], "label": r["gold_label"]}
            labels[r["gold_label"]] += 1
            scene = _scene(folder, image_id)
            text = r["sentence2"]
            if r["gold_label"] == "entailment":
                assert _statement_true(scene, text), text
            elif r["gold_label"] == "contradiction":
                assert not _statement_true(scene, text), text
            else:
                assert r["gold_label"] == "neutral"
                if text not in _NEUTRAL_PHOTO + _NEUTRAL_SEASON:
                    m = re.fullmatch(r"(?:the|one of the) (.+?) ((?:is|was|belongs|tastes) .+)", text)
                    assert m and m.group(2) in _NEUTRAL_PREDICATES, text
                    assert any(o.key == _KEY_OF[m.group(1)] for o in scene.objects), text
                elif text in _NEUTRAL_SEASON:
                    assert scene.background != "snow"
        _balanced(labels, ["entailment", "neutral", "contradiction"])


# -- NLVR2 --------------------------------------------------------------------------------------------
NLVR2_KEYS = {"validation", "sentence", "left_url", "writer", "label", "synset", "query", "identifier",
              "extra_validations", "right_url"}
_WORD_NUMBER = {w: n for n, w in NUMBER_WORD.items()}


def _nlvr2_truth(left, right, sentence: str) -> bool:
    def count(scene, words):
        return sum(o.key == _KEY_OF[words] for o in scene.objects)

    side = {"left": left, "right": right}
    text = sentence.rstrip(".").lower()
    if m := re.fullmatch(r"there are no (.+) in either image", text):
        return count(left, m.group(1)) + count(right, m.group(1)) == 0
    if m := re.fullmatch(r"there is exactly one (.+) in total", text):
        return count(left, m.group(1)) + count(right, m.group(1)) == 1
    if m := re.fullmatch(r"there are exactly (\w+) (.+) in total", text):
        return count(left, m.group(2)) + count(right, m.group(2)) == _WORD_NUMBER[m.group(1)]
    if m := re.fullmatch(r"the (left|right) image has at least one (.+)", text):
        return count(side[m.group(1)], m.group(2)) >= 1
    if m := re.fullmatch(r"the (left|right) image has exactly one (.+)", text):
        return count(side[m.group(1)], m.group(2)) == 1
    if m := re.fullmatch(r"the (left|right) image has exactly (\w+) (.+)", text):
        return count(side[m.group(1)], m.group(3)) == _WORD_NUMBER[m.group(2)]
    if m := re.fullmatch(r"the (left|right) image has more (.+) than the (left|right) image", text):
        return count(side[m.group(1)], m.group(2)) > count(side[m.group(3)], m.group(2))
    if m := re.fullmatch(r"each image has at least one (.+)", text):
        return count(left, m.group(1)) >= 1 and count(right, m.group(1)) >= 1
    scene_of = {v: k for k, v in BACKGROUND_SCENE.items()}
    if m := re.fullmatch(r"both images show (.+)", text):
        return left.background == right.background == scene_of[m.group(1)]
    if m := re.fullmatch(r"the (left|right) image shows (.+)", text):
        return side[m.group(1)].background == scene_of[m.group(2)]
    raise AssertionError(f"unknown sentence form: {sentence!r}")


def test_nlvr2_schema_labels_and_truth(world):
    folder, scenes = world
    by_file = {im["file_name"]: im for im in scenes.values()}
    for split, name in SPLIT_FILE.items():
        rows = _jsonl(folder, f"nlvr2_{name}.json")
        albef = _load(folder, f"nlvr_{name}.json")
        assert len(rows) == len(albef) == 2 * sum(s["split"] == split for s in scenes.values())
        labels = Counter()
        for r, a in zip(rows, albef):
            assert set(r) == NLVR2_KEYS | ({"directory"} if name == "train" else set())
            assert re.fullmatch(rf"{name}-\d+-0-[01]", r["identifier"])
            left, right = by_file[r["left_url"]], by_file[r["right_url"]]
            assert left["split"] == right["split"] == split and left["image_id"] != right["image_id"]
            assert r["label"] in ("True", "False")
            assert a == {"images": [r["left_url"], r["right_url"]], "sentence": r["sentence"], "label": r["label"]}
            truth = _nlvr2_truth(_scene(folder, left["image_id"]), _scene(folder, right["image_id"]), r["sentence"])
            assert str(truth) == r["label"], r
            labels[r["label"]] += 1
        _balanced(labels, ["True", "False"])
        assert len({r["identifier"] for r in rows}) == len(rows)


# -- RefCOCO+ -----------------------------------------------------------------------------------------
_SIZE_OF = {w: cls for cls, words in SIZE_WORDS.items() for w in words}
_PHRASES = sorted(((p, pred) for pred, ps in RELATION_PHRASES.items() for p in ps), key=lambda x: -len(x[0]))


def _referents(scene, text: str) -> list[int]:
    """The objects an expression describes (parsed back from its words)."""
    text = text.removeprefix("the ")
    predicate, anchor = None, None
    for phrase, pred in _PHRASES:
        if f" {phrase} the " in text:
            text, anchor_name = text.split(f" {phrase} the ", 1)
            anchors = [i for i, o in enumerate(scene.objects) if singular(o.key) == anchor_name]
            assert len(anchors) == 1, anchor_name
            predicate, anchor = pred, anchors[0]
            break
    words = text.split()
    size = _SIZE_OF.get(words[0]) if len(words) > 1 and words[0] in _SIZE_OF else None
    words = words[1:] if size else words
    color = words[0] if len(words) == 2 and words[0] in COLORS else None
    category = _NOUN[words[-1]][0]
    return [i for i, o in enumerate(scene.objects) if o.category == category
            and (color is None or o.color == color) and (size is None or o.size == size)
            and (predicate is None or scene.holds(i, predicate, anchor))]


def test_refcoco_files_and_unique_expressions(world):
    folder, scenes = world
    refs = load_pickle(folder / "refcoco+/refs(unc).p")
    inst = _load(folder, "refcoco+/instances.json")
    dets = _load(folder, "refcoco+/dets.json")
    cocos = _load(folder, "refcoco+/cocos.json")
    assert {"images", "annotations", "categories"} <= set(inst)
    anns = {a["id"]: a for a in inst["annotations"]}
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    assert len(anns) == sum(len(s["objects"]) for s in scenes.values())
    assert len(refs) > N // 2
    splits = Counter()
    for ref in refs:
        assert set(ref) == {"sent_ids", "file_name", "ann_id", "ref_id", "image_id", "split", "sentences", "category_id"}
        im = scenes[ref["image_id"]]
        k = ref["ann_id"] - 100 * ref["image_id"] - 1
        obj = im["objects"][k]
        assert anns[ref["ann_id"]]["bbox"] == [float(v) for v in obj["bbox"]]
        assert cats[ref["category_id"]] == obj["category"]
        assert anns[ref["ann_id"]]["bbox"] in dets[str(ref["image_id"])]
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]] and 1 <= len(ref["sentences"]) <= 3
        if im["split"] == "test":
            assert ref["split"] == ("testA" if obj["category"] in LIVING else "testB")
        else:
            assert ref["split"] == im["split"]
        splits[ref["split"]] += 1
        scene = _scene(folder, ref["image_id"])
        for s in ref["sentences"]:
            assert set(s) == {"tokens", "raw", "sent_id", "sent"} and s["sent"] == " ".join(s["tokens"])
            assert _referents(scene, s["raw"]) == [k], (s["raw"], im["objects"])
    assert splits["train"] and splits["val"] and splits["testA"] + splits["testB"]
    for image_id, boxes in cocos.items():
        assert boxes == [[float(v) for v in o["bbox"]] for o in scenes[int(image_id)]["objects"]]
        assert len(dets[image_id]) == len(boxes) + 2 and all(b in dets[image_id] for b in boxes)
        for x, y, w, h in dets[image_id]:
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= SIZE + 1e-6 and y + h <= SIZE + 1e-6
    by_ref = {r["ref_id"]: r for r in refs}
    n_rows = 0
    for split in ("train", "val", "test"):
        for row in _load(folder, f"refcoco+_{split}.json"):
            assert set(row) == {"image", "text", "ref_id"}
            ref = by_ref[row["ref_id"]]
            assert row["text"] in [s["raw"] for s in ref["sentences"]]
            assert row["image"] == scenes[ref["image_id"]]["file_name"]
            assert ref["split"].startswith(split)
            n_rows += 1
    assert n_rows == sum(len(r["sentences"]) for r in refs)


# -- through the CLI: synth --tasks, then ingest each task ----------------------------------------------
def _rows(folder: Path) -> list[dict]:
    return [r for p in list_shards(folder) for r in pq.read_table(p).to_pylist()]


def test_cli_synth_tasks_then_ingest_each(tmp_path):
    root = tmp_path / "artifacts"
    raw = root / "raw" / "w"
    run_cli(root, "synth", "--out", raw, "--images", "20", "--size", "32", "--seed", "2",
            "--tasks", "captions,vqa,snli_ve,nlvr2,refcoco")
    m = read_manifest(raw)
    assert m.params["tasks"] == ALL_TASKS and "refcoco+/refs(unc).p" in {f.path for f in m.files}
    scenes = {im["image_id"]: im for im in _load(raw, "scenes.json")["images"]}

    run_cli(root, "ingest", "vqa", raw / "v2_OpenEnded_mscoco_train2014_questions.json",
            raw / "v2_mscoco_train2014_annotations.json", raw / "v2_OpenEnded_mscoco_val2014_questions.json",
            raw / "v2_mscoco_val2014_annotations.json", raw / "dataset_coco.json", "--out", "vqa")
    run_cli(root, "ingest", "ve", *(raw / f"snli_ve_{n}.jsonl" for n in ("train", "dev", "test")), "--out", "ve")
    run_cli(root, "ingest", "nlvr2", *(raw / f"nlvr2_{n}.json" for n in ("train", "dev", "test")), "--out", "nlvr2")
    r = run_cli(root, "ingest", "refcoco", raw / "refcoco+/refs(unc).p", raw / "refcoco+/instances.json",
                raw / "refcoco+/dets.json", "--images", raw, "--out", "ref")
    assert "grounding" in r.output

    expected = {"vqa": ("vqa", VQA_SCHEMA), "ve": ("ve", VE_SCHEMA), "nlvr2": ("nlvr2", NLVR2_SCHEMA),
                "ref": ("grounding", GROUNDING_SCHEMA)}
    for name, (task, schema) in expected.items():
        folder = root / "datasets" / name
        manifest = read_manifest(folder)
        assert manifest.kind == "dataset" and manifest.params["task"] == task
        assert manifest.stats["task"] == task and manifest.stats["task_schema"] == f"{task}/1"
        assert manifest.stats["rejected"] == 0, manifest.stats
        assert pq.read_schema(list_shards(folder)[0]).equals(schema, check_metadata=False)

    vqa = _rows(root / "datasets" / "vqa")
    n_questions = sum(len(_load(raw, f"v2_OpenEnded_mscoco_{s}_questions.json")["questions"])
                      for s in ("train2014", "val2014"))
    assert len(vqa) == n_questions
    for row in vqa:
        image = scenes[int(row["image_id"][5:])]
        assert row["split"] == image["split"]  # Karpathy file: test questions are test, not val
        assert row["image"] is not None and row["image_path"].endswith(image["file_name"])
        assert sum(row["answer_counts"]) == 10 and abs(sum(row["answer_weights"]) - 1) < 1e-5
        assert row["answers"][row["answer_counts"].index(max(row["answer_counts"]))] == row["multiple_choice_answer"]

    ve = _rows(root / "datasets" / "ve")
    assert len(ve) == 6 * len(scenes) and {r["label"] for r in ve} == {"entailment", "neutral", "contradiction"}
    assert {r["split"] for r in ve} == {"train", "val", "test"}

    nlvr = _rows(root / "datasets" / "nlvr2")
    assert nlvr and all(r["image2"] is not None and r["image_id"] != r["image_id2"] for r in nlvr)
    assert Counter(r["label"] for r in nlvr) == {True: len(nlvr) // 2, False: len(nlvr) // 2}

    ref = _rows(root / "datasets" / "ref")
    refs = load_pickle(raw / "refcoco+/refs(unc).p")
    assert len(ref) == sum(len(r["sentences"]) for r in refs)
    for row in ref:
        image = scenes[int(row["image_id"][5:])]
        k = row["ann_id"] - 100 * image["image_id"] - 1
        assert row["box"] == [float(v) for v in image["objects"][k]["bbox"]]
        assert row["box"] in row["proposals"] and row["category"] == image["objects"][k]["category"]
