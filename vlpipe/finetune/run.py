"""Fine-tuning as a library call: the same machinery as pre-training, for any :class:`TaskSpec`.

The shared :func:`~vlpipe.train.loop.train_loop` (AdamW, cosine schedule, accumulation, exact
resume), :class:`~vlpipe.train.checkpoint.RunningCheckpoints` in the artifact's staging folder,
``metrics.parquet`` + ``loss_curves.png``, torchrun ranks and DDP. The task adds its model, batches,
loss and evaluation. The checkpoint's ``config.json`` records the task, the resolution, and the
lineage (the starting checkpoint's artifact id, task and resolution; the dataset's id).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlpipe.artifacts import ArtifactBuilder, read_manifest
from vlpipe.config import Config, apply_override, to_dict, validate
from vlpipe.data.loader import ShardBatches, batch_loader, scan_blocks, steps_per_epoch
from vlpipe.data.shards import list_shards
from vlpipe.data.task_tables import check_task
from vlpipe.errors import InputError, VlpipeError
from vlpipe.finetune.job import FinetuneJob
from vlpipe.finetune.spec import (
    CollateSettings,
    EvalRequest,
    Evaluation,
    LossContext,
    TaskInputs,
    TaskPrep,
    TaskSpec,
    make_task_config,
    summarize_keys,
    task_assignments,
    transfer_weights,
)
from vlpipe.finetune.tasks import TASKS, build_for, checkpoint_meta, describe, get_task, is_albef
from vlpipe.progress import NullProgress, Progress
from vlpipe.train import distributed
from vlpipe.train.checkpoint import (
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

EVAL_JSON = "eval.json"


def recipe_image_size(image_size: int, patch_size: int, scale: float) -> int:
    """``scale`` x ``image_size``, rounded to a whole number of patches (at least one)."""
    return max(1, round(image_size * scale / patch_size)) * patch_size


def finetune_config(base: Config, spec: TaskSpec, overrides: list[str], pretrained: bool = True) -> Config:
    """The pre-trained config with the task's recipe as ``train`` and its model tweaks, then
    ``overrides``. ``train.min_lr`` follows the recipe's ratio to the final lr unless overridden.
    Pre-training's lr multipliers are not inherited: the fusion layers' is the checkpoint's
    ``train.finetune_fusion_lr_scale`` (1 for albef-base, the paper's uniform lr), the text
    tower's 1. From a ``pretrained`` (or imported) start the resolution is the recipe's
    ``image_scale`` x the checkpoint's; a fine-tuned start keeps its own."""
    cfg = copy.deepcopy(base)
    r, tr = spec.recipe, cfg.train
    if pretrained and r.image_scale != 1.0:
        v = cfg.model.vision
        cfg.model.vision = dataclasses.replace(v, image_size=recipe_image_size(v.image_size, v.patch_size,
                                                                               r.image_scale))
    tr.lr = base.train.lr * r.lr_ratio
    tr.fusion_lr_scale, tr.text_lr_scale = base.train.finetune_fusion_lr_scale, 1.0
    tr.epochs, tr.steps, tr.batch_size = r.epochs, 0, r.batch_size
    tr.warmup_steps, tr.weight_decay, tr.grad_accum = r.warmup_steps, r.weight_decay, 1
    cfg = spec.configure(cfg)
    for o in overrides:
        apply_override(cfg, o)
    if not any(o.split("=", 1)[0].strip() == "train.min_lr" for o in overrides):
        cfg.train.min_lr = cfg.train.lr * r.min_lr_ratio
    return validate(cfg)


def check_start(folder: Path, meta: dict[str, Any], spec: TaskSpec) -> None:
    """Fine-tune from an ALBEF (pre-trained, imported, or fine-tuned for an ALBEF-shaped task) or
    from a checkpoint of the same task (to continue it); anything else is a one-line error."""
    if is_albef(meta) or meta["task"] == spec.name:
        return
    raise VlpipeError(f"{folder}: is {describe(meta)}; fine-tune {spec.name!r} from a pre-trained or imported "
                      "ALBEF checkpoint (or one of the same task)")


def dataset_files(folder: Path, spec: TaskSpec) -> list[Path]:
    """The dataset's shards, after checking it holds the table the task reads."""
    from vlpipe.artifacts import Artifact

    check_task(Artifact(folder, read_manifest(folder)), spec.data_task)
    files = list_shards(folder)
    if not files:
        raise InputError(folder, "dataset has no part-*.parquet shards", "rebuild it with `vlpipe ingest`")
    return files


def artifact_ref(folder: Path) -> dict[str, Any]:
    """Name and content id of the artifact at ``folder`` ({"path"} for a bare folder)."""
    try:
        m = read_manifest(folder)
    except VlpipeError:
        return {"path": str(folder)}
    return {"name": m.name, "content_id": m.content_id}


def checkpoint_config(cfg: Config, spec: TaskSpec, job: FinetuneJob, step: int, start: dict[str, Any],
                      task_cfg: Any = None, info: dict[str, Any] | None = None) -> dict[str, Any]:
    ck, ds = artifact_ref(job.checkpoint), artifact_ref(job.data)
    out = {
        "format": "vlpipe-albef",
        "task": spec.name,
        "model_class": spec.model_class,
        "step": step,
        "image_size": cfg.model.vision.image_size,
        "tokenizer": TOKENIZER_DIR,
        "config": to_dict(cfg),
        "head": {**spec.checkpoint_info, **(info or {})},
        "lineage": {"checkpoint": {**ck, "task": start["task"], "image_size": start.get("image_size"),
                                   "step": start.get("step")},
                    "dataset": ds},
        "inputs": {"checkpoint": ck.get("name", ck.get("path")), "dataset": ds.get("name", ds.get("path")),
                   "tokenizer": job.tokenizer},
    }
    if task_cfg is not None:
        out["task_config"] = task_cfg.to_dict()
    return out


def write_assets(folder: Path, assets: dict[str, Any]) -> None:
    """A task's files (``TaskPrep.assets``) as JSON in a checkpoint folder."""
    for name, value in assets.items():
        (folder / name).write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass
class FinetunePlan:
    """Everything checked before any work: the task, the starting checkpoint, configs, data."""

    spec: TaskSpec
    start: dict[str, Any]  # the starting checkpoint's config.json
    base: Config  # its config
    cfg: Config  # the fine-tuning config
    files: list[Path]
    blocks: list  # the training rows (vlpipe.data.loader.Block)
    tokenizer_dir: Path
    notes: list[str]
    task_cfg: Any = None  # the task's settings (TaskSpec.task_config)
    prep: TaskPrep = field(default_factory=TaskPrep)  # what the task's prepare found (assets, notes)

    @property
    def train_samples(self) -> int:
        return sum(b.rows for b in self.blocks)


def prepare_finetune(job: FinetuneJob, world: int = 1) -> FinetunePlan:
    """Check the task, checkpoint, dataset, tokenizer and settings (for ``world`` ranks); one-line
    errors for bad input, before any folder is made."""
    from vlpipe.config import from_dict
    from vlpipe.data.tokenizer import tokenizer_folder

    spec = get_task(job.task)
    start = checkpoint_meta(job.checkpoint)
    check_start(job.checkpoint, start, spec)
    files = dataset_files(job.data, spec)
    base = from_dict(start["config"])
    config_sets, task_sets = task_assignments(spec, list(job.overrides))
    cfg = finetune_config(base, spec, job.flag_overrides() + config_sets, pretrained=start["task"] not in TASKS)
    # continuing a checkpoint of the same task keeps its settings (then --set <task>.x=... on top)
    task_cfg = make_task_config(spec, start.get("task_config") if start["task"] == spec.name else None, task_sets)
    tr = cfg.train
    if job.tokenizer:
        tok_dir = tokenizer_folder(job.tokenizer, job.root)
    elif start.get("tokenizer") and (job.checkpoint / start["tokenizer"]).is_dir():
        tok_dir = job.checkpoint / start["tokenizer"]
    else:
        raise InputError(job.checkpoint, "checkpoint has no tokenizer/ folder",
                         "pass --tokenizer (the tokenizer the checkpoint was trained with)")
    notes = [f"task {spec.name}: starting from {describe(start)}"]
    old, new = base.model.vision.image_size, cfg.model.vision.image_size
    if old != new:
        p = cfg.model.vision.patch_size
        notes.append(f"resolution {new} px, pre-trained at {old} px: position embeddings interpolated "
                     f"{old // p}x{old // p} -> {new // p}x{new // p} patches")
    notes.append(f"lr {tr.lr:g} (cosine to {tr.min_lr:g}), batch {tr.batch_size} per device, "
                 f"warm-up {tr.warmup_steps} steps; recipe: {spec.recipe.source}")
    if tr.lr < 1e-7 and tr.lr == base.train.lr * spec.recipe.lr_ratio:  # e.g. a "random init" written at lr ~0
        notes.append(f"warning: lr {tr.lr:g} is the recipe's ratio x the checkpoint's train.lr "
                     f"{base.train.lr:g}; pass --lr to fine-tune at a usable rate")
    if tr.fusion_lr_scale != 1.0:
        notes.append(f"fusion layers at {tr.fusion_lr_scale:g}x the lr ({tr.lr * tr.fusion_lr_scale:g}; "
                     "train.fusion_lr_scale, the checkpoint's train.finetune_fusion_lr_scale by default)")
    blocks = scan_blocks(files, list(job.splits))
    n_samples = sum(b.rows for b in blocks)
    if steps_per_epoch(n_samples, tr.batch_size, world) == 0:
        raise InputError(job.data, f"{n_samples} rows in splits {list(job.splits)}: not one batch of "
                         f"{tr.batch_size} on each of {world} rank(s)", "lower --batch-size or check --split")
    prep = TaskPrep()
    if spec.prepare is not None:
        prep = spec.prepare(TaskInputs(files, tuple(job.splits), dict(job.task_options), task_cfg, tok_dir, job.root))
        notes += prep.notes
    return FinetunePlan(spec, start, base, cfg, files, blocks, tok_dir, notes, task_cfg, prep)


def init_from_checkpoint(spec: TaskSpec, cfg: Config, folder: Path, start: dict[str, Any], base: Config,
                         task_cfg: Any = None):
    """The task model for ``cfg`` with the starting checkpoint's weights -> (model, LoadReport)."""
    source = build_for(start, base)
    load_weights(source, folder)
    if spec.from_pretrained is not None and is_albef(start):
        return spec.from_pretrained(source, cfg, task_cfg)
    model = spec.build(cfg, task_cfg)
    return model, transfer_weights(source, model, spec.fresh)


def run_finetune(job: FinetuneJob, builder: ArtifactBuilder, env: distributed.DistEnv,
                 progress: Progress | None = None, plan: FinetunePlan | None = None) -> dict[str, Any]:
    """Fine-tune, checkpoint into ``builder.dir``, leave the final files there; returns stats."""
    progress = progress or NullProgress()
    plan = plan or prepare_finetune(job, env.world)
    spec, start, base, cfg, files, tok_dir = plan.spec, plan.start, plan.base, plan.cfg, plan.files, plan.tokenizer_dir
    task_cfg, prep = plan.task_cfg, plan.prep
    blocks, n_samples = plan.blocks, plan.train_samples
    notes = list(plan.notes)
    tr = cfg.train
    old = base.model.vision.image_size

    torch.manual_seed(tr.seed + env.rank)
    micro = steps_per_epoch(n_samples, tr.batch_size, env.world)
    total = tr.steps or max(1, (tr.epochs * micro) // tr.grad_accum)

    state = builder.load_state() if builder.resumed else {}
    resume = None
    if state.get("latest"):
        model = spec.build(cfg, task_cfg)
        ckpt = builder.dir / state["latest"]
        load_weights(model, ckpt)
        resume = load_train_state(ckpt)
        notes.append(f"resuming from {state['latest']} (step {resume['loop']['step']})")
    else:
        model, report = init_from_checkpoint(spec, cfg, job.checkpoint, start, base, task_cfg)
        if spec.model_class != "albef" and hasattr(model, "sync_momentum"):
            # a task model's momentum (distillation) copies start equal to its loaded online weights;
            # ALBEF-shaped tasks (retrieval, grounding) keep the pre-trained momentum encoders
            model.sync_momentum()
        notes.append(f"weights: {len(report.missing)} fresh ({summarize_keys(report.missing)}), "
                     f"{len(report.unexpected)} unused ({summarize_keys(report.unexpected)}), "
                     f"reshaped {', '.join(report.reshaped) or 'none'}")
    model = model.to(env.device)
    if env.distributed and hasattr(model, "set_gather"):
        model.set_gather(distributed.gather_with_grad, distributed.gather_no_grad)
    net: torch.nn.Module = model
    if env.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.local_rank] if env.device.startswith("cuda") else None,
            broadcast_buffers=False, find_unused_parameters=spec.find_unused_parameters,
        )
    ctx = LossContext(cfg, micro // tr.grad_accum, total)

    def loss_fn(_net, batch, step):
        return spec.loss(net, batch, step, ctx)

    train_collate = spec.collate(CollateSettings(str(tok_dir), cfg.model.vision.image_size, cfg.model.text.max_len,
                                                 train=True, crop_min_scale=tr.crop_min_scale, task_config=task_cfg))

    def batches(epoch: int, first: int):
        ds = ShardBatches(blocks, train_collate, batch_size=tr.batch_size, seed=tr.seed, epoch=epoch,
                          start_batch=first, rank=env.rank, world=env.world)
        return batch_loader(ds, job.workers)

    running = RunningCheckpoints(builder.dir, lambda name: builder.save_state({"latest": name}))

    def on_checkpoint(train_state: dict, metrics: list[dict]) -> None:
        step = train_state["loop"]["step"]
        if env.is_main:
            def write(folder: Path) -> None:
                save_weights(model, folder)
                write_config(folder, checkpoint_config(cfg, spec, job, step, start, task_cfg, prep.info))
                write_assets(folder, prep.assets)
                save_train_state(folder, train_state)
            running.save(step, write)
            write_metrics(metrics, builder.dir)
        distributed.barrier()

    settings = LoopSettings.from_train_config(tr, total, job.checkpoint_every)
    for n in notes:
        progress.note(n)
    metrics = train_loop(net, loss_fn, batches, micro, settings, env, resume=resume,
                         on_checkpoint=on_checkpoint, progress=progress, samples_per_micro=tr.batch_size)

    stats: dict[str, Any] = {"task": spec.name, "steps": total, "train_samples": n_samples,
                             "steps_per_epoch": micro // tr.grad_accum, "world_size": env.world,
                             "image_size": cfg.model.vision.image_size, "pretrained_image_size": old}
    if env.distributed:
        from vlpipe.train.pretrain import ranks_in_sync

        stats["ranks_in_sync"] = ranks_in_sync(model, env)
    if metrics:
        first, last = metrics[0], metrics[-1]
        for k in (k for k in last if k.startswith(("loss", "acc"))):
            stats[f"{k}_first"] = round(first.get(k, float("nan")), 4)
            stats[f"{k}_last"] = round(last[k], 4)
        stats["samples_per_s"] = round(sum(r["samples_per_s"] for r in metrics[-20:]) / len(metrics[-20:]), 1)
    if env.is_main:
        finalize(builder.dir, model, cfg, spec, job, total, metrics, tok_dir, start, plan)
        if job.eval_split:
            ev = end_of_run_eval(model, cfg, spec, job, files, builder.dir / TOKENIZER_DIR, env, progress, plan)
            if ev is not None:
                (builder.dir / EVAL_JSON).write_text(json.dumps(ev.metrics, indent=2) + "\n", encoding="utf-8")
                stats["eval"] = {"split": job.eval_split, **ev.metrics.get("headline", {})}
    distributed.barrier()
    return stats


def finalize(folder: Path, model: torch.nn.Module, cfg: Config, spec: TaskSpec, job: FinetuneJob, step: int,
             metrics: list[dict], tok_dir: Path, start: dict[str, Any], plan: FinetunePlan | None = None) -> None:
    """Final weights, config, task files, tokenizer copy, metrics and curves at the artifact's top level."""
    task_cfg, prep = (plan.task_cfg, plan.prep) if plan is not None else (None, TaskPrep())
    save_weights(model, folder)
    write_config(folder, checkpoint_config(cfg, spec, job, step, start, task_cfg, prep.info))
    write_assets(folder, prep.assets)
    copy_tokenizer(tok_dir, folder)
    write_metrics(metrics, folder)
    plot_losses(metrics, folder / CURVES, title=f"fine-tuning {spec.name} ({step} steps)")
    RunningCheckpoints(folder, lambda _: None).remove_all()


def end_of_run_eval(model, cfg: Config, spec: TaskSpec, job: FinetuneJob, files: list[Path], tok_dir: Path,
                    env: distributed.DistEnv, progress: Progress, plan: FinetunePlan | None = None) -> Evaluation | None:
    """The task's evaluation on ``job.eval_split`` (None when the dataset lacks that split)."""
    if not scan_blocks(files, [job.eval_split]):
        progress.note(f"no {job.eval_split!r} split in the dataset: end-of-run evaluation skipped")
        return None
    req = EvalRequest(model=model, cfg=cfg, tokenizer_dir=tok_dir, files=files, split=job.eval_split,
                      batch_size=64, workers=job.workers, device=env.device, max_items=job.eval_max,
                      options=dict(spec.eval_options), task_config=plan.task_cfg if plan else None,
                      assets=dict(plan.prep.assets) if plan else {})
    ev = spec.evaluate(req, progress)
    model.train()
    return ev

