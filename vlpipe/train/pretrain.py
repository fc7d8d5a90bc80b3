"""ALBEF pre-training as a library call: data stream + model + the shared loop + checkpoints.

The stage (``vlpipe pretrain``) parses flags into a :class:`PretrainJob`, opens an
:class:`~vlpipe.artifacts.ArtifactBuilder` and calls :func:`run_pretrain`. Everything here runs as
a single process or unchanged under torchrun (one process per device).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlpipe.artifacts import ArtifactBuilder
from vlpipe.config import Config, adopt_tokenizer, to_dict, validate
from vlpipe.data.loader import CaptionBatches, batch_loader, scan_blocks, steps_per_epoch
from vlpipe.data.tokenizer import load_tokenizer, tokenizer_folder
from vlpipe.errors import InputError, VlpipeError
from vlpipe.metrics.retrieval import recall_at_k
from vlpipe.models.albef import ALBEF, load_text_weights, text_config_from_hf
from vlpipe.progress import NullProgress, Progress
from vlpipe.retrieval.embed import embed_images, embed_texts, load_eval_set
from vlpipe.train import distributed
from vlpipe.train.checkpoint import (
    CONFIG,
    TOKENIZER_DIR,
    RunningCheckpoints,
    copy_tokenizer,
    load_train_state,
    load_weights,
    save_train_state,
    save_weights,
    write_config,
)
from vlpipe.train.loop import LoopSettings, train_loop
from vlpipe.train.report import CURVES, plot_losses, write_metrics



@dataclass
class PretrainJob:
    shards: list[Path]
    tokenizer: str | None  # artifact name/path or HF folder; None = the --init-text folder
    config: Config
    workers: int = 2
    splits: tuple[str, ...] = ("train",)
    checkpoint_every: int = 0  # optimizer steps; 0 = only at the end
    init_image: Path | None = None
    init_text: Path | None = None
    compile: bool = False
    device: str = "auto"
    eval_split: str | None = "test"
    eval_images: int = 1000
    root: Path | None = None
    inputs: dict[str, Any] = field(default_factory=dict)  # lineage notes for config.json
    # write the initialised model (after --init-image / --init-text) without training: the "random
    # init" start that fine-tuning comparisons need, with the same config (and train.lr) as a real run
    init_only: bool = False


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a torch pickle loaded with ``weights_only`` (no code can run).

    DeiT/DINO files nest the weights under ``model`` / ``state_dict``: that is unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "weight file not found", "pass a local .safetensors/.pth file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        raise InputError(path, f"cannot be read as weights only ({type(e).__name__}: {str(e)[:120]})",
                         "convert it to safetensors, or re-save only its state dict") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise InputError(path, "does not hold a state dict of tensors", "pass a ViT state dict file")
    return obj


def resolve_config(job: PretrainJob, tokenizer) -> Config:
    """Adopt the tokenizer's vocabulary (or the --init-text BERT's sizes) into the config."""
    cfg = dataclasses.replace(job.config)
    model = dataclasses.replace(cfg.model)
    if job.init_text is not None:
        text = text_config_from_hf(job.init_text, model.text.fusion_layers, max_len=model.text.max_len,
                                   pool=model.text.pool, init_std=model.text.init_std)
        if len(tokenizer) != text.vocab_size:
            raise VlpipeError(
                f"--tokenizer has {len(tokenizer)} tokens but {job.init_text} was trained with "
                f"{text.vocab_size}: use that folder's own tokenizer (omit --tokenizer)"
            )
        model.text = text
    else:
        model.text = adopt_tokenizer(model.text, tokenizer)
    cfg.model = model
    return validate(cfg)


def build(job: PretrainJob, cfg: Config, notes: list[str]) -> ALBEF:
    model = ALBEF(cfg.model)
    if job.init_text is not None:
        r = load_text_weights(model, job.init_text)
        notes.append(f"--init-text {job.init_text}: {len(r.missing)} missing (fresh), "
                     f"{len(r.unexpected)} unused, {len(r.reshaped)} reshaped keys")
    if job.init_image is not None:
        r = model.load_vision_weights(read_weight_file(job.init_image))
        notes.append(f"--init-image {job.init_image}: {len(r.missing)} missing, {len(r.unexpected)} unused, "
                     f"reshaped {', '.join(r.reshaped) or 'none'}")
        if r.missing:
            notes.append("  missing: " + ", ".join(r.missing[:8]) + (" ..." if len(r.missing) > 8 else ""))
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def checkpoint_config(cfg: Config, job: PretrainJob, step: int) -> dict[str, Any]:
    return {
        "format": "vlpipe-albef",
        "task": "pretrain",
        "step": step,
        "image_size": cfg.model.vision.image_size,
        "tokenizer": TOKENIZER_DIR,
        "config": to_dict(cfg),
        "inputs": job.inputs,
    }


def run_pretrain(job: PretrainJob, builder: ArtifactBuilder, env: distributed.DistEnv,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Train, checkpoint into ``builder.dir``, and leave the final files there; returns stats."""
    progress = progress or NullProgress()
    notes: list[str] = []
    tok_ref = job.tokenizer or (str(job.init_text) if job.init_text else None)
    if tok_ref is None:
        raise VlpipeError("--tokenizer is required (a tokenizer artifact or a local Hugging Face folder)")
    tok_dir = tokenizer_folder(tok_ref, job.root)
    tokenizer = load_tokenizer(tok_dir)
    cfg = resolve_config(job, tokenizer)
    tr = cfg.train
    torch.manual_seed(tr.seed + env.rank)

    blocks = scan_blocks(job.shards, list(job.splits))
    n_samples = sum(b.rows for b in blocks)
    micro = steps_per_epoch(n_samples, tr.batch_size, env.world)
    if micro == 0:
        raise InputError(job.shards[0] if job.shards else "--shards",
                         f"{n_samples} rows in splits {list(job.splits)}: not one batch of {tr.batch_size}",
                         "lower --batch-size or check --split")
    total = tr.steps or max(1, (tr.epochs * micro) // tr.grad_accum)

    model = build(job, cfg, notes).to(env.device)
    resume = None
    state = builder.load_state() if builder.resumed else {}
    if state.get("latest"):
        ckpt = builder.dir / state["latest"]
        load_weights(model, ckpt)
        resume = load_train_state(ckpt)
        notes.append(f"resuming from {state['latest']} (step {resume['loop']['step']})")
    if env.distributed:
        model.set_gather(distributed.gather_with_grad, distributed.gather_no_grad)
    net: torch.nn.Module = model
    if env.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None,
            broadcast_buffers=False, find_unused_parameters=not all((cfg.model.itc, cfg.model.itm, cfg.model.mlm)),
        )
    if job.compile:
        model.compile_encoders()
    forward = net

    ramp = max(1, min(total, micro // tr.grad_accum))  # alpha warms up over the first epoch, as ALBEF

    def loss_fn(_net, batch, step):
        alpha = cfg.model.alpha * min(1.0, (step + 1) / ramp)
        return forward(batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_ids"],
                       alpha=alpha, update_momentum=batch.get("first_micro", True))

    def batches(epoch: int, start: int):
        ds = CaptionBatches(
            blocks, str(tok_dir), batch_size=tr.batch_size, image_size=cfg.model.vision.image_size,
            max_len=cfg.model.text.max_len, seed=tr.seed, epoch=epoch, start_batch=start,
            rank=env.rank, world=env.world, crop_min_scale=tr.crop_min_scale,
        )
        return batch_loader(ds, job.workers)

    running = RunningCheckpoints(builder.dir, lambda name: builder.save_state({"latest": name}))

    def on_checkpoint(train_state: dict, metrics: list[dict]) -> None:
        step = train_state["loop"]["step"]
        if env.is_main:
            def write(folder: Path) -> None:
                save_weights(model, folder)
                write_config(folder, checkpoint_config(cfg, job, step))
                save_train_state(folder, train_state)
            running.save(step, write)
            write_metrics(metrics, builder.dir)
        distributed.barrier()

    settings = LoopSettings.from_train_config(tr, total, job.checkpoint_every)
    if job.init_only:
        total = 0
        notes.append("--init-only: writing the initialised model, no training step")
    for n in notes:
        progress.note(n)
    metrics = [] if job.init_only else train_loop(
        net, loss_fn, batches, micro, settings, env, resume=resume, on_checkpoint=on_checkpoint,
        progress=progress, samples_per_micro=tr.batch_size)

    stats: dict[str, Any] = {"steps": total, "train_samples": n_samples, "steps_per_epoch": micro // tr.grad_accum,
                             "world_size": env.world}
    if env.distributed:
        stats["ranks_in_sync"] = ranks_in_sync(model, env)
    if metrics:
        first, last = metrics[0], metrics[-1]
        for k in (k for k in last if k.startswith("loss")):
            stats[f"{k}_first"] = round(first.get(k, float("nan")), 4)
            stats[f"{k}_last"] = round(last[k], 4)
        stats["samples_per_s"] = round(sum(r["samples_per_s"] for r in metrics[-20:]) / len(metrics[-20:]), 1)
    if env.is_main:
        finalize(builder.dir, model, cfg, job, total, metrics, tok_dir)
        if job.eval_split:
            stats["zero_shot"] = zero_shot_itc(model, job, cfg, tokenizer, env, progress)
            (builder.dir / "zero_shot.json").write_text(json.dumps(stats["zero_shot"], indent=2) + "\n")
    distributed.barrier()
    return stats


@torch.no_grad()
def ranks_in_sync(model: torch.nn.Module, env: distributed.DistEnv) -> bool:
    """Every rank holds the same weights and queues (DDP and the gathered enqueue keep them so)."""
    total = torch.zeros(1, dtype=torch.float64, device=env.device)
    for t in list(model.parameters()) + list(model.buffers()):
        total += t.double().sum()
    all_totals = distributed.gather_no_grad(total)
    return bool((all_totals - all_totals[0]).abs().max() <= 1e-9 * max(1.0, float(all_totals[0].abs())))


def finalize(folder: Path, model: ALBEF, cfg: Config, job: PretrainJob, step: int,
             metrics: list[dict], tok_dir: Path) -> None:
    """Final weights, config, tokenizer copy, metrics and curves at the artifact's top level."""
    save_weights(model, folder)
    write_config(folder, checkpoint_config(cfg, job, step))
    copy_tokenizer(tok_dir, folder)
    write_metrics(metrics, folder)
    plot_losses(metrics, folder / CURVES, title=f"ALBEF pre-training ({step} steps)")
    RunningCheckpoints(folder, lambda _: None).remove_all()


@torch.no_grad()
def zero_shot_itc(model: ALBEF, job: PretrainJob, cfg: Config, tokenizer, env, progress: Progress) -> dict:
    """ITC-only retrieval recall on ``job.eval_split`` (first ``eval_images`` images)."""
    try:
        es = load_eval_set(job.shards, job.eval_split, job.eval_images)
    except InputError:
        return {}
    model.eval()
    progress.start("zero-shot eval", total=len(es) + len(es.captions), unit="items")
    img = embed_images(model, es.image_bytes, es.image_paths, cfg.model.vision.image_size, 64, env.device,
                       workers=job.workers, on_batch=lambda n: progress.advance("zero-shot eval", n))
    txt = embed_texts(model, tokenizer, es.captions, 256, env.device, cfg.model.text.max_len,
                      on_batch=lambda n: progress.advance("zero-shot eval", n))
    progress.finish("zero-shot eval")
    out = recall_at_k(img @ txt.T, es.text_to_image)
    out = {k: round(v, 2) for k, v in out.items()}
    out.update({"split": job.eval_split, "images": len(es), "texts": len(es.captions),
                "chance_r1": round(100.0 / len(es), 3)})
    model.train()
    return out


def load_checkpoint(folder: Path | str, device: str = "cpu") -> tuple[ALBEF, Config, Any]:
    """A trained model, its config, and its tokenizer from a checkpoint folder."""
    from vlpipe.config import from_dict

    folder = Path(folder)
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("model_class", "albef") != "albef":  # a fine-tuned task model (e.g. VE), not an ALBEF
        task = meta.get("task")
        raise VlpipeError(f"{folder}: is a fine-tuned {task!r} model ({meta.get('image_size')} px), not an ALBEF "
                          f"checkpoint: evaluate it with `vlpipe evaluate {task}`, or pass a pre-trained, "
                          "imported or retrieval fine-tuned checkpoint")
    cfg = from_dict(meta["config"])
    model = ALBEF(cfg.model)
    load_weights(model, folder)
    tok_dir = folder / meta.get("tokenizer", TOKENIZER_DIR)
    if not tok_dir.is_dir():
        raise InputError(folder, "checkpoint has no tokenizer folder",
                         "re-import it with `vlpipe import albef ... --tokenizer T` (or copy a tokenizer into "
                         f"{tok_dir.name}/)")
    tokenizer = load_tokenizer(tok_dir)
    return model.to(device).eval(), cfg, tokenizer
