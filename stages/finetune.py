"""`vlpipe finetune TASK`: fine-tune a pre-trained checkpoint on a downstream task into a checkpoint.

One subcommand per task of :data:`vlpipe.finetune.tasks.TASKS`, all with the same flags (a new
TaskSpec appears here by itself).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer
import typer.core
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path, resolve
from vlpipe.finetune.job import FinetuneJob
from vlpipe.finetune.run import prepare_finetune, run_finetune
from vlpipe.finetune.spec import TaskSpec
from vlpipe.finetune.tasks import TASKS
from vlpipe.train import distributed

from ._common import command_line, console, root_of, train_on_ranks, user_errors


class _TaskGroup(typer.core.TyperGroup):
    """Names the known tasks when TASK is not one of them."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            ctx.fail(f"unknown task {args[0]!r}: known tasks are {', '.join(self.commands)}")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_TaskGroup,
    help="Fine-tune a pre-trained (or imported) ALBEF checkpoint on a downstream task: "
    + ", ".join(TASKS) + ". `vlpipe finetune TASK --help` for a task's flags and defaults.",
    no_args_is_help=True,
)


def _finetune(ctx: typer.Context, task: str, *, checkpoint: str, data: str, out: str, steps, epochs, batch_size,
              lr, warmup, image_size, grad_accum, precision, seed, set_: list[str], tokenizer, split: list[str],
              eval_split: str, eval_max, checkpoint_every: int, workers: int, device: str, resume: bool,
              overwrite: bool, task_options: dict[str, Any] | None = None) -> None:
    root = root_of(ctx)
    env = distributed.init(device)
    art = None
    with user_errors(resume_hint="rerun with --resume to continue from the last checkpoint"):
        ck = resolve(checkpoint, "checkpoint", root)
        ds = resolve(data, "dataset", root)
        inputs = [ck, ds]
        if tokenizer and not Path(tokenizer).is_dir():
            inputs.append(resolve(tokenizer, "tokenizer", root))
        job = FinetuneJob(
            task=task, checkpoint=ck.path, data=ds.path, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
            warmup=warmup, image_size=image_size, grad_accum=grad_accum, precision=precision, seed=seed,
            overrides=list(set_), tokenizer=tokenizer, splits=tuple(split), workers=workers,
            checkpoint_every=checkpoint_every, device=env.device, eval_split=eval_split or None, eval_max=eval_max,
            root=root, task_options=dict(task_options or {}),
        )
        plan = prepare_finetune(job, env.world)  # bad input fails here, before any folder is made
        params = {"task": task, "checkpoint": ck.name, "checkpoint_id": ck.manifest.content_id, "data": ds.name,
                  "data_id": ds.manifest.content_id, "steps": steps, "epochs": epochs, "batch_size": batch_size,
                  "lr": lr, "warmup": warmup, "image_size": plan.cfg.model.vision.image_size,
                  "grad_accum": grad_accum, "precision": precision, "seed": seed, "set": list(set_),
                  "tokenizer": tokenizer, "splits": list(split), "world_size": env.world,
                  **{k: v for k, v in (task_options or {}).items() if v is not None}}
        builder = ArtifactBuilder(
            artifact_path(root, "checkpoint", out), "checkpoint", params=params, inputs=inputs,
            command=command_line(), overwrite=overwrite, resume=resume, resumable=True,
        )
        art, stats = train_on_ranks(builder, env, resume, lambda progress: run_finetune(job, builder, env, progress, plan))
    if art is not None:
        _summary(art, stats)


def _summary(art, stats: dict) -> None:
    t = Table(title=f"checkpoint {art.name} (fine-tuned: {stats['task']})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in stats.items():
        if k != "eval":
            t.add_row(k, str(v))
    for k, v in (stats.get("eval") or {}).items():
        t.add_row(f"eval {k}", f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)
    console.print(f"-> {art.path}", highlight=False)


def _command(name: str, spec: TaskSpec):
    r = spec.recipe
    data_kind = "a caption dataset" if spec.data_task is None else f"a {spec.data_task!r} task table (`vlpipe ingest`)"

    def command(
        ctx: typer.Context,
        checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint to start from: pre-trained or imported ALBEF (name or path)."),
        data: str = typer.Option(..., "--data", help=f"Dataset artifact: {data_kind}."),
        out: str = typer.Option(..., "--out", help="Name of the checkpoint artifact to write."),
        steps: int = typer.Option(None, "--steps", help="Optimizer steps to train; wins over --epochs."),
        epochs: int = typer.Option(None, "--epochs", help=f"Epochs to train (default {r.epochs})."),
        batch_size: int = typer.Option(None, "--batch-size", help=f"Batch size PER DEVICE (default {r.batch_size})."),
        lr: float = typer.Option(None, "--lr", help=f"Peak learning rate (default {r.lr_ratio:g} x the checkpoint's pre-training lr)."),
        warmup: int = typer.Option(None, "--warmup", help=f"Warm-up optimizer steps (default {r.warmup_steps})."),
        image_size: int = typer.Option(None, "--image-size", help="Fine-tuning resolution in px (default: the checkpoint's; grounding: 1.5x a pre-trained one's; position embeddings are interpolated; ALBEF: 384 from 256)."),
        grad_accum: int = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
        precision: str = typer.Option(None, "--precision", help="auto (bf16 on CUDA, fp32 on CPU), bf16 or fp32."),
        seed: int = typer.Option(None, "--seed", help="Seed for data order, augmentation and new heads (default: the checkpoint's)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set train.weight_decay=0.05 (repeatable)."),
        tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer artifact or HF folder (default: the checkpoint's own copy)."),
        split: list[str] = typer.Option(["train"], "--split", help="Dataset splits to train on (repeatable)."),
        eval_split: str = typer.Option("val", "--eval-split", help="Split evaluated at the end into eval.json ('' to skip)."),
        eval_max: int = typer.Option(1000, "--eval-max", help="At most this many images (retrieval) or examples in that check."),
        checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Save a resumable checkpoint every N steps (0: only at the end)."),
        workers: int = typer.Option(2, "--workers", help="DataLoader worker processes decoding images."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun each rank takes its LOCAL_RANK GPU)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint artifact of that name."),
    ) -> None:
        _finetune(ctx, name, checkpoint=checkpoint, data=data, out=out, steps=steps, epochs=epochs,
                  batch_size=batch_size, lr=lr, warmup=warmup, image_size=image_size, grad_accum=grad_accum,
                  precision=precision, seed=seed, set_=set_, tokenizer=tokenizer, split=split, eval_split=eval_split,
                  eval_max=eval_max, checkpoint_every=checkpoint_every, workers=workers, device=device,
                  resume=resume, overwrite=overwrite)

    doc = (
        f"{spec.summary}\n\n"
        f"Reads {data_kind}. Defaults ({r.source}): lr {r.lr_ratio:g} x the checkpoint's pre-training lr, "
        f"cosine to {r.min_lr_ratio:g} x lr, {r.epochs} epochs, batch {r.batch_size} per device, weight decay "
        f"{r.weight_decay:g}; the fusion layers at the checkpoint's train.finetune_fusion_lr_scale x lr "
        f"(albef-tiny 10, albef-base 1). Runs as one process or under torchrun; --resume continues a killed "
        f"run exactly."
    )
    if spec.task_config is not None:
        import dataclasses

        fields = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(spec.task_config))
        doc += f"\n\nTask settings (--set {name}.FIELD=VALUE, stored with the checkpoint): {fields}."
    if not spec.options:
        command.__doc__ = doc
        return command
    # the task's own flags (TaskSpec.options) after the shared ones
    hints = typing.get_type_hints(command)
    shared = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in inspect.signature(command).parameters.values()]
    extra = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[o.type],
                               default=typer.Option(o.default, o.flag, help=o.help, show_default=o.default is not None))
             for o in spec.options]

    def with_options(ctx: typer.Context, **kw: Any) -> None:
        opts = {o.name: kw.pop(o.name) for o in spec.options}
        _finetune(ctx, name, **kw, task_options=opts)

    params = [shared[0], *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in shared[1:]), *extra]
    with_options.__signature__ = inspect.Signature(params)
    with_options.__annotations__ = {p.name: p.annotation for p in params}
    with_options.__doc__ = doc
    return with_options


for _name, _spec in TASKS.items():
    app.command(_name)(_command(_name, _spec))
