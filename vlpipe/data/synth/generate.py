"""Generate a pictogram-world dataset: sample, caption and render every image, then write tasks.

Images are made in chunks by a process pool (or in this process with ``workers=1``); since image
``i`` depends only on (seed, i), the output is the same whatever the number of workers.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from vlpipe.errors import InputError
from vlpipe.progress import NullProgress, Progress

from .captions import caption_scene
from .render import render_scene
from .scene import Scene, rng_for, sample_scene
from .tasks import TASKS, write_json
from .vocab import BACKGROUNDS, CATEGORIES, COLORS, SHAPES

SPLITS = ("train", "val", "test")
DEFAULT_SPLITS = (0.8, 0.1, 0.1)
JPEG_QUALITY = 90
MIN_SIZE, MAX_SIZE = 32, 1024
SCENES_FILE = "scenes.json"
WORLD_VERSION = 1


def split_sizes(n_images: int, fractions: Sequence[float]) -> dict[str, int]:
    """Images per split: train and val rounded from their fractions, test gets the rest."""
    n_train = min(n_images, round(n_images * fractions[0]))
    n_val = min(n_images - n_train, round(n_images * fractions[1]))
    return {"train": n_train, "val": n_val, "test": n_images - n_train - n_val}


def split_of(index: int, sizes: dict[str, int]) -> str:
    """Images are assigned to splits in index order: train first, then val, then test."""
    if index < sizes["train"]:
        return "train"
    if index < sizes["train"] + sizes["val"]:
        return "val"
    return "test"


def check_params(n_images: int, size: int, splits: Sequence[float], tasks: Sequence[str],
                 workers: int | None) -> None:
    """Raise :class:`InputError` naming the flag for any bad parameter."""
    if n_images < 1:
        raise InputError("--images", f"must be at least 1 (got {n_images})")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError("--size", f"must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {size})")
    if len(splits) != 3 or any(not math.isfinite(f) or f < 0 for f in splits):
        raise InputError("--splits", f"needs three fractions >= 0 for train,val,test (got {list(splits)})")
    if abs(sum(splits) - 1.0) > 1e-6:
        raise InputError("--splits", f"fractions must sum to 1 (got {sum(splits):g})", "e.g. 0.8,0.1,0.1")
    if not tasks:
        raise InputError("--tasks", "no task named", f"known tasks: {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InputError("--tasks", f"unknown task {unknown[0]!r}", f"known tasks: {', '.join(TASKS)}")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be at least 1 or 'auto' (got {workers})")


def make_scene(seed: int, index: int, size: int, split: str) -> Scene:
    """Image ``index``'s scene with its captions (no pixels)."""
    return caption_scene(sample_scene(seed, index, size, split), seed)


def _make_chunk(out_dir: str, seed: int, size: int, items: list[tuple[int, str]]) -> list[Scene]:
    """Sample, caption, render and save one chunk of images (runs in a worker process)."""
    scenes = []
    for index, split in items:
        scene = make_scene(seed, index, size, split)
        render_scene(scene).save(Path(out_dir) / scene.file_name, "JPEG", quality=JPEG_QUALITY)
        scenes.append(scene)
    return scenes


def auto_workers(n_images: int) -> int:
    """Worker processes for ``n_images``: one per core, no more than one per 64 images."""
    return max(1, min(os.cpu_count() or 1, 8, n_images // 64))


def vocabulary() -> dict[str, Any]:
    """The world's vocabulary as stored in ``scenes.json``."""
    return {
        "categories": {c.name: {"nouns": [n for n, _ in c.nouns], "codepoint": f"U+{c.codepoint:04X}"}
                       for c in CATEGORIES},
        "shapes": list(SHAPES),
        "colors": {name: list(rgb) for name, rgb in COLORS.items()},
        "backgrounds": {b.name: list(b.phrases) for b in BACKGROUNDS},
    }


def generate(
    out_dir: Path | str,
    n_images: int,
    seed: int = 0,
    size: int = 128,
    splits: Sequence[float] = DEFAULT_SPLITS,
    tasks: Sequence[str] = ("captions",),
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write a pictogram-world dataset of ``n_images`` images into ``out_dir``; returns stats.

    ``workers=None`` picks :func:`auto_workers`; ``1`` renders in this process. Reports progress
    as task "render" (unit "images"). Stats: images, splits, captions, objects, categories
    (objects per category or shape), backgrounds, files, workers, seconds.
    """
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    check_params(n_images, size, splits, tasks, workers)
    out = Path(out_dir)
    sizes = split_sizes(n_images, splits)
    items = [(i, split_of(i, sizes)) for i in range(n_images)]
    for folder in {"train2014" if s == "train" else "val2014" for _, s in items}:
        (out / folder).mkdir(parents=True, exist_ok=True)
    n_workers = workers if workers is not None else auto_workers(n_images)
    chunk = max(1, min(64, math.ceil(n_images / (n_workers * 4))))
    chunks = [items[k: k + chunk] for k in range(0, n_images, chunk)]

    progress.start("render", n_images, unit="images")
    by_index: dict[int, Scene] = {}
    if n_workers == 1:
        for part in chunks:
            for s in _make_chunk(str(out), seed, size, part):
                by_index[s.index] = s
            progress.advance("render", len(part))
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            futures = [pool.submit(_make_chunk, str(out), seed, size, part) for part in chunks]
            try:
                for fut in as_completed(futures):
                    done = fut.result()
                    for s in done:
                        by_index[s.index] = s
                    progress.advance("render", len(done))
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    progress.finish("render")
    scenes = [by_index[i] for i in range(n_images)]

    write_json(out / SCENES_FILE, {
        "world": "vlpipe-synth",
        "version": WORLD_VERSION,
        "seed": seed,
        "image_size": size,
        "splits": sizes,
        "vocabulary": vocabulary(),
        "images": [s.to_dict() for s in scenes],
    })
    files = [SCENES_FILE]
    for name in TASKS:
        if name in tasks:
            files += TASKS[name](scenes, rng_for(seed, 0, f"task-{name}"), out)

    categories = Counter(o.category for s in scenes for o in s.objects)
    return {
        "images": n_images,
        "splits": sizes,
        "captions": sum(len(s.captions) for s in scenes),
        "objects": sum(categories.values()),
        "categories": dict(sorted(categories.items())),
        "backgrounds": dict(sorted(Counter(s.background for s in scenes).items())),
        "tasks": [t for t in TASKS if t in tasks],
        "files": files,
        "workers": n_workers,
        "seconds": round(time.perf_counter() - t0, 2),
    }
