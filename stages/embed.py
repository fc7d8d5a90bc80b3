"""`vlpipe embed`: ITC-space embeddings of a dataset's images and captions, as Parquet shards."""

from __future__ import annotations

import time
from enum import Enum

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path, resolve
from vlpipe.data.shards import list_shards
from vlpipe.errors import VlpipeError
from vlpipe.progress import NullProgress
from vlpipe.retrieval import embed as lib
from vlpipe.train import distributed

from ._common import RichProgress, command_line, console, root_of, user_errors

app = typer.Typer(help="Embed a dataset's images and captions with a checkpoint (ITC space).")


class Modality(str, Enum):
    image = "image"
    text = "text"
    both = "both"


@app.callback(invoke_without_command=True)
def embed(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint artifact (name or path)."),
    data: str = typer.Option(..., "--data", help="Dataset artifact (name or path)."),
    out: str = typer.Option(..., "--out", help="Name of the embeddings artifact to write."),
    modality: Modality = typer.Option(Modality.both, "--modality", help="What to embed: unique images, every caption, or both."),
    split: list[str] = typer.Option(["test"], "--split", help="Dataset split(s) to embed (repeatable); 'all' for every split."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per batch (captions: 4x this)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (under torchrun each rank takes its LOCAL_RANK GPU)."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes decoding images."),
    shard_rows: int = typer.Option(50_000, "--shard-rows", help="Items per output shard (also the unit of work and of --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run: keep its finished shards."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing embeddings artifact of that name."),
) -> None:
    """L2-normalised ITC embeddings of unique images (one row per image_id) and every caption.

    Writes `image-NNNNN.parquet` / `text-NNNNN.parquet` (float16 vectors) into an `embeddings`
    artifact. The dataset is processed --shard-rows items at a time, one output shard per chunk, so
    image bytes are never all in memory; --resume skips the shards an interrupted run finished.
    Under `torchrun --nproc_per_node N vlpipe embed ...` each rank embeds every N-th chunk and
    rank 0 publishes.
    """
    root = root_of(ctx)
    with user_errors(resume_hint="rerun with --resume to keep the finished shards"):
        if shard_rows < 1 or batch_size < 1 or workers < 0:
            raise VlpipeError("--shard-rows and --batch-size must be >= 1 and --workers >= 0")
        env = distributed.init(device)
        try:
            art = _run(root, env, checkpoint, data, out, modality, split, batch_size, workers, shard_rows,
                       resume, overwrite)
        finally:
            distributed.shutdown()
    if art is not None:
        _summary(art)


def _run(root, env, checkpoint, data, out, modality, split, batch_size, workers, shard_rows, resume, overwrite):
    from vlpipe.train.pretrain import load_checkpoint

    t0 = time.perf_counter()
    ck = resolve(checkpoint, "checkpoint", root)
    dset = resolve(data, "dataset", root)
    splits = None if "all" in split else list(dict.fromkeys(split))
    plan = lib.plan_embeddings(list_shards(dset.path), splits)
    modalities = ("image", "text") if modality == Modality.both else (modality.value,)
    model, cfg, tokenizer = load_checkpoint(ck.path, env.device)
    settings = lib.EmbedSettings(
        modalities=modalities, shard_rows=shard_rows, batch_size=batch_size, workers=workers,
        device=env.device, image_size=cfg.model.vision.image_size, max_len=cfg.model.text.max_len,
    )
    precision = "bf16" if env.device.startswith("cuda") else "fp32"
    params = {
        "checkpoint": ck.name, "checkpoint_content_id": ck.manifest.content_id,
        "dataset": dset.name, "dataset_content_id": dset.manifest.content_id,
        "modality": modality.value, "splits": splits or "all", "shard_rows": shard_rows,
        "batch_size": batch_size, "image_size": settings.image_size, "max_len": settings.max_len,
        "dim": cfg.model.embed_dim, "precision": precision,
    }
    builder = ArtifactBuilder(
        artifact_path(root, "embeddings", out), "embeddings", params=params, inputs=[ck, dset],
        command=command_line(), overwrite=overwrite, resume=resume, resumable=True,
    )
    if env.is_main:
        builder.__enter__()
    distributed.barrier()  # the other ranks write into the staging folder rank 0 prepared
    chunks = [c for m in modalities for c in plan.chunks(m, shard_rows)]

    def on_shard(_chunk) -> None:
        if env.is_main:  # every finished shard on disk (other ranks' too), for `--resume`
            builder.save_state({"done": sorted(c.name for c in chunks if (builder.dir / c.name).exists())})

    try:
        reporter = RichProgress() if env.is_main else None
        with reporter or _NullCtx():
            run = lib.embed_dataset(model, tokenizer, plan, builder.dir, settings, rank=env.rank,
                                    world=env.world, on_shard=on_shard, progress=reporter or NullProgress())
        distributed.barrier()
        embedded = sum(run["embedded"].values())
        if env.distributed:  # every rank takes part, before rank 0 may still fail below
            embedded = round(distributed.all_reduce_mean(embedded, env.device) * env.world)
        art = None
        if env.is_main:
            missing = [c.name for c in chunks if not (builder.dir / c.name).exists()]
            if missing:
                raise VlpipeError(f"{builder.dir}: shards {', '.join(missing[:5])} were not written "
                                  "(a rank failed?); rerun with --resume")
            for stray in builder.dir.glob(".*.tmp"):  # a shard write cut short by an earlier crash
                stray.unlink(missing_ok=True)
            seconds = time.perf_counter() - t0
            stats = {
                "checkpoint": ck.name, "checkpoint_content_id": ck.manifest.content_id, "dataset": dset.name,
                "dim": cfg.model.embed_dim, "splits": splits or "all", "image_size": settings.image_size,
                "images": plan.rows("image") if "image" in modalities else 0,
                "texts": plan.rows("text") if "text" in modalities else 0,
                "shards": {m: len(plan.chunks(m, shard_rows)) for m in modalities},
                "resumed_shards": run["skipped_shards"], "precision": precision, "world_size": env.world,
                "seconds": round(seconds, 2), "embed_seconds": round(run["seconds"], 2),
                "items_embedded": embedded, "items_per_s": round(embedded / max(1e-9, run["seconds"]), 1),
            }
            art = builder.publish(stats)
        return art
    except BaseException as e:
        if env.is_main:
            builder.__exit__(type(e), e, e.__traceback__)
        raise


class _NullCtx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _summary(art) -> None:
    s = art.manifest.stats
    t = Table(title=f"embeddings {art.name}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("checkpoint", "dataset", "splits", "dim", "images", "texts", "shards", "image_size", "precision",
              "resumed_shards", "seconds", "items_per_s"):
        v = s.get(k)
        if isinstance(v, list):
            v = ", ".join(v)
        elif isinstance(v, dict):
            v = ", ".join(f"{m} {n}" for m, n in v.items())
        t.add_row(k, str(v))
    console.print(t)
    console.print(f"-> {art.path}")
