"""NLVR2: both layouts copy the single-image fusion weights, identical images give the pre-trained
layers applied per image, forward shapes, saving with shared key/value projections, and
overfitting a fixed batch."""

from __future__ import annotations

import pytest
import torch

from vlpipe.config import ModelConfig, load_config
from vlpipe.errors import VlpipeError
from vlpipe.models import ALBEF
from vlpipe.models.nlvr2 import NLVR2Config, NLVR2Model, nlvr2_loss
from vlpipe.models.text import padding_mask
from vlpipe.train.checkpoint import load_weights, save_weights


def tiny(*overrides: str) -> ModelConfig:
    return load_config("albef-tiny", [
        "model.queue_size=64", "model.vision.image_size=32", "model.vision.depth=2", "model.text.text_layers=2",
        "model.text.fusion_layers=2", "model.text.vocab_size=200", *overrides]).model


@pytest.fixture(scope="module")
def albef():
    torch.manual_seed(0)
    return ALBEF(tiny()).eval()


def batch(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images1 = torch.randn(b, 3, 1, 1, generator=g) + 0.3 * torch.randn(b, 3, 32, 32, generator=g)
    images2 = torch.randn(b, 3, 1, 1, generator=g) + 0.3 * torch.randn(b, 3, 32, 32, generator=g)
    ids = torch.randint(10, 200, (b, 8), generator=g)
    ids[:, 0] = 2
    mask = torch.ones(b, 8, dtype=torch.long)
    mask[1::2, -3:] = 0
    ids[mask == 0] = 0
    return images1, images2, ids, mask


def _params(module) -> dict[str, torch.Tensor]:
    return dict(module.state_dict())


@pytest.mark.parametrize("share_kv", [True, False])
def test_blocks_layout_copies_each_fusion_layer_into_two_blocks(albef, share_kv):
    model, report = NLVR2Model.from_albef(albef, nlvr=NLVR2Config(layout="blocks", share_kv=share_kv))
    assert sorted(report.missing) == ["cls_head.0.bias", "cls_head.0.weight", "cls_head.2.bias", "cls_head.2.weight"]
    assert report.unexpected == [] and len(model.fusion_encoder.layer) == 4
    for i, src in enumerate(albef.fusion_encoder.layer):
        for j in (2 * i, 2 * i + 1):
            dst = _params(model.fusion_encoder.layer[j])
            for name, value in _params(src).items():
                assert torch.equal(dst[name], value), (j, name)
        a, b = model.fusion_encoder.layer[2 * i].crossattention.self, model.fusion_encoder.layer[2 * i + 1].crossattention.self
        assert (a.key.weight is b.key.weight and a.value.bias is b.value.bias) == share_kv
        assert a.query.weight is not b.query.weight
    own, ref = model.state_dict(), albef.state_dict()
    for name in ("visual_encoder.blocks.1.attn.qkv.weight", "text_encoder.layer.1.attention.self.key.weight",
                 "text_encoder.embeddings.word_embeddings.weight"):
        assert torch.equal(own[name], ref[name])


@pytest.mark.parametrize("share_kv", [True, False])
def test_cross_layout_copies_the_cross_attention_twice(albef, share_kv):
    model, report = NLVR2Model.from_albef(albef, nlvr=NLVR2Config(layout="cross", share_kv=share_kv))
    assert all(k.startswith("cls_head.") for k in report.missing) and report.unexpected == []
    assert len(model.fusion_encoder.layer) == 2
    for i, src in enumerate(albef.fusion_encoder.layer):
        dst = _params(model.fusion_encoder.layer[i])
        for name, value in _params(src).items():
            assert torch.equal(dst[name], value), name
            if name.startswith("crossattention."):
                assert torch.equal(dst["crossattention2." + name[len("crossattention."):]], value), name
        layer = model.fusion_encoder.layer[i]
        assert (layer.crossattention.self.key is layer.crossattention2.self.key) == share_kv


def test_identical_images_run_the_pretrained_layers_once_per_image(albef):
    """With both images equal and the copies equal to the pre-trained layer, the pair encoder is the
    pre-trained layers applied per image: a well-defined function of the single-image model."""
    img, _, ids, mask = batch(2)
    with torch.no_grad():
        image_tokens = albef.visual_encoder(img)
        text = albef.text_encoder(ids, mask)
        key_mask = padding_mask(mask)
        for layout in ("blocks", "cross"):
            model, _ = NLVR2Model.from_albef(albef, nlvr=NLVR2Config(layout=layout))
            model.eval()
            got = model.fusion_encoder(text, mask, image_tokens, image_tokens)
            h = text
            for layer in albef.fusion_encoder.layer:
                if layout == "blocks":
                    h = layer(layer(h, key_mask, image_tokens), key_mask, image_tokens)
                else:
                    h = layer.attention(h, h, key_mask)
                    h = layer.crossattention(layer.crossattention(h, image_tokens), image_tokens)
                    h = layer.output(layer.intermediate(h), h)
            assert torch.allclose(got, h, atol=1e-5), layout
            full = model.fused_cls(img, img, ids, mask)
            assert torch.allclose(full, h[:, 0], atol=1e-5)


@pytest.mark.parametrize("layout", ["blocks", "cross"])
def test_forward_shapes_gradients_and_image_order(albef, layout):
    model, _ = NLVR2Model.from_albef(albef, nlvr=NLVR2Config(layout=layout, share_kv=False))
    model.eval()
    images1, images2, ids, mask = batch(3)
    logits = model(images1, images2, ids, mask)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    swapped = model(images2, images1, ids, mask)
    assert not torch.allclose(logits, swapped)  # the images play different roles
    loss = nlvr2_loss(logits, torch.tensor([1, 0, 1]))
    loss.backward()
    second = "layer.1.crossattention" if layout == "blocks" else "layer.0.crossattention2"
    for name in (f"fusion_encoder.{second}.self.key.weight", "fusion_encoder.layer.0.crossattention.self.key.weight",
                 "cls_head.2.weight", "visual_encoder.patch_embed"):
        param = model.get_parameter(name) if name.endswith("weight") else next(model.get_submodule(name).parameters())
        grad = param.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_loss_with_soft_targets():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    hard = nlvr2_loss(logits, labels)
    assert torch.allclose(hard, torch.nn.functional.cross_entropy(logits, labels))
    soft = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    mixed = nlvr2_loss(logits, labels, soft, alpha=0.4)
    distill = -(torch.log_softmax(logits, -1) * soft).sum(-1).mean()
    assert torch.allclose(mixed, 0.6 * hard + 0.4 * distill)


def test_save_and_load_with_shared_key_value(tmp_path, albef):
    model, _ = NLVR2Model.from_albef(albef)
    model.eval()
    save_weights(model, tmp_path)
    fresh = NLVR2Model(albef.cfg).eval()
    load_weights(fresh, tmp_path, strict=True)
    images1, images2, ids, mask = batch(2)
    with torch.no_grad():
        assert torch.allclose(fresh(images1, images2, ids, mask), model(images1, images2, ids, mask))
    layer0, layer1 = fresh.fusion_encoder.layer[0], fresh.fusion_encoder.layer[1]
    assert layer0.crossattention.self.key.weight is layer1.crossattention.self.key.weight


def test_higher_resolution_interpolates_positions_and_other_sizes_are_refused(albef):
    import copy

    cfg = copy.deepcopy(albef.cfg)
    cfg.vision.image_size = 48  # fine-tuning above the pre-training resolution, as ALBEF (256 -> 384)
    model, report = NLVR2Model.from_albef(albef.state_dict(), cfg=cfg)
    assert report.reshaped == ["visual_encoder.pos_embed"]
    images = torch.randn(2, 3, 48, 48)
    _, _, ids, mask = batch(2)
    assert model(images, images, ids, mask).shape == (2, 2)
    cfg.text.intermediate = 256
    with pytest.raises(VlpipeError, match="intermediate.dense.weight has shape"):
        NLVR2Model.from_albef(albef.state_dict(), cfg=cfg)


def test_config_checks():
    assert NLVR2Config.from_dict(NLVR2Config(layout="cross").to_dict()).layout == "cross"
    with pytest.raises(VlpipeError, match="layout"):
        NLVR2Config.from_dict({"layout": "sideways"})
    with pytest.raises(VlpipeError, match="unknown NLVR2"):
        NLVR2Config.from_dict({"layers": 3})


def test_overfitting_a_fixed_batch_halves_the_loss():
    torch.manual_seed(2)
    model, _ = NLVR2Model.from_albef(ALBEF(tiny()))
    images1, images2, ids, mask = batch(4, seed=7)
    labels = torch.tensor([1, 0, 1, 0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(25):
        loss = nlvr2_loss(model(images1, images2, ids, mask), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
