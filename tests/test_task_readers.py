"""Downstream-task readers on fixtures in the exact upstream schemas; task ingest rejects, errors, resume."""

from __future__ import annotations

import json
import pickle
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.test_readers import image_bytes, write_image
from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.data import ingest as ingest_mod
from vlpipe.data.readers import TASK_READERS, Reject, read_nlvr2, read_refcoco, read_snli_ve, read_vqa
from vlpipe.data.shards import list_shards
from vlpipe.data.task_ingest import ingest_task
from vlpipe.data.task_tables import TASK_REJECTS_SCHEMA, TASK_SCHEMAS, TaskRecord, answer_stats
from vlpipe.errors import InputError
from vlpipe.stages.cli import app

runner = CliRunner()


def cli(tmp_path: Path, *args):
    return runner.invoke(app, ["--root", str(tmp_path / "artifacts"), "ingest", *map(str, args)])


def items(records) -> tuple[list[TaskRecord], list[Reject]]:
    out = list(records)
    assert len(out) == records.total  # the reader's count is exact
    return [r for r in out if isinstance(r, TaskRecord)], [r for r in out if isinstance(r, Reject)]


def rows_of(folder: Path) -> list[dict]:
    return [r for p in list_shards(folder) for r in pq.read_table(p).to_pylist()]


def rejects_of(folder: Path) -> dict[str, str]:
    return {r["example_id"]: r["reason"] for r in pq.read_table(folder / "rejects.parquet").to_pylist()}


def ingest_lib(tmp_path: Path, name: str, task: str, records, **kw):
    with ArtifactBuilder(artifact_path(tmp_path / "lib", "dataset", name), "dataset", resumable=True) as b:
        stats = ingest_task(records, b, task, total=records.total, workers=0, **kw)
        b.publish(stats.to_dict())
    folder = tmp_path / "lib" / "datasets" / name
    return stats, rows_of(folder), rejects_of(folder)


# -- VQA v2 ---------------------------------------------------------------------------------------------
VQA_INFO = {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org",
            "version": "2.0", "year": 2017, "contributor": "VQA Team", "date_created": "2017-04-26 17:07:13"}
VQA_LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"}


def _answers(*pairs):
    out, k = [], 1
    for answer, n in pairs:
        for _ in range(n):
            out.append({"answer": answer, "answer_confidence": "yes" if k % 3 else "maybe", "answer_id": k})
            k += 1
    return out


def make_vqa(folder: Path) -> dict[str, Path]:
    """A real-looking VQA v2 val2014 questions/annotations pair + images (one image missing)."""
    write_image(folder / "val2014" / "COCO_val2014_000000458752.jpg", size=(16, 12))
    write_image(folder / "val2014" / "COCO_val2014_000000262146.jpg", size=(10, 10))
    questions = {
        "info": VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": VQA_LICENSE,
        "data_subtype": "val2014",
        "questions": [
            {"image_id": 458752, "question": "What is this photo taken looking through?", "question_id": 458752000},
            {"image_id": 458752, "question": "What position is this man playing?", "question_id": 458752001},
            {"image_id": 262146, "question": "  Is the   dog\tasleep? ", "question_id": 262146000},
            {"image_id": 393225, "question": "What color is the bowl?", "question_id": 393225000},  # no image file
            {"image_id": 262146, "question": "", "question_id": 262146001},
            {"image_id": 262146, "question": "How many dogs?", "question_id": 262146002},  # no annotation
        ],
    }
    annotations = {
        "info": VQA_INFO, "license": VQA_LICENSE, "data_subtype": "val2014", "data_type": "mscoco",
        "annotations": [
            {"question_type": "what is this", "multiple_choice_answer": "net",
             "answers": _answers(("net", 8), ("netting", 1), ("mesh", 1)), "image_id": 458752,
             "answer_type": "other", "question_id": 458752000},
            {"question_type": "what", "multiple_choice_answer": "pitcher",
             "answers": _answers(("pitcher", 5), ("catcher", 3), ("pitcher ", 0), ("batter", 2)), "image_id": 458752,
             "answer_type": "other", "question_id": 458752001},
            {"question_type": "is the", "multiple_choice_answer": "yes",
             "answers": _answers(("yes", 10)), "image_id": 262146, "answer_type": "yes/no", "question_id": 262146000},
            {"question_type": "what color is the", "multiple_choice_answer": "white",
             "answers": _answers(("white", 10)), "image_id": 393225, "answer_type": "other", "question_id": 393225000},
            {"question_type": "none of the above", "multiple_choice_answer": "x",
             "answers": _answers(("x", 10)), "image_id": 262146, "answer_type": "other", "question_id": 262146001},
            {"question_type": "how many", "multiple_choice_answer": "2",
             "answers": _answers(("2", 10)), "image_id": 1, "answer_type": "number", "question_id": 999},  # orphan
        ],
    }
    q = folder / "v2_OpenEnded_mscoco_val2014_questions.json"
    a = folder / "v2_mscoco_val2014_annotations.json"
    q.write_text(json.dumps(questions))
    a.write_text(json.dumps(annotations))
    return {"questions": q, "annotations": a}


def test_answer_stats_albef_weighting():
    assert answer_stats(["net"] * 8 + ["mesh", "netting"]) == (["net", "mesh", "netting"], [8, 1, 1], [0.8, 0.1, 0.1])
    assert answer_stats(["two"], 0.5) == (["two"], [1], [0.5])


def test_vqa_v2_pair(tmp_path):
    files = make_vqa(tmp_path)
    records = read_vqa([files["questions"], files["annotations"]])
    assert records.total == 7
    recs, rejects = items(records)
    assert [r.example_id for r in recs] == ["vqa_458752000", "vqa_458752001", "vqa_262146000", "vqa_393225000",
                                            "vqa_262146001"]
    first = recs[0]
    assert isinstance(first, TaskRecord) and first.image_id == "coco_458752" and first.split == "val"
    assert first.image_path == str(tmp_path / "val2014" / "COCO_val2014_000000458752.jpg")
    assert first.fields["answers"] == ["net", "netting", "mesh"] and first.fields["answer_counts"] == [8, 1, 1]
    assert first.fields["answer_weights"] == pytest.approx([0.8, 0.1, 0.1])
    assert first.fields["multiple_choice_answer"] == "net" and first.fields["answer_type"] == "other"
    assert first.fields["question_id"] == 458752000 and first.fields["question_type"] == "what is this"
    assert recs[1].fields["answer_counts"] == [5, 3, 2]
    assert [(r.caption_id, r.reason) for r in rejects] == [("vqa_262146002", "missing_answer"),
                                                          ("vqa_999", "unknown_question")]

    stats, rows, rej = ingest_lib(tmp_path, "vqa", "vqa", read_vqa([files["questions"], files["annotations"]]),
                                  store_images=True)
    assert [r["example_id"] for r in rows] == ["vqa_458752000", "vqa_458752001", "vqa_262146000"]
    assert rows[2]["question"] == "Is the dog asleep?" and rows[0]["image"] == (tmp_path / "val2014" / "COCO_val2014_000000458752.jpg").read_bytes()
    assert (rows[0]["width"], rows[0]["height"]) == (16, 12)
    assert rej == {"vqa_393225000": "missing_image", "vqa_262146001": "empty_question",
                   "vqa_262146002": "missing_answer", "vqa_999": "unknown_question"}
    assert stats.task == "vqa" and stats.images == 2 and stats.rejects["missing_image"] == 1


def test_vqa_test_questions_albef_and_vg_lists(tmp_path):
    write_image(tmp_path / "test2015" / "COCO_test2015_000000000001.jpg")
    write_image(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg")
    write_image(tmp_path / "vg" / "image" / "2345.jpg")
    test_q = tmp_path / "v2_OpenEnded_mscoco_test2015_questions.json"
    test_q.write_text(json.dumps({"info": VQA_INFO, "task_type": "Open-Ended", "data_type": "mscoco",
                                  "license": VQA_LICENSE, "data_subtype": "test2015",
                                  "questions": [{"image_id": 1, "question": "Why?", "question_id": 1000}]}))
    (tmp_path / "vqa_train.json").write_text(json.dumps([
        {"question_id": 9000, "question": "What is it?", "answer": ["cat"] * 7 + ["kitten"] * 3,
         "image": "train2014/COCO_train2014_000000000009.jpg", "dataset": "vqa"}]))
    (tmp_path / "vg_qa.json").write_text(json.dumps([
        {"question_id": 77, "question": "Where?", "answer": "beach", "image": "image/2345.jpg", "dataset": "vg"}]))
    karpathy = tmp_path / "dataset_coco.json"
    karpathy.write_text(json.dumps({"dataset": "coco", "images": [
        {"filepath": "train2014", "filename": "COCO_train2014_000000000009.jpg", "imgid": 0, "split": "restval",
         "cocoid": 9, "sentences": [], "sentids": []}]}))
    recs, rejects = items(read_vqa([test_q, tmp_path / "vqa_train.json", tmp_path / "vg_qa.json", karpathy],
                                   vg_images=tmp_path / "vg"))
    assert not rejects
    t, v, g = recs
    assert (t.example_id, t.split, t.fields["answers"]) == ("vqa_1000", "test", [])
    assert t.image_path.endswith("test2015/COCO_test2015_000000000001.jpg")
    assert (v.image_id, v.split, v.fields["answers"], v.fields["answer_weights"]) == \
        ("coco_9", "train", ["cat", "kitten"], pytest.approx([0.7, 0.3]))
    assert (g.example_id, g.image_id, g.fields["answers"], g.fields["answer_weights"]) == ("vg_77", "vg_2345", ["beach"], [0.5])
    assert g.image_path == str(tmp_path / "vg" / "image" / "2345.jpg")


# -- SNLI-VE ---------------------------------------------------------------------------------------------
def snli_line(flickr: str, hyp: str, label: str, k: int, key: str = "Flickr30K_ID") -> str:
    cap = f"{flickr}.jpg#{k}"
    return json.dumps({
        key: flickr, "annotator_labels": [label], "captionID": cap, "gold_label": label,
        "pairID": f"{cap}r1{label[:1]}", "sentence1": "Two women are embracing.",
        "sentence1_binary_parse": "( ( Two women ) ( ( are embracing ) . ) )",
        "sentence1_parse": "(ROOT (S (NP (CD Two) (NNS women)) (VP (VBP are) (VP (VBG embracing))) (. .)))",
        "sentence2": hyp, "sentence2_binary_parse": "( x )", "sentence2_parse": "(ROOT (X x))",
    })


def test_snli_ve(tmp_path):
    write_image(tmp_path / "flickr30k-images" / "2248275918.jpg")
    write_image(tmp_path / "3416050480.jpg")
    path = tmp_path / "snli_ve_dev.jsonl"
    path.write_text("\n".join([
        snli_line("2248275918", "The sisters are hugging goodbye.", "neutral", 0),
        snli_line("2248275918", "Two women are holding packages.", "entailment", 1),
        snli_line("3416050480", "The men are fighting outside a deli.", "contradiction", 2, key="Flikr30kID"),
        snli_line("3416050480", "   ", "entailment", 3),
        snli_line("3416050480", "Unsure.", "-", 4),
        "{not json",
        snli_line("9999999999", "No picture.", "neutral", 5),
    ]) + "\n")
    recs, rejects = items(read_snli_ve([path]))
    assert recs[0].image_id == "flickr_2248275918" and recs[0].split == "val"
    assert recs[0].image_path == str(tmp_path / "flickr30k-images" / "2248275918.jpg")
    assert recs[0].fields == {"hypothesis": "The sisters are hugging goodbye.", "premise": "Two women are embracing.",
                              "label": "neutral"}
    assert recs[2].image_path == str(tmp_path / "3416050480.jpg")
    assert [(r.caption_id, r.reason) for r in rejects] == [("snli_ve_dev.jsonl:6", "bad_row")]
    stats, rows, rej = ingest_lib(tmp_path, "ve", "ve", read_snli_ve([path]))
    assert [(r["example_id"], r["label"]) for r in rows] == [
        ("2248275918.jpg#0r1n", "neutral"), ("2248275918.jpg#1r1e", "entailment"), ("3416050480.jpg#2r1c", "contradiction")]
    assert rej == {"3416050480.jpg#3r1e": "empty_hypothesis", "3416050480.jpg#4r1-": "unknown_label",
                   "snli_ve_dev.jsonl:6": "bad_row", "9999999999.jpg#5r1n": "missing_image"}

    albef = tmp_path / "ve_test.json"
    albef.write_text(json.dumps([{"image": "3416050480", "sentence": "A deli.", "label": "neutral"}]))
    (rec,), _ = items(read_snli_ve([albef]))
    assert (rec.example_id, rec.split, rec.image_path) == ("ve_test.json:0", "test", str(tmp_path / "3416050480.jpg"))


# -- NLVR2 -----------------------------------------------------------------------------------------------
def nlvr_row(ident: str, sentence: str, label, directory=None) -> str:
    row = {"validation": {"Q1": "True"}, "sentence": sentence, "left_url": "https://example.org/a.jpg",
           "writer": "103", "label": label, "synset": "n02084071", "query": "dog38",
           "identifier": ident, "extra_validations": {}, "right_url": "https://example.org/b.jpg"}
    if directory is not None:
        row["directory"] = directory
    return json.dumps(row)


def test_nlvr2(tmp_path):
    for name in ("dev-850-0-img0.png", "dev-850-0-img1.png", "dev-851-1-img0.png"):
        write_image(tmp_path / "dev" / name, "PNG")
    for name in ("train-10171-0-img0.png", "train-10171-0-img1.png"):
        write_image(tmp_path / "images" / "train" / "12" / name, "PNG")
    dev = tmp_path / "dev.json"
    dev.write_text("\n".join([
        nlvr_row("dev-850-0-0", "There are exactly three dogs.", "True"),
        nlvr_row("dev-850-0-1", "One image shows a beach.", "False"),
        nlvr_row("dev-850-0-2", "Maybe.", "maybe"),
        nlvr_row("dev-851-1-0", "Right image is missing.", "True"),
        nlvr_row("dev-850-0-3", "", "True"),
    ]) + "\n")
    train = tmp_path / "train.json"
    train.write_text(nlvr_row("train-10171-0-0", "Both dogs sit.", "False", directory=12) + "\n")
    recs, _ = items(read_nlvr2([dev, train]))
    first = recs[0]
    assert (first.example_id, first.split, first.image_id, first.image_id2) == \
        ("dev-850-0-0", "val", "dev-850-0-img0", "dev-850-0-img1")
    assert first.image_path2 == str(tmp_path / "dev" / "dev-850-0-img1.png")
    assert recs[-1].split == "train" and recs[-1].image_path == str(tmp_path / "images" / "train" / "12" / "train-10171-0-img0.png")
    stats, rows, rej = ingest_lib(tmp_path, "nlvr", "nlvr2", read_nlvr2([dev, train]), store_images=True)
    assert [(r["example_id"], r["label"]) for r in rows] == [("dev-850-0-0", True), ("dev-850-0-1", False),
                                                            ("train-10171-0-0", False)]
    assert rows[0]["image2"] == (tmp_path / "dev" / "dev-850-0-img1.png").read_bytes()
    assert rej == {"dev-850-0-2": "unknown_label", "dev-851-1-0": "missing_image", "dev-850-0-3": "empty_sentence"}
    assert stats.images == 4

    albef = tmp_path / "nlvr_dev.json"
    albef.write_text(json.dumps([{"images": ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"],
                                  "sentence": "Dogs.", "label": "True"},
                                 {"images": ["dev/dev-850-0-img0.png"], "sentence": "One image.", "label": "True"}]))
    recs, rejects = items(read_nlvr2([albef]))
    assert recs[0].image_path2 == str(tmp_path / "dev" / "dev-850-0-img1.png") and recs[0].split == "val"
    assert [(r.caption_id, r.reason) for r in rejects] == [("nlvr_dev.json:1", "missing_image")]


# -- RefCOCO+ ----------------------------------------------------------------------------------------------
def make_refcoco(folder: Path, as_pickle: bool = True) -> list[Path]:
    write_image(folder / "train2014" / "COCO_train2014_000000581857.jpg", size=(40, 30))
    write_image(folder / "train2014" / "COCO_train2014_000000000042.jpg", size=(40, 30))
    refs = [
        {"sent_ids": [0, 1], "file_name": "COCO_train2014_000000581857_1719310.jpg", "ann_id": 1719310, "ref_id": 0,
         "image_id": 581857, "split": "testB", "category_id": 1,
         "sentences": [{"tokens": ["woman", "in", "red"], "raw": "woman in red", "sent_id": 0, "sent": "woman in red"},
                       {"tokens": ["lady"], "raw": "Lady", "sent_id": 1, "sent": "lady"}]},
        {"sent_ids": [2], "file_name": "COCO_train2014_000000000042_5.jpg", "ann_id": 5, "ref_id": 1,
         "image_id": 42, "split": "train", "category_id": 1,
         "sentences": [{"tokens": ["flat", "box"], "raw": "flat box", "sent_id": 2, "sent": "flat box"}]},
    ]
    instances = {
        "images": [{"id": 581857, "file_name": "COCO_train2014_000000581857.jpg", "height": 30, "width": 40},
                   {"id": 42, "file_name": "COCO_train2014_000000000042.jpg", "height": 30, "width": 40}],
        "annotations": [{"id": 1719310, "image_id": 581857, "category_id": 1, "bbox": [3.5, 2.0, 10.25, 20.0],
                         "area": 205.0, "iscrowd": 0, "segmentation": [[3.5, 2.0, 13.75, 2.0, 13.75, 22.0]]},
                        {"id": 5, "image_id": 42, "category_id": 1, "bbox": [1, 1, 0, 5], "area": 0.0, "iscrowd": 0}],
        "categories": [{"supercategory": "person", "id": 1, "name": "person"}],
    }
    dets = {"581857": [[3.5, 2.0, 10.25, 20.0, 0.98], [20, 5, 8, 8], ["bad"], [1, 1, -2, 3]]}
    d = folder / "refcoco+"
    d.mkdir(parents=True, exist_ok=True)
    refs_path = d / ("refs(unc).p" if as_pickle else "refs.json")
    if as_pickle:
        refs_path.write_bytes(pickle.dumps(refs, protocol=2))
    else:
        refs_path.write_text(json.dumps(refs))
    (d / "instances.json").write_text(json.dumps(instances))
    (d / "dets.json").write_text(json.dumps(dets))
    return [refs_path, d / "instances.json", d / "dets.json"]


@pytest.mark.parametrize("as_pickle", [True, False])
def test_refcoco_refs(tmp_path, as_pickle):
    files = make_refcoco(tmp_path, as_pickle)
    records = read_refcoco(files, images=tmp_path)
    assert records.total == 3
    recs, rejects = items(records)
    (a, b), (bad,) = recs, rejects
    assert (a.example_id, a.split, a.image_id, a.fields["text"]) == ("ref0#0", "testB", "coco_581857", "woman in red")
    assert a.image_path == str(tmp_path / "train2014" / "COCO_train2014_000000581857.jpg")
    assert a.fields["box"] == [3.5, 2.0, 10.25, 20.0] and a.fields["category"] == "person"
    assert a.fields["proposals"] == [[3.5, 2.0, 10.25, 20.0], [20.0, 5.0, 8.0, 8.0]]
    assert (a.fields["ref_id"], a.fields["ann_id"], b.example_id) == (0, 1719310, "ref0#1")
    assert (bad.caption_id, bad.reason) == ("ref1#0", "bad_box")
    stats, rows, rej = ingest_lib(tmp_path, f"ref{as_pickle}", "grounding", read_refcoco(files, images=tmp_path))
    assert [r["text"] for r in rows] == ["woman in red", "Lady"] and rows[0]["box"] == [3.5, 2.0, 10.25, 20.0]
    assert rej == {"ref1#0": "bad_box"}


def test_refcoco_albef_lists(tmp_path):
    files = make_refcoco(tmp_path)
    (tmp_path / "refcoco+_test.json").write_text(json.dumps([
        {"image": "train2014/COCO_train2014_000000581857.jpg", "text": "woman in red", "ref_id": 0},
        {"image": "train2014/COCO_train2014_000000581857.jpg", "text": "lady", "ref_id": 0},
        {"image": "train2014/COCO_train2014_000000581857.jpg", "text": "who?", "ref_id": 99},
    ]))
    (tmp_path / "refcoco+_train.json").write_text(json.dumps([
        {"image": "train2014/COCO_train2014_000000000042.jpg", "text": "box"}]))
    recs, rejects = items(read_refcoco([tmp_path / "refcoco+_test.json", *files], images=tmp_path))
    assert [(r.example_id, r.split, r.fields["box"]) for r in recs] == [
        ("ref0#0", "testB", [3.5, 2.0, 10.25, 20.0]), ("ref0#1", "testB", [3.5, 2.0, 10.25, 20.0])]
    assert [(r.caption_id, r.reason) for r in rejects] == [("ref99#0", "unknown_ref")]
    # a training list alone: image-text pairs without boxes
    (rec,), _ = items(read_refcoco([tmp_path / "refcoco+_train.json"], images=tmp_path))
    assert (rec.example_id, rec.split, rec.image_id, rec.fields["box"]) == ("refcoco+_train.json:0", "train", "coco_42", None)


# -- malformed inputs: one line, nothing created ---------------------------------------------------------
def _bad_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps([{"ref_id": 0, "ann_id": Fraction(1, 3)}], protocol=2))


@pytest.mark.parametrize("fmt,name,content,message", [
    ("vqa", "v2_OpenEnded_mscoco_val2014_questions.json", '{"questions": [\n {"image_id": 1,\n "question" "x"}]}',
     "v2_OpenEnded_mscoco_val2014_questions.json: not valid JSON at line 3 column"),
    ("vqa", "v2_mscoco_val2014_annotations.json", '{"annotations": [], "data_subtype": "val2014"}',
     "annotations given without their questions file"),
    ("vqa", "captions_val2014.json", '{"images": [], "annotations": [{"image_id": 1, "id": 2, "caption": "x"}]}',
     "annotations hold captions, not answers"),
    ("ve", "snli_ve_train.jsonl", '{"Flickr30K_ID": "1", "sentence2": \n', "snli_ve_train.jsonl: line 1: not valid JSON"),
    ("ve", "snli_ve_train.jsonl", '{"identifier": "dev-1-0-0", "sentence": "x"}\n', "line 1 has no key 'sentence2'"),
    ("nlvr2", "dev.json", '[{"sentence": "x", "label": "True"}]', "dev.json: entry [0] has no key 'images'"),
    ("nlvr2", "dev.json", "\n\n", "dev.json: empty file"),
    ("refcoco", "refs(unc).p", None, "refs(unc).p: not a plain-data pickle"),
    ("refcoco", "refs(unc).p", b"\x80\x02]q\x00(}q\x01", "refs(unc).p: not a readable pickle"),
    ("refcoco", "refcoco+_val.json", '{"foo": 1}', "not a RefCOCO file (top-level keys: foo)"),
])
def test_malformed_task_inputs_one_line_error(tmp_path, fmt, name, content, message):
    path = tmp_path / name
    if content is None:
        _bad_pickle(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError):
        TASK_READERS[fmt][1]([path])
    r = cli(tmp_path, fmt, path, "--out", "x")
    assert r.exit_code == 2, r.output
    assert message in r.output.replace("\n", " "), r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2
    assert not (tmp_path / "artifacts").exists()


def test_refs_need_instances(tmp_path):
    files = make_refcoco(tmp_path)
    r = cli(tmp_path, "refcoco", files[0], "--out", "x")
    assert r.exit_code == 2 and "refs given without instances.json" in r.output


# -- task ingest: schema, crash + resume through the CLI ---------------------------------------------------
def test_task_ingest_cli_resume_equals_clean_run(tmp_path, monkeypatch):
    files = make_vqa(tmp_path / "raw")
    for k in range(6):  # more questions, so that there are several shards
        write_image(tmp_path / "raw" / "val2014" / f"COCO_val2014_{k + 1:012d}.jpg", color=(k * 30, 9, 9))
    q = json.loads(files["questions"].read_text())
    a = json.loads(files["annotations"].read_text())
    for k in range(12):
        q["questions"].append({"image_id": k // 2 + 1, "question": f"Question {k}?", "question_id": 5000 + k})
        a["annotations"].append({"question_type": "what", "multiple_choice_answer": "a", "answers": _answers(("a", 10)),
                                 "image_id": k // 2 + 1, "answer_type": "other", "question_id": 5000 + k})
    files["questions"].write_text(json.dumps(q))
    files["annotations"].write_text(json.dumps(a))
    args = ["vqa", files["questions"], files["annotations"], "--shard-rows", "3", "--store-images", "yes"]
    r = cli(tmp_path, *args, "--out", "clean")
    assert r.exit_code == 0, r.output
    clean = tmp_path / "artifacts" / "datasets" / "clean"
    assert pq.read_schema(list_shards(clean)[0]).equals(TASK_SCHEMAS["vqa"], check_metadata=False)
    assert pq.read_schema(clean / "rejects.parquet").equals(TASK_REJECTS_SCHEMA, check_metadata=False)
    assert len(rows_of(clean)) == 15 and "task table" in r.output

    real_flush = ingest_mod.ColumnShardWriter.flush
    calls = {"n": 0}

    def flaky_flush(self, nbytes=None):
        real_flush(self, nbytes)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ingest_mod.ColumnShardWriter, "flush", flaky_flush)
    r = cli(tmp_path, *args, "--out", "again")
    assert r.exit_code == 130 and "--resume" in r.output
    monkeypatch.setattr(ingest_mod.ColumnShardWriter, "flush", real_flush)
    r = cli(tmp_path, *args, "--out", "again", "--resume")
    assert r.exit_code == 0, r.output
    again = tmp_path / "artifacts" / "datasets" / "again"
    assert rows_of(again) == rows_of(clean)
    assert pq.read_table(again / "rejects.parquet").to_pylist() == pq.read_table(clean / "rejects.parquet").to_pylist()
    m = json.loads((again / "manifest.json").read_text())
    assert m["stats"]["resumed_from"] > 0 and m["params"]["task"] == "vqa"


def test_process_pool_gives_the_same_task_table(tmp_path):
    files = make_vqa(tmp_path)
    args = [files["questions"], files["annotations"]]
    with ArtifactBuilder(artifact_path(tmp_path / "p", "dataset", "pool"), "dataset", resumable=True) as b:
        records = read_vqa(args)
        pooled = ingest_task(records, b, "vqa", total=records.total, workers=2, store_images=True)
        b.publish(pooled.to_dict())
    _, inline_rows, inline_rej = ingest_lib(tmp_path, "inline", "vqa", read_vqa(args), store_images=True)
    folder = tmp_path / "p" / "datasets" / "pool"
    assert rows_of(folder) == inline_rows and rejects_of(folder) == inline_rej


def test_duplicates_and_caption_datasets_unchanged(tmp_path):
    files = make_vqa(tmp_path)
    _, rows, _ = ingest_lib(tmp_path, "dup", "vqa", read_vqa([files["questions"], files["questions"],
                                                              files["annotations"]]))
    reasons = [r["reason"] for r in pq.read_table(tmp_path / "lib" / "datasets" / "dup" / "rejects.parquet").to_pylist()]
    assert len(rows) == 3 and reasons.count("duplicate_example") == 5  # 5 records + 1 reader reject, twice
    # caption ingest records no task
    write_image(tmp_path / "pics" / "a.jpg")
    (tmp_path / "pics" / "a.txt").write_text("one\n")
    r = cli(tmp_path, "folder", tmp_path / "pics", "--out", "f")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "artifacts" / "datasets" / "f" / "manifest.json").read_text())
    assert "task" not in m["params"] and "task" not in m["stats"]
    assert image_bytes()  # the shared fixture helpers stay importable
