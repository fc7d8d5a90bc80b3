"""`vlpipe pretrain`: ALBEF pre-training (ITC + ITM + MLM, momentum distillation) into a checkpoint."""

from __future__ import annotations

import glob
from pathlib import Path

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path, read_manifest, resolve
from vlpipe.config import apply_override, load_config
from vlpipe.errors import InputError
from vlpipe.train import distributed
from vlpipe.train.pretrain import PretrainJob, run_pretrain

from ._common import command_line, console, root_of, train_on_ranks, user_errors

app = typer.Typer(help="Pre-train an ALBEF model on caption datasets.")


def shard_files(spec: list[str], root: Path) -> tuple[list[Path], list]:
    """Parquet files from globs, folders or dataset artifact names; plus the artifacts they belong to."""
    files: list[Path] = []
    for s in spec:
        matched = sorted(glob.glob(s)) if any(ch in s for ch in "*?[") else []
        if matched:
            files += [Path(m) for m in matched if m.endswith(".parquet")]
            continue
        p = Path(s)
        if p.is_file() and p.suffix == ".parquet":
            files.append(p)
            continue
        art = resolve(s, "dataset", root)
        files += sorted(art.path.glob("part-*.parquet"))
    if not files:
        raise InputError(", ".join(spec), "no Parquet shards matched",
                         "pass a dataset artifact name or a glob like 'artifacts/datasets/NAME/*.parquet'")
    arts = {}
    for f in files:
        if (f.parent / "manifest.json").exists() and f.parent not in arts:
            from vlpipe.artifacts import Artifact

            arts[f.parent] = Artifact(f.parent, read_manifest(f.parent))
    return files, list(arts.values())


@app.callback(invoke_without_command=True)
def pretrain(
    ctx: typer.Context,
    shards: list[str] = typer.Option(..., "--shards", help="Dataset artifact name(s), folder(s) or Parquet glob(s), e.g. 'artifacts/datasets/NAME/*.parquet'."),
    out: str = typer.Option(..., "--out", help="Name of the checkpoint artifact to write."),
    config: str = typer.Option("albef-tiny", "--config", help="Preset (albef-tiny, albef-small, albef-base) or a YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set model.queue_size=4096 (repeatable)."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer artifact or local Hugging Face folder (default: the --init-text folder)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs to train (overrides train.epochs)."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps to train; wins over --epochs."),
    batch_size: int = typer.Option(None, "--batch-size", help="Batch size PER DEVICE (global = this x devices x grad-accum)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate."),
    warmup: int = typer.Option(None, "--warmup", help="Warm-up optimizer steps."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    precision: str = typer.Option(None, "--precision", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32."),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing", help="Recompute activations in backward (less memory)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the encoders (pays off on CUDA; on CPU it needs a C++ compiler and minutes to start)."),
    init_image: Path = typer.Option(None, "--init-image", help="Local ViT weights (timm names, .safetensors or .pth: DeiT, DINO)."),
    init_text: Path = typer.Option(None, "--init-text", help="Local Hugging Face BERT folder for the text and fusion layers."),
    split: list[str] = typer.Option(["train"], "--split", help="Dataset splits to train on (repeatable)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Save a resumable checkpoint every N steps (0: only at the end)."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes decoding images."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun each rank takes its LOCAL_RANK GPU)."),
    seed: int = typer.Option(None, "--seed", help="Seed for data order, augmentation and initialisation."),
    eval_split: str = typer.Option("test", "--eval-split", help="Split for the zero-shot ITC retrieval check at the end ('' to skip)."),
    eval_images: int = typer.Option(1000, "--eval-images", help="Images in the zero-shot check."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint artifact of that name."),
    init_only: bool = typer.Option(False, "--init-only", help="Write the initialised model without training (a random-init baseline to fine-tune against)."),
) -> None:
    """Pre-train ALBEF: ITC with a momentum queue, ITM with hard negatives, MLM, momentum distillation.

    Runs as one process, or under `torchrun --nproc_per_node N vlpipe pretrain ...` with DDP
    (ITC features gathered across ranks). Checkpoints are safetensors + config.json; --resume
    continues a killed run exactly where its last checkpoint left it.
    """
    root = root_of(ctx)
    env = distributed.init(device)
    with user_errors(resume_hint="rerun with --resume to continue from the last checkpoint"):
        cfg = load_config(config, set_)
        for key, value in (("train.epochs", epochs), ("train.steps", steps), ("train.batch_size", batch_size),
                           ("train.lr", lr), ("train.warmup_steps", warmup), ("train.grad_accum", grad_accum),
                           ("train.precision", precision), ("train.seed", seed)):
            if value is not None:
                cfg = apply_override(cfg, f"{key}={value}")
        if grad_checkpointing:
            cfg = apply_override(cfg, "model.grad_checkpointing=true")
        files, datasets = shard_files(shards, root)
        job = PretrainJob(
            shards=files, tokenizer=tokenizer, config=cfg, workers=workers, splits=tuple(split),
            checkpoint_every=checkpoint_every, init_image=init_image, init_text=init_text,
            compile=compile_, device=env.device, eval_split=eval_split or None, eval_images=eval_images,
            root=root, inputs={"datasets": [a.name for a in datasets], "tokenizer": tokenizer}, init_only=init_only,
        )
        inputs = list(datasets)
        if tokenizer and not Path(tokenizer).is_dir():
            inputs.append(resolve(tokenizer, "tokenizer", root))
        params = {"config": config, "set": set_, "shards": [str(f) for f in files], "tokenizer": tokenizer,
                  "epochs": epochs, "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup,
                  "grad_accum": grad_accum, "precision": precision, "seed": seed, "splits": split,
                  "init_image": str(init_image) if init_image else None,
                  "init_text": str(init_text) if init_text else None, "world_size": env.world,
                  "init_only": init_only}
        builder = ArtifactBuilder(
            artifact_path(root, "checkpoint", out), "checkpoint", params=params, inputs=inputs,
            command=command_line(), overwrite=overwrite, resume=resume, resumable=True,
        )
        art, stats = train_on_ranks(builder, env, resume, lambda progress: run_pretrain(job, builder, env, progress))
    if art is not None:
        _summary(art, stats)


def _summary(art, stats: dict) -> None:
    t = Table(title=f"checkpoint {art.name}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in stats.items():
        if k == "zero_shot":
            continue
        t.add_row(k, str(v))
    zs = stats.get("zero_shot") or {}
    if zs:
        t.add_row("zero-shot split", f"{zs['split']} ({zs['images']} images, {zs['texts']} texts)")
        for k in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean", "chance_r1"):
            t.add_row(f"zero-shot ITC {k}", f"{zs[k]:.2f}")
    console.print(t)
    console.print(f"-> {art.path}")
