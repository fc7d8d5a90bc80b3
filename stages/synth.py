"""`vlpipe synth`: generate the synthetic pictogram world as a raw artifact (COCO layout)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.data.synth.generate import check_params, generate
from vlpipe.data.synth.tasks import TASKS
from vlpipe.errors import InputError

from ._common import RichProgress, command_line, console, root_of, user_errors

app = typer.Typer(
    help="Generate the synthetic pictogram world (images + captions with ground truth).",
    no_args_is_help=False,
)

DEFAULT_NAME = "synth-coco"


def parse_splits(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); one-line error otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InputError("--splits", f"not three numbers: {text!r}", "e.g. 0.8,0.1,0.1") from None
    if len(values) != 3:
        raise InputError("--splits", f"needs three fractions train,val,test (got {len(values)})",
                         "e.g. 0.8,0.1,0.1")
    return values  # type: ignore[return-value]


def parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise InputError("--tasks", "no task named", f"known tasks: {', '.join(TASKS)}")
    for t in tasks:
        if t not in TASKS:
            raise InputError("--tasks", f"unknown task {t!r}", f"known tasks: {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def parse_workers(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise InputError("--workers", f"not a number or 'auto': {text!r}") from None
    if n < 1:
        raise InputError("--workers", f"must be at least 1 or 'auto' (got {n})")
    return n


@app.callback(invoke_without_command=True)
def synth(
    ctx: typer.Context,
    out: Path = typer.Option(
        None, "--out",
        help="Output folder (a raw artifact). Default: <root>/raw/synth-coco.",
        show_default=False,
    ),
    images: int = typer.Option(..., "--images", help="Number of images to generate (5 captions each)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    size: int = typer.Option(128, "--size", help="Image width and height in pixels (32-1024)."),
    splits: str = typer.Option(
        "0.8,0.1,0.1", "--splits",
        help="Train,val,test fractions summing to 1; images are split in id order.",
    ),
    tasks: str = typer.Option(
        "captions", "--tasks",
        help=f"Comma-separated tasks to write files for (known: {', '.join(TASKS)}).",
    ),
    workers: str = typer.Option(
        "auto", "--workers",
        help="Worker processes rendering images: a number, or 'auto' (one per core, fewer for small runs). "
        "The output does not depend on it.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Generate N procedurally drawn images (OpenMoji pictograms and coloured shapes on beach,
    grass, snow, road, water or plain backgrounds) with 5 true captions each and full ground truth.

    Writes COCO 2014 image folders and caption annotations, the Karpathy split file
    dataset_coco.json, ALBEF's coco_train/val/test.json and scenes.json (objects, boxes,
    relations) into a raw artifact with a manifest. --tasks vqa,snli_ve,nlvr2,refcoco adds VQA v2,
    SNLI-VE, NLVR2 and RefCOCO+ files in their upstream formats (docs/synthetic-world.md).
    """
    if ctx.invoked_subcommand is not None:  # pragma: no cover - no subcommands
        return
    root = root_of(ctx)
    with user_errors():
        fractions = parse_splits(splits)
        task_list = parse_tasks(tasks)
        n_workers = parse_workers(workers)
        check_params(images, size, fractions, task_list, n_workers)
        final = Path(out) if out is not None else artifact_path(root, "raw", DEFAULT_NAME)
        params = {
            "images": images,
            "seed": seed,
            "size": size,
            "splits": list(fractions),
            "tasks": task_list,
        }
        t0 = time.perf_counter()
        with ArtifactBuilder(final, "raw", params=params, command=command_line(),
                             overwrite=overwrite) as builder:
            with RichProgress() as progress:
                stats = generate(builder.dir, images, seed=seed, size=size, splits=fractions,
                                 tasks=task_list, workers=n_workers, progress=progress)
            stats["seconds"] = round(time.perf_counter() - t0, 2)
            art = builder.publish(stats)
    per_split = ", ".join(f"{k} {v}" for k, v in stats["splits"].items())
    console.print(
        f"synth [bold]{art.name}[/]: {stats['images']} images ({per_split}), "
        f"{stats['captions']} captions, {stats['objects']} objects in {stats['seconds']:.1f} s "
        f"-> {art.path}",
        highlight=False,
    )

