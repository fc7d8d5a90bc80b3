"""`vlpipe export hf|safetensors`: the text tower loads as a transformers BertModel, the image tower
as a timm ViT, both giving vlpipe's hidden states; the safetensors export round-trips the model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vlpipe.config import from_dict
from vlpipe.models import ALBEF
from vlpipe.stages.cli import app

from .conftest import run_cli
from .test_import_albef import make_tokenizer, sample_inputs, save_official, tiny_model, to_official

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(artifacts root, the vlpipe model): an imported checkpoint ``ck`` with a tokenizer."""
    base = tmp_path_factory.mktemp("export")
    tok = make_tokenizer(base / "tok")
    model = tiny_model(tok, seed=3)
    path = save_official(base / "albef.pth", to_official(model))
    root = base / "artifacts"
    run_cli(root, "import", "albef", path, "--out", "ck", "--config", "albef-tiny", "--tokenizer", tok)
    return root, model


def test_hf_text_tower_loads_in_transformers(checkpoint, tmp_path):
    from transformers import BertModel, BertTokenizerFast

    root, model = checkpoint
    out = tmp_path / "hf"
    r = run_cli(root, "export", "hf", "--checkpoint", "ck", "--out", out)
    assert "image_encoder.safetensors" in r.output and "fusion" in r.output
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "image_encoder.safetensors", "image_encoder.json",
            "itc_heads.safetensors", "vlpipe_export.json", "tokenizer.json", "vocab.txt"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folder left

    bert = BertModel.from_pretrained(str(out), add_pooling_layer=False).eval()
    assert bert.config.num_hidden_layers == model.cfg.text.text_layers
    _, ids, mask = sample_inputs(model)
    with torch.no_grad():
        hf_hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = model.text_encoder(ids, mask)
    real = mask.bool()
    assert torch.allclose(hf_hidden[real], ours[real], atol=1e-5, rtol=1e-5)

    tok = BertTokenizerFast.from_pretrained(str(out))
    assert tok.mask_token == "[MASK]" and len(tok) == model.cfg.text.vocab_size

    heads = load_file(str(out / "itc_heads.safetensors"))
    with torch.no_grad():
        feat = torch.nn.functional.normalize(hf_hidden[:, 0] @ heads["text_proj.weight"].T + heads["text_proj.bias"], dim=-1)
        assert torch.allclose(feat, model.encode_text(ids, mask)[1], atol=1e-5)
    assert torch.equal(heads["temp"], model.temp.detach())


def test_hf_image_tower_loads_in_timm(checkpoint, tmp_path):
    import timm

    root, model = checkpoint
    out = tmp_path / "hf"
    run_cli(root, "export", "hf", "--checkpoint", "ck", "--out", out)
    spec = json.loads((out / "image_encoder.json").read_text())
    vit = timm.create_model(spec["model_name"], pretrained=False, **spec["kwargs"])
    vit.load_state_dict(load_file(str(out / "image_encoder.safetensors")), strict=True)
    vit.eval()
    images, _, _ = sample_inputs(model)
    with torch.no_grad():
        assert torch.equal(vit.forward_features(images), model.visual_encoder(images))
    assert spec["input"]["size"] == [model.cfg.vision.image_size] * 2


def test_safetensors_export_round_trips(checkpoint, tmp_path):
    root, model = checkpoint
    out = tmp_path / "st"
    run_cli(root, "export", "safetensors", "--checkpoint", "ck", "--out", out)
    sd = load_file(str(out / "model.safetensors"))
    want = model.state_dict()
    assert set(sd) == set(want)  # every key, tied ones and buffers included
    assert all(torch.equal(sd[k], want[k]) for k in want if k != "idx_queue")
    assert (sd["idx_queue"] == -1).all()  # reset by the import
    meta = json.loads((out / "config.json").read_text())
    rebuilt = ALBEF(from_dict(meta["config"]).model)
    rebuilt.load_state_dict(sd, strict=True)
    assert (out / "tokenizer" / "tokenizer.json").exists()


def test_existing_folder_needs_overwrite(checkpoint, tmp_path):
    root, _ = checkpoint
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = runner.invoke(app, ["--root", str(root), "export", "safetensors", "--checkpoint", "ck", "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output
    assert (out / "keep.txt").exists()
    run_cli(root, "export", "safetensors", "--checkpoint", "ck", "--out", out, "--overwrite")
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    # an artifact folder is never an export target
    r = runner.invoke(app, ["--root", str(root), "export", "hf", "--checkpoint", "ck",
                            "--out", str(root / "checkpoints" / "ck"), "--overwrite"])
    assert r.exit_code == 2 and "artifact" in r.output
    assert (root / "checkpoints" / "ck" / "manifest.json").exists()


def test_conv_stem_image_tower_is_refused_for_hf_but_safetensors_works(tiny_checkpoint, tmp_path):
    """albef-tiny's conv stem has no plain-timm equivalent: `export hf` says so in one line."""
    root = tiny_checkpoint.parents[1]
    assert json.loads((tiny_checkpoint / "config.json").read_text())["config"]["model"]["vision"]["stem"] == "conv"
    r = runner.invoke(app, ["--root", str(root), "export", "hf", "--checkpoint", "ck", "--out", str(tmp_path / "hf")])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "stem" in lines[0] and "export safetensors" in lines[0], r.output
    assert not (tmp_path / "hf").exists()
    run_cli(root, "export", "safetensors", "--checkpoint", "ck", "--out", tmp_path / "st")
    assert (tmp_path / "st" / "model.safetensors").is_file()


def test_hf_export_records_a_mean_pooled_itc_text_feature(checkpoint, tmp_path):
    """With model.text.pool=mean the exported recipe is the masked mean, and following it gives
    vlpipe's own text feature."""
    from transformers import BertModel

    root, _ = checkpoint
    out = tmp_path / "hf"
    r = run_cli(root, "import", "albef", root.parent / "albef.pth", "--out", "ck-mean", "--config", "albef-tiny",
                "--tokenizer", root.parent / "tok", "--set", "model.text.pool=mean")
    r = run_cli(root, "export", "hf", "--checkpoint", "ck-mean", "--out", out)
    assert "mean" in r.output
    info = json.loads((out / "vlpipe_export.json").read_text())
    assert info["itc"]["text_pool"] == "mean" and "mask" in info["itc"]["use"]

    from vlpipe.models.export import load_for_export

    model = load_for_export(root / "checkpoints" / "ck-mean").model.eval()
    bert = BertModel.from_pretrained(str(out), add_pooling_layer=False).eval()
    heads = load_file(str(out / "itc_heads.safetensors"))
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 13, 14, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        h = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        feat = torch.nn.functional.normalize(pooled @ heads["text_proj.weight"].T + heads["text_proj.bias"], dim=-1)
        assert torch.allclose(feat, model.encode_text(ids, mask)[1], atol=1e-5)
