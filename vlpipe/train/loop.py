"""The one training loop shared by pretrain and every finetune.

It owns what every task needs the same way: AdamW with weight-decay groups, cosine schedule with
warm-up, gradient accumulation (without DDP syncs on inner micro-steps), clipping, bf16 autocast on
CUDA (fp32 on CPU), periodic checkpoints and exact resume. What a task computes is a ``loss_fn``
returning a dict of scalar tensors with the total under ``"loss"``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from vlpipe.progress import NullProgress, Progress
from vlpipe.train import distributed
from vlpipe.train.checkpoint import rng_state, set_rng_state

LossFn = Callable[[torch.nn.Module, dict, int], dict[str, torch.Tensor]]


@dataclass
class LoopSettings:
    total_steps: int  # optimizer steps
    lr: float = 1e-4
    weight_decay: float = 0.02
    warmup_steps: int = 0
    grad_accum: int = 1
    clip_grad: float = 5.0
    precision: str = "auto"  # auto | bf16 | fp32
    checkpoint_every: int = 0  # optimizer steps; 0 = only at the end
    min_lr_ratio: float = 0.0
    # lr multipliers by module name: a parameter any of whose dotted name parts is a key gets lr x value
    lr_scales: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_train_config(cls, tr: Any, total_steps: int, checkpoint_every: int = 0) -> LoopSettings:
        """Settings from a :class:`vlpipe.config.TrainConfig` (pretrain and every finetune)."""
        return cls(
            total_steps=total_steps, lr=tr.lr, weight_decay=tr.weight_decay, warmup_steps=tr.warmup_steps,
            grad_accum=tr.grad_accum, clip_grad=tr.clip_grad, precision=tr.precision,
            checkpoint_every=checkpoint_every, min_lr_ratio=tr.min_lr / tr.lr if tr.lr else 0.0,
            lr_scales=module_lr_scales(tr.fusion_lr_scale, tr.text_lr_scale),
        )


#: Modules whose lr train.fusion_lr_scale / train.text_lr_scale multiply (momentum copies take no
#: gradient). The text tower's word embeddings are tied to the MLM decoder: they follow text_lr_scale.
#: VQA's answer decoder is initialised from the fusion layers and counts as one of them.
FUSION_MODULES = ("fusion_encoder", "itm_head", "answer_decoder")
TEXT_MODULES = ("text_encoder",)


def module_lr_scales(fusion: float = 1.0, text: float = 1.0) -> tuple[tuple[str, float], ...]:
    """``LoopSettings.lr_scales`` for the given multipliers (empty when both are 1)."""
    return tuple((name, scale) for modules, scale in ((FUSION_MODULES, fusion), (TEXT_MODULES, text))
                 if scale != 1.0 for name in modules)


def no_decay(name: str, p: torch.nn.Parameter) -> bool:
    """Biases, norms, embeddings-like vectors and the temperature take no weight decay."""
    return p.ndim < 2 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name


def lr_scale_of(name: str, lr_scales: tuple[tuple[str, float], ...]) -> float:
    parts = set(name.split("."))
    return next((scale for module, scale in lr_scales if module in parts), 1.0)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   lr_scales: tuple[tuple[str, float], ...] = ()) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight-decay and no-decay groups, each split further
    by lr multiplier (``lr_scales``); the schedule scales every group's own lr. The two unscaled
    groups always come first (even when empty), so ``param_groups[0]["lr"]`` is the base lr."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((not no_decay(name, p), lr_scale_of(name, lr_scales)), []).append(p)
    params = [p for ps in groups.values() for p in ps]
    fused = all(p.is_cuda for p in params) and bool(params)
    return torch.optim.AdamW(
        [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale}
         for (decay, scale), ps in groups.items() if ps or scale == 1.0],
        lr=lr, betas=(0.9, 0.999), fused=fused or None)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def resolve_precision(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    cuda = device.startswith("cuda")
    if precision == "auto":
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    from vlpipe.errors import VlpipeError

    raise VlpipeError(f"--precision {precision}: use auto, bf16 or fp32")


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro: int = 0  # micro-batches consumed in the current epoch


def train_loop(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batches: Callable[[int, int], Iterable[dict]],
    micro_per_epoch: int,
    settings: LoopSettings,
    env: distributed.DistEnv,
    *,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any], list[dict]], None] | None = None,
    progress: Progress | None = None,
    samples_per_micro: int = 1,
) -> list[dict]:
    """Run until ``settings.total_steps`` optimizer steps; returns the metrics rows.

    ``batches(epoch, start)`` yields the micro-batches of ``epoch`` from index ``start``.
    ``on_checkpoint(train_state, metrics)`` is called every ``checkpoint_every`` steps and at the
    end with a state that ``resume=`` accepts to continue the run exactly.
    """
    progress = progress or NullProgress()
    opt = make_optimizer(model, settings.lr, settings.weight_decay, settings.lr_scales)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_with_warmup(s, settings.warmup_steps, settings.total_steps, settings.min_lr_ratio)
    )
    state, metrics = LoopState(), []
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        state = LoopState(**resume["loop"])
        metrics = [dict(r) for r in resume.get("metrics", [])]
        set_rng_state(resume["rng"])
    amp_dtype = resolve_precision(settings.precision, env.device)
    device_type = "cuda" if env.device.startswith("cuda") else "cpu"
    accum = max(1, settings.grad_accum)

    def snapshot() -> dict[str, Any]:
        return {
            "optimizer": copy.deepcopy(opt.state_dict()),
            "scheduler": sched.state_dict(),
            "loop": vars(state).copy(),
            "rng": rng_state(),
            "metrics": [dict(r) for r in metrics],
        }

    progress.start("train", total=settings.total_steps, unit="steps")
    progress.advance("train", state.step)
    model.train()
    sums: dict[str, float] = {}
    micro_in_step = 0
    t_last = time.perf_counter()
    while state.step < settings.total_steps:
        for batch in batches(state.epoch, state.micro):
            batch = to_device(batch, env.device)
            batch["first_micro"] = micro_in_step == 0  # e.g. momentum EMA once per optimizer step
            sync = micro_in_step == accum - 1
            ctx = model.no_sync() if (env.distributed and not sync and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    losses = loss_fn(model, batch, state.step)
                (losses["loss"] / accum).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
            state.micro += 1
            micro_in_step += 1
            if micro_in_step < accum:
                continue
            micro_in_step = 0
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad) if settings.clip_grad > 0 else None
            opt.step()
            opt.zero_grad(set_to_none=True)
            lr = opt.param_groups[0]["lr"]
            sched.step()
            state.step += 1
            now = time.perf_counter()
            row = {"step": state.step, "epoch": state.epoch, "lr": lr}
            row.update({k: distributed.all_reduce_mean(v, env.device) for k, v in sorted(sums.items())})
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            row["samples_per_s"] = samples_per_micro * accum * env.world / max(1e-9, now - t_last)
            t_last, sums = now, {}
            metrics.append(row)
            progress.advance("train", 1, **{k: row[k] for k in row if k.startswith("loss")}, lr=lr,
                             samples_s=round(row["samples_per_s"], 1))
            if state.step >= settings.total_steps:
                break
            if settings.checkpoint_every and state.step % settings.checkpoint_every == 0 and on_checkpoint:
                on_checkpoint(snapshot(), metrics)
        else:
            state.epoch += 1
            state.micro = 0
            if micro_per_epoch == 0:
                break
            continue
        break
    progress.finish("train")
    if on_checkpoint:
        on_checkpoint(snapshot(), metrics)
    return metrics
