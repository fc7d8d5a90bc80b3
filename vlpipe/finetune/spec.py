"""What a fine-tuning task is (:class:`TaskSpec`) and the pieces every task shares.

A task says five things: which dataset it reads (``data_task``: a task table of
:mod:`vlpipe.data.task_tables`, or None for a caption dataset), how to build its model from a
config (weights then come from the pre-trained ALBEF by name, :func:`transfer_weights`), how rows
become batches (``collate``), what the loss is (``loss``, called by the shared
:func:`vlpipe.train.loop.train_loop`), and how to evaluate a split (``evaluate`` -> metrics, metric
rows and optional per-example predictions). :mod:`vlpipe.finetune.run` does the rest the same way
for every task. See docs/finetune.md for adding one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import nn

from vlpipe.config import Config
from vlpipe.data.loader import Collate
from vlpipe.errors import VlpipeError
from vlpipe.models.vision import LoadReport, interpolate_pos_embed
from vlpipe.progress import Progress


@dataclass(frozen=True)
class TrainRecipe:
    """A task's default training settings, applied before the user's flags.

    The learning rate is ``lr_ratio`` x the pre-trained checkpoint's ``train.lr``: the paper's
    fine-tuning / pre-training ratio, so an ``albef-base`` checkpoint (lr 1e-4) gets exactly the
    paper's value and a smaller recipe (``albef-tiny``, 3e-4) a proportionate one.
    """

    lr_ratio: float
    epochs: int
    batch_size: int = 32  # per device
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # end of the cosine decay, relative to lr
    weight_decay: float = 0.02
    source: str = ""  # where the numbers come from


@dataclass(frozen=True)
class CollateSettings:
    """What every task's batch builder needs to know."""

    tokenizer_dir: str
    image_size: int
    max_len: int
    train: bool  # augment (random resized crop + flip) or plain resize
    crop_min_scale: float = 0.5


@dataclass(frozen=True)
class LossContext:
    cfg: Config
    steps_per_epoch: int  # optimizer steps
    total_steps: int


@dataclass
class EvalRequest:
    """A split to evaluate a task model on."""

    model: nn.Module
    cfg: Config
    tokenizer_dir: Path
    files: list[Path]  # the dataset's shards
    split: str
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    max_items: int | None = None  # retrieval: images; classification: examples
    options: dict[str, Any] = field(default_factory=dict)  # task-specific (retrieval: k_test)


@dataclass
class Evaluation:
    """``metrics``: everything, JSON-able, with ``headline`` {name: value}; ``rows``: dicts of
    scoring, metric, value, headline (one per number, for ``metrics.parquet``); ``predictions``:
    one row per example, when the task has them."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    predictions: pa.Table | None = None


LossFn = Callable[[nn.Module, dict, int, LossContext], dict[str, torch.Tensor]]
EvalFn = Callable[[EvalRequest, Progress], Evaluation]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    summary: str  # one line, shown by `vlpipe finetune --help`
    data_task: str | None  # task table the dataset must hold (None: a caption dataset)
    model_class: str  # "albef": the checkpoint is an ALBEF (embed/retrieve/evaluate retrieval load it)
    build: Callable[[Config], nn.Module]  # an untrained task model for a config
    recipe: TrainRecipe
    collate: Callable[[CollateSettings], Collate]
    loss: LossFn
    evaluate: EvalFn
    configure: Callable[[Config], Config] = lambda cfg: cfg  # e.g. switch objectives off
    fresh: tuple[str, ...] = ()  # parameter-name prefixes a pre-trained ALBEF has no value for (new heads)
    # (pre-trained ALBEF, fine-tuning config) -> (task model, load report), for a task whose model
    # renames or replicates pre-trained tensors (e.g. NLVR2Model.from_albef); None = ``build`` then
    # :func:`transfer_weights` by name with ``fresh``.
    from_pretrained: Callable[[nn.Module, Config], tuple[nn.Module, LoadReport]] | None = None
    headline: str = ""  # the metric summaries show
    eval_options: dict[str, Any] = field(default_factory=dict)  # for the end-of-run check
    checkpoint_info: dict[str, Any] = field(default_factory=dict)  # stored in config.json (labels, ...)
    find_unused_parameters: bool = False  # DDP: does some trainable parameter get no gradient?


# --------------------------------------------------------------------------------------------------
# Pre-trained weights into a task model
# --------------------------------------------------------------------------------------------------


def _grid(n_patches: int) -> int:
    g = math.isqrt(n_patches)
    if g * g != n_patches:
        raise VlpipeError(f"position table of {n_patches} patches is not a square grid")
    return g


def transfer_weights(src: nn.Module, dst: nn.Module, fresh: tuple[str, ...] = ()) -> LoadReport:
    """Copy every tensor of ``src`` into the same-named tensor of ``dst``.

    ``*pos_embed`` tables are interpolated to ``dst``'s patch grid (a fine-tuning resolution other
    than the pre-training one; listed in ``reshaped``). Any other shape mismatch, or a ``dst``
    tensor without a value that is not under a ``fresh`` prefix, is an error: no silent partial
    loads. Returns the fresh (``missing``) and unused (``unexpected``) keys.
    """
    own, theirs = dst.state_dict(), src.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    reshaped: list[str] = []
    for key, target in own.items():
        if key not in theirs:
            continue
        value = theirs[key]
        if key.endswith("pos_embed") and value.shape != target.shape:
            value = interpolate_pos_embed(value, _grid(target.shape[1] - 1), num_prefix=1)
            reshaped.append(key)
        if value.shape != target.shape:
            raise VlpipeError(
                f"pre-trained {key} has shape {tuple(value.shape)}, the task model wants {tuple(target.shape)}: "
                "--set changed the architecture (only resolution may change when fine-tuning)"
            )
        to_load[key] = value
    missing = [k for k in own if k not in to_load]
    stray = [k for k in missing if not k.startswith(fresh)]
    if stray:
        raise VlpipeError(
            f"the pre-trained checkpoint has no value for {len(stray)} task-model tensors "
            f"({', '.join(stray[:4])}{' ...' if len(stray) > 4 else ''}): is it an ALBEF checkpoint?"
        )
    dst.load_state_dict(to_load, strict=False)
    unused = sorted(k for k in theirs if k not in own)
    return LoadReport(missing, unused, reshaped)


def summarize_keys(keys: list[str]) -> str:
    """``['a.x', 'a.y', 'b.z']`` -> ``'a (2), b (1)'`` (top-level module names)."""
    counts: dict[str, int] = {}
    for k in keys:
        top = k.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{k} ({n})" for k, n in counts.items()) or "none"
