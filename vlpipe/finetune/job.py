"""A fine-tuning run as data: what `vlpipe finetune TASK` parsed from its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FinetuneJob:
    """``None`` for a training setting = the task's recipe (:class:`~vlpipe.finetune.spec.TrainRecipe`)
    or, for ``image_size`` and ``seed``, the pre-trained checkpoint's own value. ``overrides``
    (``--set section.field=value``) are applied last."""

    task: str
    checkpoint: Path  # folder of the checkpoint to start from (pre-trained, imported, or ALBEF-shaped)
    data: Path  # folder of the dataset artifact (a caption dataset or the task's table)
    steps: int | None = None  # optimizer steps; wins over epochs
    epochs: int | None = None
    batch_size: int | None = None  # per device
    lr: float | None = None
    warmup: int | None = None  # optimizer steps
    image_size: int | None = None  # fine-tuning resolution (position embeddings interpolated)
    grad_accum: int | None = None
    precision: str | None = None
    seed: int | None = None
    overrides: list[str] = field(default_factory=list)
    tokenizer: str | None = None  # tokenizer artifact / HF folder; None = the checkpoint's own copy
    splits: tuple[str, ...] = ("train",)
    workers: int = 2
    checkpoint_every: int = 0  # optimizer steps; 0 = only at the end
    device: str = "auto"
    eval_split: str | None = "val"  # checked at the end into eval.json; None = skip
    eval_max: int | None = 1000  # retrieval: images; classification: examples
    root: Path | None = None
    task_options: dict[str, Any] = field(default_factory=dict)  # the task's own flags (TaskSpec.options)

    def flag_overrides(self) -> list[str]:
        """The explicit settings as config assignments (before ``overrides``)."""
        pairs = (("train.steps", self.steps), ("train.epochs", self.epochs), ("train.batch_size", self.batch_size),
                 ("train.lr", self.lr), ("train.warmup_steps", self.warmup), ("train.grad_accum", self.grad_accum),
                 ("train.precision", self.precision), ("train.seed", self.seed),
                 ("model.vision.image_size", self.image_size))
        return [f"{k}={v}" for k, v in pairs if v is not None]
