"""`vlpipe reproduce coco|flickr`: the paper's recipes load with the paper's numbers, missing inputs are
one-line errors with the download URL and write nothing, and the smoke recipe runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlpipe.config import load_config
from vlpipe.recipes import COCO, FLICKR, PRETRAIN, RECIPES_DIR, load_recipe, recipe_path
from vlpipe.recipes import inputs as need
from vlpipe.stages.cli import app

runner = CliRunner()


def invoke(root: Path, *args):
    return runner.invoke(app, ["--root", str(root), "reproduce", *map(str, args)])


def one_line_error(r) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.output
    return lines[0]


def nothing_written(root: Path) -> bool:
    return not root.exists() or not any(root.rglob("*"))


# -- the recipes ---------------------------------------------------------------------------------


def test_recipes_hold_the_papers_numbers():
    pre = load_recipe(PRETRAIN)
    t, m = pre.config.train, pre.config.model
    assert (t.lr, t.min_lr, t.weight_decay, t.warmup_steps, t.epochs, t.batch_size) == (1e-4, 1e-5, 0.02, 1000, 30, 64)
    assert (m.vision.image_size, m.vision.width, m.vision.depth, m.text.text_layers, m.text.fusion_layers) == \
        (256, 768, 12, 6, 6)
    assert (m.queue_size, m.momentum, m.alpha, m.embed_dim, m.temp, m.mlm_prob) == (65536, 0.995, 0.4, 256, 0.07, 0.15)
    assert pre.reproduce["gpus"] == 8 and pre.preset == "albef-base"

    coco = load_recipe(COCO)
    t, m = coco.config.train, coco.config.model
    assert (t.lr, t.min_lr, t.weight_decay, t.warmup_steps, t.epochs, t.batch_size) == (1e-5, 1e-6, 0.02, 0, 5, 32)
    assert m.vision.image_size == 384 and m.alpha == 0.4 and m.distill and m.itc and m.itm and not m.mlm
    assert coco.evaluate == {"split": "test", "k_test": 256, "batch_size": 64}
    assert coco.paper["finetuned"]["ALBEF 4M"]["tr_r1"] == 73.1
    assert coco.paper["finetuned"]["ALBEF 14M"] == pytest.approx(
        {"tr_r1": 77.6, "tr_r5": 94.3, "tr_r10": 97.2, "ir_r1": 60.7, "ir_r5": 84.3, "ir_r10": 90.5, "r_mean": 84.1})

    flickr = load_recipe(FLICKR)
    t, m = flickr.config.train, flickr.config.model
    assert (t.lr, t.min_lr, t.epochs, t.batch_size, m.vision.image_size) == (1e-5, 1e-6, 10, 32, 384)
    assert flickr.evaluate["k_test"] == 128 and flickr.evaluate["split"] == "test"
    assert flickr.paper["finetuned"]["ALBEF 14M"]["tr_r10"] == 100.0
    assert flickr.paper["zero_shot"]["ALBEF 14M"]["ir_r1"] == 82.8
    assert flickr.paper["zero_shot"]["ALBEF 4M"]["tr_r1"] == 90.5

    # each file is also a plain config for `--config FILE` (the reproduce: section is ignored)
    for r in (pre, coco, flickr):
        assert load_config(recipe_path(r.name)) == r.config
    # fine-tuning passes the recipe's settings as --set assignments
    assert "train.lr=1e-5" in coco.assignments() and "model.vision.image_size=384" in coco.assignments()


def test_every_recipe_line_names_its_source():
    files = sorted(RECIPES_DIR.glob("*.yaml"))
    assert {f.stem for f in files} == {PRETRAIN, COCO, FLICKR}
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if line.strip():
                assert "#" in line, f"{f.name}:{n} has no comment: {line!r}"


def test_smoke_is_the_same_recipe_at_another_size():
    full, smoke = load_recipe(PRETRAIN), load_recipe(PRETRAIN, smoke=True)
    assert smoke.preset == "albef-tiny" and smoke.config.model.vision.width == 128
    assert smoke.config.model.vision.image_size == 32 and smoke.config.train.steps == 30
    # the optimisation settings stay the paper's
    for k in ("lr", "min_lr", "weight_decay", "epochs"):
        assert getattr(smoke.config.train, k) == getattr(full.config.train, k)
    coco = load_recipe(COCO, smoke=True)
    assert coco.assignments()[: len(load_recipe(COCO).assignments())] == load_recipe(COCO).assignments()
    assert coco.config.train.lr == 1e-5 and coco.evaluate["k_test"] == 256


# -- missing inputs --------------------------------------------------------------------------------


def coco_root(tmp_path: Path, annotation: bool = True) -> Path:
    root = tmp_path / "coco"
    (root / "train2014").mkdir(parents=True)
    (root / "val2014").mkdir()
    if annotation:
        (root / "dataset_coco.json").write_text('{"images": []}')
    return root


def bert_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bert-base-uncased"
    d.mkdir()
    for f in ("config.json", "vocab.txt", "model.safetensors"):
        (d / f).write_text("x")
    return d


def test_missing_coco_root(tmp_path):
    art = tmp_path / "artifacts"
    line = one_line_error(invoke(art, "coco", "--coco-root", tmp_path / "nope", "--albef-ckpt", "x.pth"))
    assert "nope" in line and need.COCO_ZIPS["train2014"] in line and "cocodataset.org" in line
    assert nothing_written(art)
    line = one_line_error(invoke(art, "coco"))
    assert "--coco-root" in line and need.KARPATHY_ZIP in line
    assert nothing_written(art)


def test_missing_annotation_and_image_folder(tmp_path):
    art = tmp_path / "artifacts"
    root = coco_root(tmp_path, annotation=False)
    line = one_line_error(invoke(art, "coco", "--coco-root", root))
    assert "dataset_coco.json" in line and need.KARPATHY_ZIP in line and need.ALBEF_DATA in line
    (root / "val2014").rmdir()
    line = one_line_error(invoke(art, "coco", "--coco-root", root))
    assert "val2014" in line and need.COCO_ZIPS["val2014"] in line
    assert nothing_written(art)


def test_missing_checkpoints_and_bert(tmp_path):
    art, root, bert = tmp_path / "artifacts", coco_root(tmp_path), bert_dir(tmp_path)
    line = one_line_error(invoke(art, "coco", "--coco-root", root, "--albef-ckpt", tmp_path / "ALBEF_4M.pth",
                                 "--bert-dir", bert))
    assert "ALBEF_4M.pth" in line and need.ALBEF_4M in line and need.ALBEF_14M in line
    line = one_line_error(invoke(art, "coco", "--coco-root", root))  # neither ALBEF nor DeiT
    assert need.ALBEF_4M in line and need.DEIT_PTH in line
    line = one_line_error(invoke(art, "coco", "--coco-root", root, "--deit-ckpt", tmp_path / "deit.pth",
                                 "--bert-dir", bert))
    assert "deit.pth" in line and need.DEIT_PTH in line
    (tmp_path / "ALBEF_4M.pth").write_bytes(b"x")
    line = one_line_error(invoke(art, "coco", "--coco-root", root, "--albef-ckpt", tmp_path / "ALBEF_4M.pth",
                                 "--bert-dir", tmp_path / "no-bert"))
    assert "no-bert" in line and need.BERT_PAGE in line
    assert nothing_written(art)


def test_flickr_needs_coco_for_the_zero_shot_model(tmp_path):
    art, bert = tmp_path / "artifacts", bert_dir(tmp_path)
    flickr = tmp_path / "flickr"
    (flickr / "flickr30k-images").mkdir(parents=True)
    line = one_line_error(invoke(art, "flickr", "--flickr-root", flickr, "--albef-ckpt", "x.pth", "--bert-dir", bert))
    assert "dataset_flickr30k.json" in line and need.KARPATHY_ZIP in line
    (flickr / "dataset_flickr30k.json").write_text('{"images": []}')
    (tmp_path / "ALBEF_4M.pth").write_bytes(b"x")
    line = one_line_error(invoke(art, "flickr", "--flickr-root", flickr, "--albef-ckpt", tmp_path / "ALBEF_4M.pth",
                                 "--bert-dir", bert))
    assert "zero-shot" in line and "Table 3" in line and "--coco-root" in line
    assert nothing_written(art)


def test_dry_run_prints_the_commands_and_torchrun(tmp_path):
    art, root, bert = tmp_path / "artifacts", coco_root(tmp_path), bert_dir(tmp_path)
    deit = tmp_path / "deit_base_patch16_224-b5f2ef4d.pth"
    deit.write_bytes(b"x")
    r = invoke(art, "coco", "--coco-root", root, "--deit-ckpt", deit, "--bert-dir", bert, "--gpus", "8", "--dry-run")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "torchrun --standalone --nproc_per_node 8 -m vlpipe.stages.cli" in out
    assert "pretrain --shards albef-coco --config albef-base" in out and "--set train.lr=1e-4" in out
    assert "finetune retrieval --checkpoint albef-pretrain --data albef-coco" in out
    assert "--set model.vision.image_size=384" in out and "--set train.epochs=5" in out
    assert "evaluate retrieval --checkpoint albef-coco-ft --data albef-coco --split test --k-test 256" in out
    assert f"--init-image {deit}" in out and f"--init-text {bert}" in out
    assert nothing_written(art)
    r = invoke(art, "coco", "--coco-root", root, "--deit-ckpt", deit, "--bert-dir", bert, "--dry-run")
    assert "Pass --gpus 8" in r.output and "torchrun --standalone" not in r.output
    ckpt = tmp_path / "ALBEF_4M.pth"
    ckpt.write_bytes(b"x")
    r = invoke(art, "coco", "--coco-root", root, "--albef-ckpt", ckpt, "--bert-dir", bert, "--dry-run")
    assert r.exit_code == 0, r.output
    assert f"import albef {ckpt} --tokenizer {bert} --out albef-import" in r.output
    assert "finetune retrieval --checkpoint albef-import --data albef-coco" in r.output and "pretrain" not in r.output
    assert nothing_written(art)


# -- the smoke recipe end to end ---------------------------------------------------------------------


def _check_results(art: Path, name: str, settings: dict[str, tuple[str, float]]) -> dict:
    m = json.loads((art / "results" / name / "metrics.json").read_text())
    assert m["task"] == "reproduce" and m["smoke"] is True and "not comparable" in m["note"]
    for key, (model, tr_r1) in settings.items():
        s = m["settings"][key]
        assert s["paper"][model]["tr_r1"] == tr_r1
        for row in (s["obtained"], s["obtained_itc"]):
            assert set(row) == {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean"}
            assert all(0.0 <= v <= 100.0 for v in row.values())
    return m


@pytest.mark.slow
def test_smoke_recipes_end_to_end(tmp_path):
    art = tmp_path / "artifacts"
    r = invoke(art, "coco", "--smoke")
    assert r.exit_code == 0, r.output
    assert "paper Table 2" in r.output and "73.1" in r.output and "SMOKE run" in r.output
    m = _check_results(art, "smoke-coco-reproduce", {"coco_finetuned": ("ALBEF 4M", 73.1)})
    s = m["settings"]["coco_finetuned"]
    assert s["checkpoint"] == "smoke-coco-ft" and s["k_test"] == 256 and s["image_size"] == 48
    ft = json.loads((art / "checkpoints" / "smoke-coco-ft" / "config.json").read_text())
    assert ft["config"]["train"]["lr"] == 1e-5 and ft["lineage"]["checkpoint"]["image_size"] == 32

    # Flickr reuses the pre-trained and COCO-fine-tuned models, adds the Flickr30K-layout miniature
    r = invoke(art, "flickr", "--smoke")
    assert r.exit_code == 0, r.output
    assert "[reuse] fine-tune retrieval (albef-coco-retrieval.yaml)" in r.output and "paper Table 3" in r.output
    m = _check_results(art, "smoke-flickr-reproduce", {"flickr_finetuned": ("ALBEF 14M", 95.9),
                                                       "flickr_zero_shot": ("ALBEF 4M", 90.5)})
    assert m["settings"]["flickr_zero_shot"]["checkpoint"] == "smoke-coco-ft"
    assert m["settings"]["flickr_finetuned"]["checkpoint"] == "smoke-flickr-ft"
    assert (art / "raw" / "smoke-flickr-world" / "flickr30k-images").is_dir()
    import pyarrow.parquet as pq

    ids = pq.read_table(sorted((art / "datasets" / "smoke-flickr").glob("part-*.parquet"))[0]).column("image_id")
    assert all(i.startswith("flickr_") for i in ids.to_pylist())  # read through the Flickr branch of the reader

    # a rerun reuses everything and only rewrites the comparison
    r = invoke(art, "coco", "--smoke")
    assert r.exit_code == 0, r.output
    assert "0 of 6 steps to run" in r.output
