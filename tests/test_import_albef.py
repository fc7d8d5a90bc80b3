"""`vlpipe import albef`: an official-layout ALBEF checkpoint becomes a vlpipe checkpoint that scores
exactly like the model it was made from; missing / unexpected / reshaped keys are reported; files
that are not ALBEF checkpoints give one-line errors.

The official-layout state dict is made from a tiny vlpipe model by the inverse key map written out
below, independently of ``vlpipe.models.albef_import``."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from typer.testing import CliRunner

from vlpipe.config import adopt_tokenizer, load_config
from vlpipe.data.tokenizer import save_tokenizer, train_wordpiece
from vlpipe.models import ALBEF
from vlpipe.stages.cli import app

from .conftest import CAPTIONS, run_cli

runner = CliRunner()

# A small vlpipe model: 32 px, patch 8, ViT depth 2; 2 text + 1 fusion layers; queue 64.
SETTINGS = ["model.vision.stem=patch", "model.vision.image_size=32", "model.vision.depth=2", "model.text.text_layers=2",
            "model.text.fusion_layers=1", "model.queue_size=64",
            "model.text.pool=cls"]  # official ALBEF pools [CLS] (the import sets it whatever the preset)
TEXT_LAYERS = 2


def make_tokenizer(folder):
    save_tokenizer(train_wordpiece(CAPTIONS * 3, vocab_size=120, min_frequency=1), folder)
    return folder


def tiny_model(tokenizer_dir, seed: int = 0) -> ALBEF:
    """albef-tiny at small sizes with every tensor randomised (momentum copies differ from the online
    ones, queues filled), so that any swapped or dropped key changes the result."""
    from vlpipe.data.tokenizer import load_tokenizer

    cfg = load_config("albef-tiny", SETTINGS)
    cfg.model.text = adopt_tokenizer(cfg.model.text, load_tokenizer(tokenizer_dir))
    torch.manual_seed(seed)
    model = ALBEF(cfg.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.05 if name != "temp" else 0.0))
        model.temp.fill_(0.05)
        model.image_queue.copy_(torch.nn.functional.normalize(torch.randn_like(model.image_queue), dim=0))
        model.text_queue.copy_(torch.nn.functional.normalize(torch.randn_like(model.text_queue), dim=0))
        model.idx_queue.copy_(torch.randint(0, 50, model.idx_queue.shape))
        model.queue_ptr.fill_(17)
    return model.eval()


def to_official(model: ALBEF, text_layers: int = TEXT_LAYERS) -> dict[str, torch.Tensor]:
    """vlpipe names -> the names of salesforce/ALBEF's pre-training model (BertForMaskedLM text encoder)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        value = value.clone()
        top, rest = name.split(".", 1) if "." in name else (name, "")
        m = "_m" if top.endswith("_m") else ""
        base = top[:-2] if m else top
        if base == "text_encoder" and rest.startswith("embeddings."):
            out[f"text_encoder{m}.bert.{rest}"] = value
        elif base == "text_encoder":  # layer.i.*
            out[f"text_encoder{m}.bert.encoder.{rest}"] = value
        elif base == "fusion_encoder":
            i, tail = rest[len("layer."):].split(".", 1)
            out[f"text_encoder{m}.bert.encoder.layer.{int(i) + text_layers}.{tail}"] = value
        elif base == "mlm_head" and rest == "bias":
            out[f"text_encoder{m}.cls.predictions.bias"] = value
            out[f"text_encoder{m}.cls.predictions.decoder.bias"] = value.clone()
        elif base == "mlm_head":
            out[f"text_encoder{m}.cls.predictions.{rest}"] = value
        elif name == "idx_queue":
            out[name] = value.view(1, -1)  # the retrieval model's [1, queue] layout
        else:  # visual_encoder*, vision_proj*, text_proj*, itm_head, temp, queues
            out[name] = value
    for m in ("", "_m"):  # a persistent buffer in the transformers of ALBEF's time
        out[f"text_encoder{m}.bert.embeddings.position_ids"] = torch.arange(40).view(1, -1)
    return out


def save_official(path, sd, wrap: bool = True):
    torch.save({"model": sd, "epoch": 29, "config": {"image_res": 32, "queue_size": 64}} if wrap else sd, path)
    return path


def sample_inputs(model: ALBEF, b: int = 3, length: int = 9):
    g = torch.Generator().manual_seed(1)
    size = model.cfg.vision.image_size
    images = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(5, model.cfg.text.vocab_size, (b, length), generator=g)
    ids[:, 0] = 2
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, 6:] = 0
    ids[mask == 0] = 0
    return images, ids, mask


@torch.no_grad()
def scores(model: ALBEF, images, ids, mask):
    """ITC similarity matrix and ITM logits of every (image, text) pair."""
    image_tokens, image_feat = model.encode_image(images)
    text_tokens, text_feat = model.encode_text(ids, mask)
    sim = image_feat @ text_feat.T / model.temp
    b = images.shape[0]
    rows = torch.arange(b).repeat_interleave(b)
    cols = torch.arange(b).repeat(b)
    itm = model.itm_logits(text_tokens[cols], mask[cols], image_tokens[rows])
    return sim, itm


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(artifacts root, tokenizer folder, the vlpipe model, official state dict, wrapped .pth path)."""
    base = tmp_path_factory.mktemp("albef-import")
    tok = make_tokenizer(base / "tok")
    model = tiny_model(tok)
    sd = to_official(model)
    return base / "artifacts", tok, model, sd, save_official(base / "albef.pth", sd)


def _import(root, path, out, *extra):
    return runner.invoke(app, ["--root", str(root), "import", "albef", str(path), "--out", out,
                               "--config", "albef-tiny", *map(str, extra)])


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_import_gives_identical_itc_and_itm(world):
    from vlpipe.train.pretrain import load_checkpoint

    root, tok, model, sd, path = world
    r = run_cli(root, "import", "albef", path, "--out", "imp", "--config", "albef-tiny", "--tokenizer", tok)
    assert "missing" in r.output and "unexpected" in r.output
    folder = root / "checkpoints" / "imp"
    assert {"model.safetensors", "config.json", "tokenizer", "manifest.json"} <= {p.name for p in folder.iterdir()}

    imported, cfg, tokenizer = load_checkpoint(folder)
    assert cfg.model == model.cfg  # every size read back from the shapes
    assert cfg.model.text.pool == "cls"  # official ALBEF's ITC; albef-tiny itself pools by mean
    inputs = sample_inputs(model)
    sim_a, itm_a = scores(model, *inputs)
    sim_b, itm_b = scores(imported, *inputs)
    assert torch.equal(sim_a, sim_b) and torch.equal(itm_a, itm_b)

    want, got = model.state_dict(), imported.state_dict()
    assert set(want) == set(got)
    for k in want:
        if k != "idx_queue":
            assert torch.equal(want[k], got[k]), k  # momentum copies, queues and queue_ptr too
    assert int(got["queue_ptr"]) == 17
    assert (got["idx_queue"] == -1).all()  # source-dataset ids are not carried over

    manifest = json.loads((folder / "manifest.json").read_text())
    report = manifest["stats"]["import"]
    assert manifest["params"]["source_sha256"] == report["sha256"] and len(report["sha256"]) == 64
    assert report["missing"] == [] and report["unexpected"] == []
    assert report["wrapper"] == "model"
    assert report["reshaped"] == ["idx_queue"]
    assert sorted(report["ignored"]) == ["text_encoder.bert.embeddings.position_ids",
                                         "text_encoder_m.bert.embeddings.position_ids"]
    assert report["inferred"]["model.text.text_layers"] == 2 and report["inferred"]["model.text.fusion_layers"] == 1
    assert report["inferred"]["model.vision.image_size"] == 32
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "vlpipe-albef" and meta["inputs"]["sha256"] == report["sha256"]
    assert tokenizer.mask_token == "[MASK]"


def test_fine_tuned_layout_without_bert_prefix_and_without_momentum(world, tmp_path):
    """Retrieval fine-tuned files: ``text_encoder.*`` (a BertModel, no ``.bert``, no MLM head); no
    momentum copies: those are copied from the online weights."""
    root, tok, model, sd, _ = world
    ft = {k.replace("text_encoder.bert.", "text_encoder."): v for k, v in sd.items()
          if not k.split(".")[0].endswith("_m") and ".cls." not in k}
    path = save_official(tmp_path / "ft.pth", ft)
    r = _import(root, path, "ft", "--tokenizer", tok)
    assert r.exit_code == 2
    assert "mlm_head.bias" in _error_line(r.output) and "--no-strict" in r.output

    r = _import(root, path, "ft", "--tokenizer", tok, "--no-strict")
    assert r.exit_code == 0, r.output
    report = json.loads((root / "checkpoints" / "ft" / "manifest.json").read_text())["stats"]["import"]
    assert report["missing"] and all(k.startswith("mlm_head.") for k in report["missing"])
    assert any("visual_encoder_m: not in the checkpoint" in n for n in report["notes"])
    from vlpipe.train.pretrain import load_checkpoint

    imported, _, _ = load_checkpoint(root / "checkpoints" / "ft")
    inputs = sample_inputs(model)
    for a, b in zip(scores(model, *inputs), scores(imported, *inputs)):
        assert torch.equal(a, b)
    got = imported.state_dict()
    assert torch.equal(got["visual_encoder_m.norm.weight"], got["visual_encoder.norm.weight"])


def test_missing_key_fails_then_no_strict_reports_it(world, tmp_path):
    root, tok, _, sd, _ = world
    broken = {k: v for k, v in sd.items() if k != "itm_head.weight"}
    path = save_official(tmp_path / "broken.pth", broken)
    r = _import(root, path, "broken", "--tokenizer", tok)
    assert r.exit_code == 2
    line = _error_line(r.output)
    assert "itm_head.weight" in line and str(path.name) in line and "--no-strict" in line
    assert not (root / "checkpoints" / "broken").exists()

    r = _import(root, path, "broken", "--tokenizer", tok, "--no-strict")
    assert r.exit_code == 0, r.output
    assert "itm_head.weight" in r.output  # the report table names it
    report = json.loads((root / "checkpoints" / "broken" / "manifest.json").read_text())["stats"]["import"]
    assert report["missing"] == ["itm_head.weight"]


def test_unexpected_heads_are_reported(world, tmp_path):
    root, tok, _, sd, _ = world
    extra = dict(sd)
    extra["cls_head.0.weight"] = torch.zeros(4, 4)
    extra["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 4)
    r = _import(root, save_official(tmp_path / "extra.pth", extra), "extra", "--tokenizer", tok)
    assert r.exit_code == 0, r.output
    assert "cls_head.0.weight" in r.output
    report = json.loads((root / "checkpoints" / "extra" / "manifest.json").read_text())["stats"]["import"]
    assert report["unexpected"] == ["cls_head.0.weight", "text_decoder.bert.embeddings.word_embeddings.weight"]
    assert report["missing"] == []


def test_pos_embed_is_interpolated_for_another_image_size(world):
    from vlpipe.train.pretrain import load_checkpoint

    root, tok, model, _, path = world
    r = run_cli(root, "import", "albef", path, "--out", "big", "--config", "albef-tiny", "--tokenizer", tok,
                "--set", "model.vision.image_size=48")
    assert "visual_encoder.pos_embed" in r.output
    report = json.loads((root / "checkpoints" / "big" / "manifest.json").read_text())["stats"]["import"]
    assert {"visual_encoder.pos_embed", "visual_encoder_m.pos_embed"} <= set(report["reshaped"])
    assert "model.vision.image_size" not in report["inferred"]  # --set wins over the shapes
    imported, cfg, _ = load_checkpoint(root / "checkpoints" / "big")
    assert cfg.model.vision.image_size == 48
    pos = imported.visual_encoder.pos_embed
    assert pos.shape == (1, 1 + 6 * 6, model.cfg.vision.width)
    assert torch.equal(pos[:, 0], model.visual_encoder.pos_embed[:, 0])  # the class position is kept
    tokens, _ = imported.encode_image(torch.randn(2, 3, 48, 48))
    assert tokens.shape == (2, 37, model.cfg.vision.width)


def test_bare_state_dict_and_ddp_prefix(world, tmp_path):
    root, tok, _, sd, _ = world
    path = save_official(tmp_path / "bare.pth", {"module." + k: v for k, v in sd.items()}, wrap=False)
    r = _import(root, path, "bare", "--tokenizer", tok)
    assert r.exit_code == 0, r.output
    report = json.loads((root / "checkpoints" / "bare" / "manifest.json").read_text())["stats"]["import"]
    assert report["wrapper"] is None and report["missing"] == []


def test_without_tokenizer_warns(world, tmp_path):
    from PIL import Image

    root, _, _, _, path = world
    r = _import(root, path, "notok")
    assert r.exit_code == 0, r.output
    assert "no --tokenizer" in r.output
    meta = json.loads((root / "checkpoints" / "notok" / "config.json").read_text())
    assert "tokenizer" not in meta and not (root / "checkpoints" / "notok" / "tokenizer").exists()
    # using it later says what is missing and how to fix it, in one line
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    r = runner.invoke(app, ["--root", str(root), "explain", "--checkpoint", "notok", "--image", str(tmp_path / "red.png"),
                            "--text", "a dog", "--out", str(root / "x")])
    assert r.exit_code == 2
    line = _error_line(r.output)
    assert "no tokenizer" in line and "--tokenizer" in line


@pytest.mark.parametrize("case", ["text", "pickle", "bert", "safetensors", "folder", "tensor", "vocab", "shape"])
def test_wrong_files_give_one_line_errors(world, tmp_path, case):
    root, tok, model, sd, path = world
    extra: list[str] = ["--tokenizer", tok]
    if case == "text":
        path = tmp_path / "notes.pth"
        path.write_text("this is not a checkpoint\n")
        expect = "not a PyTorch checkpoint"
    elif case == "pickle":  # needs full unpickling: refused, never loaded unsafely
        path = tmp_path / "args.pth"
        torch.save({"model": sd, "args": argparse.Namespace(lr=1e-4)}, path)
        expect = "weights_only"
    elif case == "bert":
        path = tmp_path / "bert.pth"
        torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)}, path)
        expect = "not an ALBEF checkpoint"
    elif case == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file({"a": torch.zeros(2)}, str(path))
        expect = "safetensors"
    elif case == "folder":
        path = tmp_path / "dir"
        path.mkdir()
        expect = "folder"
    elif case == "tensor":
        path = tmp_path / "tensor.pth"
        torch.save(torch.zeros(3), path)
        expect = "not a state dict"
    elif case == "vocab":  # a tokenizer whose vocabulary is not the checkpoint's
        other = tmp_path / "tok2"
        save_tokenizer(train_wordpiece(CAPTIONS, vocab_size=60, min_frequency=1), other)
        extra = ["--tokenizer", other]
        expect = "vocabulary"
    else:  # shapes that do not fit: the cross-attention reads another image width
        bad = dict(sd)
        key = f"text_encoder.bert.encoder.layer.{TEXT_LAYERS}.crossattention.self.key.weight"
        bad[key] = torch.zeros(bad[key].shape[0], 7)
        path = save_official(tmp_path / "shape.pth", bad)
        expect = "does not fit"
    r = _import(root, path, f"bad-{case}", *extra)
    assert r.exit_code == 2, r.output
    line = _error_line(r.output)
    assert line.startswith("error:") and re.search(re.escape(expect), line), line
    assert not (root / "checkpoints" / f"bad-{case}").exists()


def test_imported_checkpoint_feeds_embed_and_evaluate(world):
    from .conftest import make_dataset

    root, tok, _, _, path = world
    run_cli(root, "import", "albef", path, "--out", "down", "--config", "albef-tiny", "--tokenizer", tok)
    make_dataset(root, "d")
    run_cli(root, "embed", "--checkpoint", "down", "--data", "d", "--out", "d-emb", "--split", "all",
            "--workers", "0", "--device", "cpu")
    r = run_cli(root, "evaluate", "retrieval", "--checkpoint", "down", "--data", "d", "--k-test", "2",
                "--device", "cpu", "--out", "d-eval")
    assert "ITC" in r.output
    manifest = json.loads((root / "results" / "d-eval" / "manifest.json").read_text())
    assert any(i["name"] == "down" for i in manifest["inputs"])
