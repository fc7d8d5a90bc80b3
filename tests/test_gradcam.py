"""Grad-CAM of the ITM score on a cross-attention map, proposal-box scoring, IoU, the overlay
renderer, and `vlpipe explain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vlpipe.config import load_config
from vlpipe.errors import VlpipeError
from vlpipe.explain import merge_word_pieces, render_overlay
from vlpipe.models import ALBEF
from vlpipe.models.gradcam import best_box, box_iou, box_scores, default_layer, gradcam, gradcam_maps, upsample
from vlpipe.stages.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def albef():
    torch.manual_seed(0)
    cfg = load_config("albef-tiny", ["model.queue_size=64", "model.vision.image_size=32", "model.vision.depth=2",
                                     "model.text.text_layers=2", "model.text.fusion_layers=2",
                                     "model.text.vocab_size=200"]).model
    return ALBEF(cfg).eval()


def text_batch():
    ids = torch.tensor([[2, 11, 12, 13, 3, 0, 0], [2, 21, 22, 23, 24, 25, 3]])
    return ids, (ids != 0).long()


def test_heatmaps_on_the_patch_grid_non_negative_and_zero_at_padding(albef):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=g)
    ids, mask = text_batch()
    with torch.no_grad():  # works inside no_grad: gradcam turns gradients on for the fusion encoder only
        cam = gradcam(albef, images, ids, mask)
    assert cam.layer == default_layer(2) == 0
    assert cam.token_maps.shape == (2, 7, 4, 4) and cam.sentence_map.shape == (2, 4, 4)
    assert (cam.token_maps >= 0).all() and (cam.sentence_map >= 0).all()
    assert cam.sentence_map.sum() > 0
    assert (cam.token_maps[0, 5:] == 0).all()  # padding
    assert cam.itm_logits.shape == (2, 2)
    assert all(p.grad is None for p in albef.parameters())
    assert albef.fusion_encoder.save_cross_attention is False  # flag restored, nothing kept
    assert albef.fusion_encoder.cross_attention_maps() == [None, None]
    other = gradcam(albef, images, ids, mask, layer=1)
    assert other.layer == 1 and not torch.allclose(other.sentence_map, cam.sentence_map)
    with pytest.raises(VlpipeError, match="fusion layers 0..1"):
        gradcam(albef, images, ids, mask, layer=2)


def test_gradcam_equals_backward_on_the_saved_attention(albef):
    """Reference: the ITM logit backpropagated to the kept attention map, as ALBEF's hooks do."""
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=g)
    ids, mask = text_batch()
    cam = gradcam(albef, images, ids, mask, layer=1)
    attn = albef.fusion_encoder.layer[1].crossattention.self
    attn.save_attention = True
    try:
        image_tokens, _ = albef.encode_image(images)
        text_tokens, _ = albef.encode_text(ids, mask)
        logits = albef.itm_head(albef.fuse(text_tokens, mask, image_tokens)[:, 0])
        probs = attn.attention_probs
        probs.retain_grad()
        logits[:, 1].sum().backward()
        a, gr = probs.detach()[..., 1:], probs.grad[..., 1:].clamp(min=0)
    finally:
        attn.save_attention = False
        attn.attention_probs = None
        albef.zero_grad(set_to_none=True)
    ref = ((a * gr).mean(1) * mask[:, :, None]).reshape(2, 7, 4, 4)
    assert torch.allclose(cam.token_maps, ref, atol=1e-6)
    assert torch.allclose(cam.sentence_map, ref.sum(1) / mask.sum(1)[:, None, None], atol=1e-6)
    assert torch.allclose(cam.itm_logits, logits.detach(), atol=1e-5)


def test_gradcam_maps_by_hand():
    attention = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0]).view(1, 1, 1, 5).repeat(1, 2, 2, 1)  # [1, 2 heads, 2, 1+4]
    grads = torch.tensor([9.0, 1.0, -1.0, 2.0, 3.0]).view(1, 1, 1, 5).repeat(1, 2, 2, 1)
    grads[0, 1] *= 3  # head 1 has three times the gradient
    tokens, sentence = gradcam_maps(attention, grads, torch.tensor([[1, 0]]), (2, 2))
    # patch values: attention 0.2 0.3 0.4 0.0 times clamp(grad) 1 0 2 3, mean of heads (x1, x3) = x2
    expect = torch.tensor([[0.4, 0.0], [1.6, 0.0]])
    assert torch.allclose(tokens[0, 0], expect) and (tokens[0, 1] == 0).all()
    assert torch.allclose(sentence[0], expect)
    with pytest.raises(VlpipeError, match="patch grid"):
        gradcam_maps(attention, grads, torch.tensor([[1, 1]]), (3, 3))


# --------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------


def hot_heatmap() -> torch.Tensor:
    heat = torch.full((4, 4), 0.05)
    heat[1, 2] = 1.0  # the hot patch: pixels x 32..48, y 16..32 of a 64 x 64 image
    return heat


def test_best_box_covers_the_hottest_region():
    boxes = [[0, 0, 16, 16], [32, 16, 16, 16], [0, 40, 24, 24], [40, 40, 20, 20]]
    i, box = best_box(hot_heatmap(), boxes, (64, 64))
    assert i == 1 and box == [32.0, 16.0, 16.0, 16.0]
    # a large box around the hot patch: wins on the plain sum, loses on the mean, ALBEF's 0.5 in between
    big, exact = [16, 0, 48, 48], [32, 16, 16, 16]
    assert best_box(hot_heatmap(), [exact, big], (64, 64), alpha=0.0)[0] == 1
    assert best_box(hot_heatmap(), [exact, big], (64, 64), alpha=1.0)[0] == 0


def test_box_scores_match_direct_slicing():
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(6, 6, generator=g)
    size = (50, 30)  # width, height: a non-square image
    boxes = [[0, 0, 50, 30], [3.7, 2.2, 10.5, 7.9], [45, 25, 20, 20], [-5, -5, 10, 10], [10, 10, 0, 5], [60, 0, 5, 5]]
    got = box_scores(heat, boxes, size, alpha=0.5)
    full = upsample(heat, size)
    assert full.shape == (30, 50)
    for k, (x, y, w, h) in enumerate(boxes):
        region = full[max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)]
        if w * h <= 0 or region.numel() == 0:
            assert got[k] == float("-inf"), k
        else:
            assert torch.isclose(got[k], region.sum() / (w * h) ** 0.5, rtol=1e-4), k
    assert box_scores(heat, [], size).numel() == 0
    with pytest.raises(VlpipeError):
        best_box(heat, [], size)


@pytest.mark.parametrize("a, b, iou", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 2, 2], [1, 0, 2, 2], 1 / 3),
    ([0, 0, 10, 10], [2, 2, 5, 5], 0.25),
    ([0, 0, 10, 10], [10, 0, 10, 10], 0.0),  # touching edges
    ([0, 0, 10, 10], [20, 20, 5, 5], 0.0),
    ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # no area
    ([5, 5, 10, 10], [0, 0, 10, 10], 25 / 175),
])
def test_box_iou(a, b, iou):
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)


# --------------------------------------------------------------------------------------------------
# Rendering and `vlpipe explain`
# --------------------------------------------------------------------------------------------------


def test_render_overlay_keeps_the_image_size_and_cold_pixels():
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    heat = np.zeros((4, 4), dtype=np.float32)
    assert np.array_equal(np.asarray(render_overlay(image, heat)), np.asarray(image))  # nothing hot
    heat[0, 0] = 1.0
    out = render_overlay(image, heat)
    assert out.size == (40, 30) and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    assert abs(arr[2, 2] - np.array([10, 200, 30])).sum() > 50  # hot corner recoloured
    assert abs(arr[28, 38] - np.array([10, 200, 30])).sum() < 10  # cold corner unchanged


def test_merge_word_pieces():
    tokens = ["[CLS]", "a", "play", "##ing", "dog", "[SEP]", "[PAD]"]
    assert merge_word_pieces(tokens) == [("a", [1]), ("playing", [2, 3]), ("dog", [4])]
    assert merge_word_pieces(tokens, [None, 0, 1, 1, 2, None, None]) == [("a", [1]), ("playing", [2, 3]), ("dog", [4])]


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    arr = np.zeros((30, 44, 3), dtype=np.uint8)
    arr[:, :22] = (200, 40, 40)
    arr[:, 22:] = (40, 40, 200)
    Image.fromarray(arr).save(path)
    return path


def test_explain_cli_writes_pngs_of_the_image_size(tiny_checkpoint, picture, tmp_path):
    root = tiny_checkpoint.parents[1]
    out = tmp_path / "why"
    r = runner.invoke(app, ["--root", str(root), "explain", "--checkpoint", "ck", "--image", str(picture),
                            "--text", "a dog on the beach", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "ITM match probability" in r.output and "sentence.png" in r.output
    meta = json.loads((out / "explanation.json").read_text())
    assert [w["word"] for w in meta["words"]] == ["a", "dog", "on", "the", "beach"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["sentence.png"] + [w["file"] for w in meta["words"]])
    for p in pngs:
        with Image.open(out / p) as img:
            assert img.size == (44, 30) and img.mode == "RGB"
    assert 0.0 <= meta["p_match"] <= 1.0 and meta["image_size"] == [44, 30]
    assert not any(p.name.startswith(".partial") for p in tmp_path.iterdir())

    r = runner.invoke(app, ["--root", str(root), "explain", "--checkpoint", "ck", "--image", str(picture),
                            "--text", "a dog", "--out", str(out), "--no-per-word", "--layer", "0"])
    assert r.exit_code == 2 and "already exists" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["--root", str(root), "explain", "--checkpoint", "ck", "--image", str(picture),
                            "--text", "a dog", "--out", str(out), "--no-per-word", "--layer", "0", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["explanation.json", "sentence.png"]


@pytest.mark.parametrize("args, message", [
    (["--image", "MISSING", "--text", "a dog"], "image not found"),
    (["--text", "   "], "--text is empty"),
    (["--text", "a dog", "--layer", "7"], "fusion layers 0..0"),
])
def test_explain_cli_errors_are_one_line(tiny_checkpoint, picture, tmp_path, args, message):
    root = tiny_checkpoint.parents[1]
    if "--image" not in args:
        args = ["--image", str(picture), *args]
    args = [str(tmp_path / "nothing.png") if a == "MISSING" else a for a in args]
    r = runner.invoke(app, ["--root", str(root), "explain", "--checkpoint", "ck", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.strip().splitlines() if line.strip()]) == 1
    assert not (tmp_path / "o").exists()
