"""The shared training loop: schedule, accumulation, and exact resume (2N steps == N + resume N)."""

from __future__ import annotations

import math

import torch

from vlpipe.train.distributed import DistEnv
from vlpipe.train.loop import LoopSettings, cosine_with_warmup, make_optimizer, no_decay, train_loop


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.drop = torch.nn.Dropout(0.5)  # uses the global RNG: resume must restore it

    def forward(self, x):
        return self.lin(self.drop(x))


def _batches(epoch, start, n=6):
    g = torch.Generator().manual_seed(epoch)
    xs = torch.randn(n, 3, 4, generator=g)
    for i in range(start, n):
        yield {"x": xs[i], "y": xs[i].sum(-1, keepdim=True)}


def _loss(model, batch, step):
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return {"loss": loss, "loss_mse": loss}


def _run(steps, resume=None, every=0, accum=1):
    torch.manual_seed(0)
    model = Toy()
    saved = {}
    if resume is not None:
        model.load_state_dict(resume["model"])

    def on_ckpt(state, metrics):
        step = state["loop"]["step"]
        saved[step] = {**state, "model": {k: v.clone() for k, v in model.state_dict().items()}}

    s = LoopSettings(total_steps=steps, lr=0.05, warmup_steps=2, checkpoint_every=every, grad_accum=accum)
    metrics = train_loop(model, _loss, _batches, 6, s, DistEnv(), resume=resume, on_checkpoint=on_ckpt)
    return metrics, saved, model


def test_resume_continues_bit_for_bit():
    full, _, model_full = _run(10)
    first, saved, _ = _run(10, every=4)  # checkpoints at 4 and 8 (and the end)
    assert sorted(saved) == [4, 8, 10]
    assert [r["loss"] for r in first] == [r["loss"] for r in full]
    # resuming at 4 is mid-epoch; the rest crosses an epoch boundary (6 micro-batches per epoch)
    for at in (4, 8):
        resumed, _, model_resumed = _run(10, resume=saved[at])
        assert len(resumed) == 10
        assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
        for a, b in zip(model_full.state_dict().values(), model_resumed.state_dict().values()):
            assert torch.equal(a, b)


def test_accumulation_counts_optimizer_steps():
    metrics, _, _ = _run(4, accum=3)
    assert [r["step"] for r in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["epoch"] == 1  # 12 micro-batches = 2 epochs of 6


def test_schedule_warmup_then_cosine():
    assert cosine_with_warmup(0, 4, 20) == 0.25
    assert cosine_with_warmup(3, 4, 20) == 1.0
    assert math.isclose(cosine_with_warmup(12, 4, 20), 0.5)
    assert cosine_with_warmup(20, 4, 20) < 1e-9


def test_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    opt = make_optimizer(model, 1e-3, 0.1)
    decay, plain = opt.param_groups
    assert decay["weight_decay"] == 0.1 and len(decay["params"]) == 1  # only the Linear weight
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


def test_module_lr_scales_change_only_their_modules():
    from vlpipe.config import load_config
    from vlpipe.models.albef import ALBEF
    from vlpipe.train.loop import module_lr_scales

    cfg = load_config("albef-tiny", ["model.text.vocab_size=64", "train.fusion_lr_scale=4", "train.text_lr_scale=0.5"])
    model = ALBEF(cfg.model)
    opt = make_optimizer(model, 1e-3, 0.02, module_lr_scales(cfg.train.fusion_lr_scale, cfg.train.text_lr_scale))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(lr_of) == len(trainable)  # every trainable parameter once
    for name, p in trainable:
        fused, text = name.startswith(("fusion_encoder.", "itm_head.")), name.startswith("text_encoder.")
        assert math.isclose(lr_of[id(p)], 4e-3 if fused else 5e-4 if text else 1e-3), name
        assert decay_of[id(p)] == (0.0 if no_decay(name, p) else 0.02), name
    # the schedule scales each group's own lr, so the 4x ratio holds at every step
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, 2, 10))
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert len(lrs) == 3 and math.isclose(lrs[2], 4 * lrs[1]) and math.isclose(lrs[0], 0.5 * lrs[1])
    assert module_lr_scales() == ()  # the defaults add no groups


def test_vqa_answer_decoder_counts_as_a_fusion_layer():
    from vlpipe.config import load_config
    from vlpipe.models.vqa import VQAModel
    from vlpipe.train.loop import module_lr_scales

    cfg = load_config("albef-tiny", ["model.text.vocab_size=64"])
    model = VQAModel(cfg.model, distill=False)
    opt = make_optimizer(model, 1e-3, 0.02, module_lr_scales(10.0))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    scaled = {n.split(".")[0] for n, p in model.named_parameters() if math.isclose(lr_of[id(p)], 1e-2)}
    assert scaled == {"fusion_encoder", "answer_decoder"}


def test_lr_scales_must_be_positive():
    import pytest

    from vlpipe.config import load_config
    from vlpipe.errors import VlpipeError

    for bad in ("train.fusion_lr_scale=0", "train.text_lr_scale=-1", "train.finetune_fusion_lr_scale=0"):
        with pytest.raises(VlpipeError, match="lr_scale"):
            load_config("albef-tiny", [bad])
