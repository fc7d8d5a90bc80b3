"""`vlpipe finetune` / `vlpipe evaluate` for vqa, nlvr2 and grounding on a tiny synthetic world."""

from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import TINY_MODEL, run_cli
from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.config import load_config
from vlpipe.data.shards import list_shards
from vlpipe.data.task_tables import GROUNDING_SCHEMA
from vlpipe.data.tokenizer import load_tokenizer
from vlpipe.finetune import task_grounding, task_vqa
from vlpipe.finetune.spec import CollateSettings, LossContext, TaskInputs, transfer_weights
from vlpipe.finetune.tasks import TASKS, load_task_checkpoint
from vlpipe.metrics.vqa import vqa_accuracy
from vlpipe.models.albef import ALBEF
from vlpipe.models.gradcam import GradCAM, box_iou
from vlpipe.models.nlvr2 import NLVR2Model
from vlpipe.models.transfer import load_mapped
from vlpipe.models.vqa import VQAConfig, VQAModel, tokenize_answers
from vlpipe.stages.cli import app
from vlpipe.train import checkpoint as ckpt_mod

runner = CliRunner()
FAST = ["--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """40 synthetic images (32 px) with captions, VQA, NLVR2 and RefCOCO+: datasets ``w`` (captions),
    ``vqa``, ``nlvr2``, ``ref`` (grounding), tokenizer ``tok`` and ``ck`` pre-trained 6 steps."""
    root = tmp_path_factory.mktemp("ft-tasks") / "artifacts"
    raw = root / "raw" / "w"
    run_cli(root, "synth", "--out", raw, "--images", "40", "--size", "32", "--seed", "5",
            "--tasks", "captions,vqa,nlvr2,refcoco", "--workers", "1")
    run_cli(root, "ingest", "karpathy", raw / "dataset_coco.json", "--images", raw, "--out", "w")
    run_cli(root, "ingest", "vqa", raw / "v2_OpenEnded_mscoco_train2014_questions.json",
            raw / "v2_mscoco_train2014_annotations.json", raw / "v2_OpenEnded_mscoco_val2014_questions.json",
            raw / "v2_mscoco_val2014_annotations.json", raw / "dataset_coco.json", "--out", "vqa", "--workers", "0")
    run_cli(root, "ingest", "nlvr2", *(raw / f"nlvr2_{n}.json" for n in ("train", "dev", "test")), "--out", "nlvr2",
            "--workers", "0")
    run_cli(root, "ingest", "refcoco", raw / "refcoco+/refs(unc).p", raw / "refcoco+/instances.json",
            raw / "refcoco+/dets.json", "--images", raw, "--out", "ref", "--workers", "0")
    run_cli(root, "tokenizer", "train", "--data", "w", "--vocab", "300", "--min-frequency", "1", "--out", "tok")
    run_cli(root, "pretrain", "--shards", "w", "--tokenizer", "tok", "--out", "ck", "--batch-size", "8",
            "--workers", "0", "--steps", "6", "--eval-split", "", *TINY_MODEL)
    return root


def _invoke(root, *args):
    return runner.invoke(app, ["--root", str(root), *map(str, args)])


def _meta(root, name):
    return json.loads((root / "checkpoints" / name / "config.json").read_text())


def _rows(root, name):
    return pq.read_table(root / "checkpoints" / name / "metrics.parquet").to_pylist()


def _table(root, dataset, split=None):
    files = list_shards(root / "datasets" / dataset)
    t = pq.read_table(files).drop_columns([c for c in ("image", "image2") if c in pq.read_schema(files[0]).names])
    rows = t.to_pylist()
    return [r for r in rows if split is None or r["split"] == split]


def _results(root, name):
    folder = root / "results" / name
    assert {"metrics.json", "metrics.parquet", "predictions.parquet", "manifest.json"} <= {p.name for p in folder.iterdir()}
    return (json.loads((folder / "metrics.json").read_text()), pq.read_table(folder / "predictions.parquet").to_pylist(),
            pq.read_table(folder / "metrics.parquet").to_pylist())


def _ck(root):
    return load_task_checkpoint(root / "checkpoints" / "ck")


# -- vqa ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vqa_run(world):
    """20 steps of VQA with a 2-layer decoder (one layer beyond the fusion depth starts fresh)."""
    return run_cli(world, "finetune", "vqa", "--checkpoint", "ck", "--data", "vqa", "--out", "vqa-ft", "--steps", "20",
                   "--batch-size", "8", "--lr", "1e-3", "--set", "vqa.decoder_layers=2", "--set", "vqa.k_test=8",
                   *FAST).output


def test_vqa_checkpoint_stores_config_and_answers(world, vqa_run):
    folder = world / "checkpoints" / "vqa-ft"
    assert {"model.safetensors", "config.json", "answers.json", "eval.json", "tokenizer"} <= {p.name for p in folder.iterdir()}
    meta = _meta(world, "vqa-ft")
    assert meta["task"] == "vqa" and meta["model_class"] == "vqa"
    assert meta["task_config"] == {"decoder_layers": 2, "k_test": 8, "max_answer_len": 10}
    # candidates: the train split's human answers by frequency (ties alphabetical)
    counts = Counter()
    for r in _table(world, "vqa", "train"):
        for a, c in zip(r["answers"], r["answer_counts"]):
            counts[a] += c
    answers = json.loads((folder / "answers.json").read_text())
    assert answers == sorted(counts, key=lambda a: (-counts[a], a))
    assert meta["head"]["answers"] == len(answers)
    assert "fresh (answer_decoder (" in " ".join(vqa_run.split())  # the second decoder layer starts fresh
    rows = _rows(world, "vqa-ft")
    assert len(rows) == 20 and rows[-1]["loss"] < rows[0]["loss"]
    loaded = load_task_checkpoint(folder)  # rebuilt as VQAModel(cfg, VQAConfig.from_dict(task_config))
    assert isinstance(loaded.model, VQAModel) and loaded.task_config == VQAConfig(decoder_layers=2, k_test=8)
    assert len(loaded.model.answer_decoder.layer) == 2 and loaded.assets["answers.json"] == answers


def test_evaluate_vqa_results(world, vqa_run):
    r = run_cli(world, "evaluate", "vqa", "--checkpoint", "vqa-ft", "--data", "vqa", "--split", "val", *FAST)
    m, pred, rows = _results(world, "vqa-ft-vqa-val")
    val = _table(world, "vqa", "val")
    assert m["examples"] == m["scored"] == len(val) == len(pred)
    assert {p["example_id"] for p in pred} == {v["example_id"] for v in val}
    assert m["k_test"] == 8 and 0.0 <= m["accuracy"] <= 1.0
    assert m["accuracy"] == pytest.approx(sum(p["accuracy"] for p in pred) / len(pred))
    by_id = {v["example_id"]: v for v in val}
    for p in pred:
        v = by_id[p["example_id"]]
        assert sorted(p["human_answers"]) == sorted(a for a, c in zip(v["answers"], v["answer_counts"]) for _ in range(c))
        assert p["accuracy"] == pytest.approx(vqa_accuracy(p["predicted"], p["human_answers"]))
        assert p["top_answers"][0] == p["predicted"]
    assert set(m["per_answer_type"]) == {v["answer_type"] for v in val}
    b = m["baseline"]
    assert b["answer"] in ("yes", "no", "1") and 0.0 <= b["accuracy"] <= 1.0
    assert b["accuracy"] == pytest.approx(sum(vqa_accuracy(b["answer"], p["human_answers"]) for p in pred) / len(pred))
    assert m["accuracy"] <= m["candidate_ceiling"] <= 1.0
    assert m["lineage"]["checkpoint"]["name"] == "ck"
    assert {(x["scoring"], x["metric"]) for x in rows if x["headline"]} == {("model", "accuracy")}
    assert ("baseline:most-frequent", "accuracy") in {(x["scoring"], x["metric"]) for x in rows}
    assert "baseline: always" in r.stdout and "ceiling" in r.stdout
    run_cli(world, "evaluate", "vqa", "--checkpoint", "vqa-ft", "--data", "vqa", "--split", "val", "--k-test", "2",
            "--max-examples", "5", "--out", "vqa-k2", *FAST)
    m2, pred2, _ = _results(world, "vqa-k2")
    assert m2["k_test"] == 2 and len(pred2) == 5


def test_vqa_answer_list_option_and_merged_candidates(world):
    spec = TASKS["vqa"]
    files = list_shards(world / "datasets" / "vqa")
    tok = world / "checkpoints" / "ck" / "tokenizer"
    listed = world / "raw" / "w" / "answer_list.json"
    prep = spec.prepare(TaskInputs(files, ("train",), {"answers": str(listed)}, VQAConfig(), tok))
    assert prep.assets["answers.json"] == json.loads(listed.read_text())
    # the captions-only tokenizer has no digits: '0'..'4' all read as [UNK] and are ranked once
    assert any("tokenize like a more frequent one" in n for n in prep.notes)
    keep, merged = task_vqa.distinct_candidates(load_tokenizer(tok), ["1", "0", "dog", "2"], 10)
    assert keep == [0, 2] and merged == [("0", "1"), ("2", "1")]
    prep = spec.prepare(TaskInputs(files, ("train",), {"max_answers": 3}, VQAConfig(), tok))
    assert len(prep.assets["answers.json"]) == 3


@pytest.mark.parametrize("task,data", [("vqa", "vqa"), ("nlvr2", "nlvr2"), ("grounding", "ref")])
def test_resume_after_kill_continues_bit_for_bit(world, monkeypatch, task, data):
    answers = world / "raw" / "w" / "answer_list.json"
    args = ["finetune", task, "--checkpoint", "ck", "--data", data, "--steps", "6", "--batch-size", "8",
            "--lr", "1e-3", "--eval-split", "", "--device", "cpu", *(["--answers", answers] if task == "vqa" else [])]
    r = _invoke(world, *args, "--out", f"{task}-full", "--workers", "0")
    assert r.exit_code == 0, r.output
    full = _rows(world, f"{task}-full")
    real_save = ckpt_mod.RunningCheckpoints.save

    def save_then_die(self, step, write):
        path = real_save(self, step, write)
        if step == 3:
            assert (path / "answers.json").is_file() == (task == "vqa")  # every checkpoint folder is complete
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ckpt_mod.RunningCheckpoints, "save", save_then_die)
    cut = [*args, "--out", f"{task}-cut", "--checkpoint-every", "3", "--workers", "2"]
    r = _invoke(world, *cut)
    assert r.exit_code == 130 and "--resume" in r.output
    monkeypatch.setattr(ckpt_mod.RunningCheckpoints, "save", real_save)
    r = _invoke(world, *cut, "--resume")
    assert r.exit_code == 0, r.output
    assert "resuming from ckpt-00000003" in " ".join(r.output.split())
    resumed = _rows(world, f"{task}-cut")
    assert [x["step"] for x in resumed] == list(range(1, 7))
    keys = [k for k in full[0] if k.startswith(("loss", "acc"))]
    for a, b in zip(full, resumed):
        for key in keys:
            assert a[key] == b[key], (a["step"], key)
    folder = world / "checkpoints" / f"{task}-cut"
    if task == "vqa":
        assert json.loads((folder / "answers.json").read_text()) == json.loads(answers.read_text())
    assert load_file(str(folder / "model.safetensors")).keys() == load_file(
        str(world / "checkpoints" / f"{task}-full" / "model.safetensors")).keys()


def test_vqa_model_overfits_a_few_questions(world):
    """Learnability: a few fixed questions, trained with the task's collate and loss, are answered
    by rank_answers with their (most weighted) answer."""
    torch.manual_seed(0)
    ck = _ck(world)
    model, _ = VQAModel.from_albef(ck.model, ck.cfg.model, VQAConfig())
    model.train()

    def png(color):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), color).save(buf, format="PNG")
        return buf.getvalue()

    rows = {"image_id": ["a", "b", "c", "d"], "image_path": [None] * 4,
            "image": [png((200, 30, 30)), png((30, 200, 30)), png((30, 30, 200)), png((200, 200, 30))],
            "question": ["where is the dog?", "which shape is red?", "what color is the star?", "where is the cat?"],
            "answers": [["beach", "field"], ["circle"], ["black", "white"], ["snow"]],
            "answer_weights": [[0.7, 0.3], [1.0], [0.8, 0.2], [1.0]]}
    settings = CollateSettings(str(ck.tokenizer_dir), 32, 40, train=False, task_config=VQAConfig())
    batch = TASKS["vqa"].collate(settings)(rows, [None] * 4)
    assert batch["answers_per_question"].tolist() == [2, 1, 2, 1] and batch["answer_ids"].shape[0] == 6
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    # 80 steps: near the weighted-NLL optimum, where the runner-up answer's probability is its weight
    # (at 40 the second place was still order-dependent across the suite)
    for step in range(80):
        out = TASKS["vqa"].loss(model, batch, step, LossContext(ck.cfg, 10, 80))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.1 * losses[0], losses
    candidates = ["beach", "field", "circle", "black", "white", "snow", "water", "road", "star"]
    ids, mask = tokenize_answers(load_tokenizer(ck.tokenizer_dir), candidates)
    ranked = model.eval().rank_answers(batch["images"], batch["input_ids"], batch["attention_mask"], ids, mask, k=5)
    assert [candidates[i] for i in ranked.indices[:, 0].tolist()] == ["beach", "circle", "black", "snow"]
    # the less weighted human answer comes second where there is one (weights 0.3 and 0.2)
    assert [candidates[ranked.indices[i, 1]] for i in (0, 2)] == ["field", "white"]


# -- nlvr2 --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nlvr2_run(world):
    return run_cli(world, "finetune", "nlvr2", "--checkpoint", "ck", "--data", "nlvr2", "--out", "nlvr2-ft",
                   "--steps", "8", "--batch-size", "8", "--lr", "1e-3", *FAST).output


def test_nlvr2_finetune_and_evaluate(world, nlvr2_run):
    meta = _meta(world, "nlvr2-ft")
    assert meta["task"] == "nlvr2" and meta["task_config"]["layout"] == "blocks" and meta["head"]["labels"] == ["false", "true"]
    keys = load_file(str(world / "checkpoints" / "nlvr2-ft" / "model.safetensors"))
    assert any(k.startswith("fusion_encoder.layer.1.") for k in keys)  # fusion layer 0 -> blocks 0 and 1
    assert all(0 <= r["acc"] <= 1 for r in _rows(world, "nlvr2-ft"))
    r = run_cli(world, "evaluate", "nlvr2", "--checkpoint", "nlvr2-ft", "--data", "nlvr2", "--split", "test", *FAST)
    m, pred, rows = _results(world, "nlvr2-ft-nlvr2-test")
    test = _table(world, "nlvr2", "test")
    assert m["examples"] == len(pred) == len(test) and 0.0 <= m["accuracy"] <= 1.0
    assert {p["example_id"] for p in pred} == {t["example_id"] for t in test}
    by_id = {t["example_id"]: t for t in test}
    assert all(p["label"] == ("true" if by_id[p["example_id"]]["label"] else "false") for p in pred)
    assert all(p["image_id2"] == by_id[p["example_id"]]["image_id2"] for p in pred)
    assert sum(p["correct"] for p in pred) == round(m["accuracy"] * len(pred))
    train = Counter("true" if t["label"] else "false" for t in _table(world, "nlvr2", "train"))
    b = m["baseline"]
    assert b["train_counts"] == {"false": train["false"], "true": train["true"]}
    assert b["accuracy"] == pytest.approx(sum(p["label"] == b["class"] for p in pred) / len(pred))
    assert ("baseline:majority", "accuracy") in {(x["scoring"], x["metric"]) for x in rows}
    assert "baseline: always" in r.stdout and "confusion" in r.stdout


def test_nlvr2_beats_majority_after_overfitting_a_fixed_batch(world):
    torch.manual_seed(0)
    ck = _ck(world)
    model, report = NLVR2Model.from_albef(ck.model, ck.cfg.model)
    assert {k.split(".")[0] for k in report.missing} == {"cls_head"}
    settings = CollateSettings(str(ck.tokenizer_dir), 32, 40, train=False)
    collate = TASKS["nlvr2"].collate(settings)
    rows = pq.read_table(list_shards(world / "datasets" / "nlvr2"), columns=collate.columns,
                         filters=[("split", "=", "train")]).slice(0, 12).to_pydict()
    batch = collate(rows, [None] * 12)
    labels = batch["labels"]
    majority = max(labels.float().mean().item(), 1 - labels.float().mean().item())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(40):
        out = TASKS["nlvr2"].loss(model, batch, step, LossContext(ck.cfg, 10, 40))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    with torch.no_grad():
        acc = (model.eval()(batch["images"], batch["images2"], batch["input_ids"], batch["attention_mask"])
               .argmax(-1) == labels).float().mean().item()
    assert acc == 1.0 and acc > majority


# -- grounding ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grounding_run(world):
    return run_cli(world, "finetune", "grounding", "--checkpoint", "ck", "--data", "ref", "--out", "gr-ft",
                   "--steps", "6", "--batch-size", "8", "--lr", "1e-3", *FAST).output


def test_grounding_batches_key_each_expression_and_the_loss_passes_the_keys_on(world, monkeypatch):
    from vlpipe.data.loader import text_key
    from vlpipe.models import albef as albef_mod

    rows = pq.read_table(list_shards(world / "datasets" / "ref")).slice(0, 8).to_pylist()
    cols = {c: [r[c] for r in rows] for c in ("image_id", "text", "image", "image_path")}
    settings = CollateSettings(str(world / "tokenizers" / "tok"), 32, 40, train=False)
    batch = task_grounding.collate(settings)(cols, [None] * len(rows))
    assert batch["text_keys"].tolist() == [text_key(t) for t in cols["text"]]
    seen = {}
    real = albef_mod.sample_hard_negatives

    def spy(*args, **kw):
        seen["keys"] = args[5:7]
        return real(*args, **kw)

    monkeypatch.setattr(albef_mod, "sample_hard_negatives", spy)
    loaded = load_task_checkpoint(world / "checkpoints" / "ck", "cpu")
    ctx = LossContext(cfg=loaded.cfg, steps_per_epoch=10, total_steps=10)
    losses = task_grounding.TASK.loss(loaded.model.train(), batch, 0, ctx)
    assert torch.isfinite(losses["loss"])
    assert [k.tolist() for k in seen["keys"]] == [batch["text_keys"].tolist()] * 2  # batch + gathered (1 rank)


def test_grounding_finetune_and_evaluate(world, grounding_run):
    meta = _meta(world, "gr-ft")
    assert meta["task"] == "grounding" and meta["model_class"] == "albef" and meta["config"]["model"]["mlm"] is False
    # the recipe's resolution: 1.5x the pre-trained 32 px (ALBEF: 384 from 256)
    assert meta["image_size"] == 48 and "resolution 48 px, pre-trained at 32 px" in grounding_run
    assert "loss_itc" in _rows(world, "gr-ft")[0] and "loss_itm" in _rows(world, "gr-ft")[0]
    assert 0 <= json.loads((world / "checkpoints" / "gr-ft" / "eval.json").read_text())["accuracy"] <= 1
    r = run_cli(world, "evaluate", "grounding", "--checkpoint", "gr-ft", "--data", "ref", "--split", "test", *FAST)
    m, pred, rows = _results(world, "gr-ft-grounding-test")
    test = [t for t in _table(world, "ref") if t["split"] in ("testA", "testB")]
    assert m["splits"] == ["testA", "testB"] and m["examples"] == len(pred) == len(test)
    assert {p["example_id"] for p in pred} == {t["example_id"] for t in test}
    assert 0.0 <= m["accuracy"] <= 1.0 and m["method"]["layer"] == 0
    for name in ("testA", "testB"):
        v = m["per_split"][name]
        assert v["examples"] == sum(t["split"] == name for t in test) and 0 <= v["accuracy"] <= 1
    # the random-proposal baseline is the exact expectation, recomputed here from the table
    expected = sum(sum(box_iou(p, t["box"]) >= 0.5 for p in t["proposals"]) / len(t["proposals"]) for t in test) / len(test)
    assert m["baseline"]["random"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert all(p["hit"] == (p["iou"] >= 0.5) for p in pred)
    assert {(x["scoring"], x["metric"]) for x in rows} >= {("baseline:random", "accuracy"), ("baseline:largest", "accuracy"),
                                                           ("model", "accuracy:testA"), ("model", "accuracy:testB")}
    assert "random proposal" in r.stdout and "testA" in r.stdout


def _square_png(x, y, size=8):
    img = Image.new("RGB", (32, 32), (0, 0, 0))
    img.paste((255, 255, 255), (x, y, x + size, y + size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


#: (white square x, y; split; target box; proposals); expected pick / hit / random share / largest hit
HAND = [
    ((0, 0), "testA", [0.0, 0.0, 16.0, 16.0], [[16, 16, 16, 16], [0, 0, 16, 16], [0, 16, 16, 16], [16, 0, 16, 16]]),
    ((24, 24), "testA", [16.0, 16.0, 16.0, 16.0], [[0, 0, 32, 32], [16, 16, 16, 16], [0, 0, 16, 16]]),
    ((0, 24), "testB", [16.0, 0.0, 16.0, 16.0], [[0, 16, 16, 16], [16, 0, 16, 16]]),
    ((8, 8), "testB", [0.0, 0.0, 8.0, 8.0], None),  # no proposals: not scored
    ((8, 8), "testB", None, [[0, 0, 8, 8]]),  # no box: not scored
]


@pytest.fixture(scope="module")
def hand_grounding(world):
    """A hand-made grounding table: black 32 px images with one white 8 px square."""
    rows = []
    for i, ((x, y), split, box, proposals) in enumerate(HAND):
        rows.append({"example_id": f"h{i}", "split": split, "image_id": f"img{i}", "image": _square_png(x, y),
                     "image_path": None, "width": 32, "height": 32, "source": "hand", "text": "the white square",
                     "ref_id": i, "ann_id": i, "category": "square", "box": box,
                     "proposals": None if proposals is None else [[float(v) for v in p] for p in proposals]})
    with ArtifactBuilder(artifact_path(world, "dataset", "hand"), "dataset", params={"task": "grounding"}) as b:
        pq.write_table(pa.Table.from_pylist(rows, schema=GROUNDING_SCHEMA), b.dir / "part-00000.parquet")
        b.publish({"task": "grounding", "task_schema": "grounding/1", "rows": len(rows)})
    return "hand"


def test_grounding_wiring_on_a_hand_made_table(world, hand_grounding, monkeypatch):
    # 1. the real Grad-CAM, end to end: accuracy in [0, 1], baselines exactly as computed by hand
    run_cli(world, "evaluate", "grounding", "--checkpoint", "ck", "--data", "hand", "--split", "test", *FAST)
    m, pred, _ = _results(world, "ck-grounding-test")
    assert m["examples"] == 5 and m["scored"] == 3 and 0.0 <= m["accuracy"] <= 1.0
    assert m["baseline"]["random"]["accuracy"] == pytest.approx((1 / 4 + 1 / 3 + 1 / 2) / 3, abs=1e-12)
    assert m["baseline"]["largest"]["accuracy"] == 0.0  # equal areas pick the first; the whole image misses
    assert m["per_split"]["testA"]["random"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    assert [p["hit"] for p in pred][3:] == [None, None]

    # 2. a heatmap that is the image's brightness: the pick is the proposal over the white square
    def bright_cam(model, images, ids, mask, layer=None):
        maps = torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), 8)[:, 0]
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)
        return GradCAM(torch.zeros(len(images), 2), maps[:, None].expand(-1, ids.shape[1], -1, -1), maps, layer)

    monkeypatch.setattr(task_grounding, "gradcam", bright_cam)
    run_cli(world, "evaluate", "grounding", "--checkpoint", "ck", "--data", "hand", "--split", "test",
            "--out", "hand-bright", *FAST)
    m, pred, _ = _results(world, "hand-bright")
    assert [p["predicted_index"] for p in pred] == [1, 1, 0, None, None]
    assert [p["hit"] for p in pred] == [True, True, False, None, None]
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_split"]["testA"]["accuracy"] == 1.0 and m["per_split"]["testB"]["accuracy"] == 0.0


# -- shared -------------------------------------------------------------------------------------------


def test_transfer_weights_is_load_mapped_with_the_identity_map():
    cfg = load_config("albef-tiny", [a for a in TINY_MODEL if a != "--set"] + ["model.text.vocab_size=50"])
    big = load_config("albef-tiny", [a for a in TINY_MODEL if a != "--set"] +
                      ["model.text.vocab_size=50", "model.vision.image_size=48"])
    src = ALBEF(cfg.model)
    a, b = ALBEF(big.model), ALBEF(big.model)
    ra, rb = transfer_weights(src, a), load_mapped(b, src.state_dict())
    assert ra == rb and set(ra.reshaped) == {"visual_encoder.pos_embed", "visual_encoder_m.pos_embed"}
    assert torch.equal(a.visual_encoder_m.pos_embed, b.visual_encoder_m.pos_embed)
    assert a.visual_encoder_m.pos_embed.shape[1] == 1 + 6 * 6


@pytest.mark.parametrize("args,message", [
    (["finetune", "vqa", "--checkpoint", "ck", "--data", "nlvr2", "--out", "x"], "is a 'nlvr2' task table, but a 'vqa' task table"),
    (["finetune", "nlvr2", "--checkpoint", "ck", "--data", "vqa", "--out", "x"], "is a 'vqa' task table, but a 'nlvr2' task table"),
    (["finetune", "grounding", "--checkpoint", "ck", "--data", "w", "--out", "x"], "is a caption dataset, but a 'grounding'"),
    (["finetune", "vqa", "--checkpoint", "ck", "--data", "vqa", "--out", "x", "--answers", "nope.json"], "no such answer list"),
    (["finetune", "vqa", "--checkpoint", "ck", "--data", "vqa", "--out", "x", "--set", "vqa.nope=1"], "unknown VQA setting"),
    (["finetune", "vqa", "--checkpoint", "ck", "--data", "vqa", "--out", "x", "--set", "vqa.k_test=many"], "vqa.k_test takes an integer"),
    (["finetune", "nlvr2", "--checkpoint", "ck", "--data", "nlvr2", "--out", "x", "--set", "nlvr2.layout=x"], "NLVR2 layout"),
    (["finetune", "nlvr2", "--checkpoint", "vqa-ft", "--data", "nlvr2", "--out", "x"], "is a fine-tuned 'vqa' model"),
    (["evaluate", "vqa", "--checkpoint", "ck", "--data", "vqa"], "`evaluate vqa` needs a checkpoint fine-tuned for it"),
    (["evaluate", "vqa", "--checkpoint", "vqa-ft", "--data", "vqa", "--split", "dev"], "no rows in split 'dev'"),
    (["evaluate", "nlvr2", "--checkpoint", "vqa-ft", "--data", "nlvr2"], "is a fine-tuned 'vqa' model"),
    (["evaluate", "grounding", "--checkpoint", "vqa-ft", "--data", "ref"], "is a fine-tuned 'vqa' model"),
    (["evaluate", "grounding", "--checkpoint", "ck", "--data", "vqa"], "is a 'vqa' task table, but a 'grounding'"),
    (["evaluate", "grounding", "--checkpoint", "ck", "--data", "ref", "--split", "dev"], "no rows in split 'dev'"),
])
def test_bad_inputs_are_one_line_errors(world, vqa_run, args, message):
    r = _invoke(world, *args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (world / "checkpoints" / "x").exists() and not (world / "checkpoints" / ".partial-x").exists()
