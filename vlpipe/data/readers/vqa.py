"""VQA: VQA v2 question + annotation files, ALBEF's vqa / Visual Genome json lists -> vqa rows.

Inputs, recognised by content (any mix, in any order):

* questions ``v2_OpenEnded_mscoco_{train2014,val2014,test2015}_questions.json``:
  ``{info, task_type, data_type, data_subtype, questions: [{image_id, question, question_id}], license}``;
* annotations ``v2_mscoco_{train2014,val2014}_annotations.json``:
  ``{info, license, data_type, data_subtype, annotations: [{question_type, multiple_choice_answer,
  answers: [{answer, answer_confidence, answer_id}] x 10, image_id, answer_type, question_id}]}``,
  matched to questions by ``question_id``;
* ALBEF lists (a top-level JSON list) ``vqa_{train,val,test}.json``:
  ``[{question_id, question, answer: [answers] (absent in test), image, dataset: "vqa"}]`` and
  Visual Genome ``vg_qa.json``: ``[{question_id, question, answer: "one answer", image, dataset: "vg"}]``;
* a Karpathy split file (``dataset_coco.json``): only tells the split of each COCO image (COCO
  2014 keeps val and Karpathy-test images together in val2014).

Rows come file by file in input order, questions in file order; annotations whose question is in
no questions file come last as ``unknown_question`` rejects. A question of a subtype that has an
annotations file but no annotation of its own is ``missing_answer``; a subtype without any
annotations file (test2015) gives rows with no answers.

Images: VQA v2 ``<subtype>/COCO_<subtype>_<image_id:012d>.jpg`` under the image root (or the file
directly in it); ALBEF lists: ``image`` relative to the image root, Visual Genome entries relative
to ``vg_images`` (default: the image root). ``image_id``: ``coco_<id>``, ``vg_<file stem>``.

Answers: distinct answers in first-seen order, their counts, and ALBEF's weights (count / number
of answers; Visual Genome's single answer 0.5, as ALBEF). ``example_id``: ``vqa_<question_id>``
(``vg_<question_id>`` for Visual Genome; ``<file name>:<index>`` when there is no id).

Split: ``split`` if given; for VQA v2 files the Karpathy file's split of the image, else the
subtype (train2014 -> train, val2014 -> val, test2015 -> test); for ALBEF lists the file name
(``vqa_val.json`` -> val), else the Karpathy file's split, else train (``vg_qa.json``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlpipe.data.task_tables import TaskRecord, answer_stats
from vlpipe.errors import InputError

from .base import Records, Reject, image_root, infer_split, input_files, load_json, source_label
from .karpathy import albef_image_id
from .taskfiles import first_existing, is_karpathy, karpathy_splits, split_of_subtype

EXPECTED = ("VQA v2 questions / annotations files (v2_OpenEnded_mscoco_train2014_questions.json, "
            "v2_mscoco_train2014_annotations.json), ALBEF vqa/vg json lists, or dataset_coco.json")
VG_WEIGHT = 0.5


def _subtype(path: Path, data: dict) -> str:
    sub = data.get("data_subtype")
    if isinstance(sub, str) and sub:
        return sub
    for token in ("train2014", "val2014", "test-dev2015", "test2015"):
        if token in path.name:
            return token
    raise InputError(path, "no 'data_subtype' and none in the file name", "expected an upstream VQA v2 file")


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    return None


class _Plan:
    def __init__(self) -> None:
        self.questions: list[tuple[Path, dict]] = []
        self.annotations: dict[int, tuple[dict, str]] = {}  # question_id -> (annotation, source)
        self.annotated_subtypes: set[str] = set()
        self.lists: list[tuple[Path, list]] = []
        self.splits: dict[str, str] = {}


def _classify(path: Path, plan: _Plan) -> None:
    data = load_json(path, EXPECTED)
    if isinstance(data, list):
        for i, e in enumerate(data):
            if not isinstance(e, dict):
                raise InputError(path, f"entry [{i}] is a {type(e).__name__}, not an object",
                                 "expected an ALBEF vqa json list of {question_id, question, answer, image, dataset}")
        if data and not ("question" in data[0] and "image" in data[0]):
            key = "question" if "question" not in data[0] else "image"
            raise InputError(path, f"entry [0] has no key {key!r}",
                             "expected an ALBEF vqa json list of {question_id, question, answer, image, dataset}")
        plan.lists.append((path, data))
        return
    if not isinstance(data, dict):
        raise InputError(path, f"top level is a JSON {type(data).__name__}", f"expected {EXPECTED}")
    if "questions" in data:
        if not isinstance(data["questions"], list):
            raise InputError(path, "key 'questions' is not a list", "expected a VQA v2 questions file")
        for i, q in enumerate(data["questions"]):
            if not isinstance(q, dict):
                raise InputError(path, f"questions[{i}] is a {type(q).__name__}, not an object",
                                 "expected a VQA v2 questions file")
        data["data_subtype"] = _subtype(path, data)
        plan.questions.append((path, data))
    elif "annotations" in data:
        anns = data["annotations"]
        if not isinstance(anns, list):
            raise InputError(path, "key 'annotations' is not a list", "expected a VQA v2 annotations file")
        if anns and isinstance(anns[0], dict) and "caption" in anns[0]:
            raise InputError(path, "annotations hold captions, not answers (a COCO captions file)",
                             "use `vlpipe ingest coco` for captions_*.json")
        source = source_label("vqa", path)
        for i, a in enumerate(anns):
            if not isinstance(a, dict) or _as_int(a.get("question_id")) is None:
                raise InputError(path, f"annotations[{i}] has no integer 'question_id'", "expected a VQA v2 annotations file")
            plan.annotations[_as_int(a["question_id"])] = (a, source)
        plan.annotated_subtypes.add(_subtype(path, data))
    elif is_karpathy(data):
        plan.splits.update(karpathy_splits(path, data))
    else:
        keys = ", ".join(list(data)[:8]) or "none"
        raise InputError(path, f"not a VQA file (top-level keys: {keys})", f"expected {EXPECTED}")


def _answers(ann: dict) -> list[str]:
    return [a["answer"] for a in ann.get("answers") or [] if isinstance(a, dict) and isinstance(a.get("answer"), str)]


def _rows(plan: _Plan, root: Path, vg_root: Path, split: str | None) -> Iterator[TaskRecord | Reject]:
    used: set[int] = set()
    for path, data in plan.questions:
        source = source_label("vqa", path)
        subtype = data["data_subtype"]
        default_split = split_of_subtype(subtype) or infer_split(path.name) or "train"
        has_answers = subtype in plan.annotated_subtypes
        for i, q in enumerate(data["questions"]):
            qid = _as_int(q.get("question_id"))
            example_id = f"vqa_{qid}" if qid is not None else f"{path.name}:{i}"
            ann = plan.annotations.get(qid) if qid is not None else None
            if ann is not None:
                used.add(qid)
            img = _as_int(q.get("image_id"))
            question = q.get("question")
            if img is None:
                yield Reject(reason="missing_image", detail="the question names no integer image_id",
                             caption_id=example_id, caption=question if isinstance(question, str) else None,
                             split=default_split, source=source)
                continue
            image_id = f"coco_{img}"
            row_split = split or plan.splits.get(image_id) or default_split
            name = f"COCO_{subtype}_{img:012d}.jpg"
            image_path = first_existing(root, [f"{subtype}/{name}", name, f"images/{subtype}/{name}"])
            fields: dict[str, Any] = {"question_id": qid, "question": question, "question_type": None,
                                      "answer_type": None, "multiple_choice_answer": None,
                                      "answers": [], "answer_counts": [], "answer_weights": []}
            if ann is not None:
                a = ann[0]
                raw = _answers(a)
                if not raw:
                    yield Reject(reason="missing_answer", detail="the annotation has no answer strings",
                                 image_id=image_id, caption_id=example_id,
                                 caption=question if isinstance(question, str) else None,
                                 split=row_split, source=source, image_path=image_path)
                    continue
                distinct, counts, weights = answer_stats(raw)
                mca = a.get("multiple_choice_answer")
                fields.update(question_type=_str(a.get("question_type")), answer_type=_str(a.get("answer_type")),
                              multiple_choice_answer=_str(mca), answers=distinct, answer_counts=counts,
                              answer_weights=weights)
            elif has_answers:
                yield Reject(reason="missing_answer", detail=f"no annotation for question {qid} in the {subtype} annotations",
                             image_id=image_id, caption_id=example_id,
                             caption=question if isinstance(question, str) else None,
                             split=row_split, source=source, image_path=image_path)
                continue
            yield TaskRecord(example_id=example_id, split=row_split, image_id=image_id, source=source,
                             image_path=image_path, fields=fields)

    for path, data in plan.lists:
        source = source_label("albef", path)
        file_split = infer_split(path.name)
        for i, e in enumerate(data):
            dataset = str(e.get("dataset") or "vqa")
            image = e.get("image")
            qid = _as_int(e.get("question_id"))
            prefix = "vg" if dataset == "vg" else "vqa"
            example_id = f"{prefix}_{qid}" if qid is not None else f"{path.name}:{i}"
            question = e.get("question")
            if not isinstance(image, str) or not image:
                yield Reject(reason="missing_image", detail="the entry has no 'image' path", caption_id=example_id,
                             caption=question if isinstance(question, str) else None,
                             split=split or file_split or "train", source=source)
                continue
            if dataset == "vg":
                image_id = f"vg_{os.path.basename(image).rsplit('.', 1)[0]}"
                image_path = os.path.abspath(os.path.join(vg_root, image))
            else:
                image_id = albef_image_id(image, "coco" if "coco" in image.lower() else path.name)
                image_path = os.path.abspath(os.path.join(root, image))
            answer = e.get("answer")
            if isinstance(answer, str):
                distinct, counts, weights = answer_stats([answer], VG_WEIGHT if dataset == "vg" else None)
            elif isinstance(answer, list):
                distinct, counts, weights = answer_stats([a for a in answer if isinstance(a, str)])
            else:
                distinct, counts, weights = [], [], []
            fields = {"question_id": qid, "question": question, "question_type": None, "answer_type": None,
                      "multiple_choice_answer": None, "answers": distinct, "answer_counts": counts,
                      "answer_weights": weights}
            yield TaskRecord(example_id=example_id, split=split or file_split or plan.splits.get(image_id) or "train",
                             image_id=image_id, source=source, image_path=image_path, fields=fields)

    for qid, (a, source) in plan.annotations.items():
        if qid not in used:
            img = _as_int(a.get("image_id"))
            yield Reject(reason="unknown_question", detail=f"annotation for question {qid}, which no questions file holds",
                         image_id=f"coco_{img}" if img is not None else None, caption_id=f"vqa_{qid}", source=source)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def read_vqa(
    inputs: Sequence[str | Path],
    images: str | Path | None = None,
    split: str | None = None,
    *,
    vg_images: str | Path | None = None,
) -> Records:
    """Rows of the vqa task table (see the module doc) from VQA v2 / ALBEF / VG files."""
    files = input_files(inputs, "VQA file")
    root = image_root(images, files[0])
    vg_root = image_root(vg_images, files[0]) if vg_images is not None else root
    plan = _Plan()
    for path in files:
        _classify(path, plan)
    if plan.annotated_subtypes and not plan.questions:
        raise InputError(files[0], "annotations given without their questions file",
                         "pass v2_OpenEnded_mscoco_<subtype>_questions.json too")
    if not plan.questions and not plan.lists:
        raise InputError(files[0], "no questions in the inputs", f"expected {EXPECTED}")
    matched = {
        _as_int(q.get("question_id")) for _, d in plan.questions for q in d["questions"]
    } & set(plan.annotations)
    total = sum(len(d["questions"]) for _, d in plan.questions) + sum(len(d) for _, d in plan.lists) \
        + len(plan.annotations) - len(matched)
    return Records(_rows(plan, root, vg_root, split), total=total)
