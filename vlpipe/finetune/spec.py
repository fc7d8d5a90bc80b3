"""What a fine-tuning task is (:class:`TaskSpec`) and the pieces every task shares.

A task says five things: which dataset it reads (``data_task``: a task table of
:mod:`vlpipe.data.task_tables`, or None for a caption dataset), how to build its model from a
config (weights then come from the pre-trained ALBEF by name, :func:`transfer_weights`, or through
the task model's own key map, ``from_pretrained``), how rows become batches (``collate``), what the
loss is (``loss``, called by the shared :func:`vlpipe.train.loop.train_loop`), and how to evaluate
a split (``evaluate`` -> metrics, metric rows and optional per-example predictions). Optionally:
task settings stored with the checkpoint (``task_config``, e.g. :class:`~vlpipe.models.vqa.VQAConfig`,
set with ``--set <task>.<field>=value``), task-only flags (``options``), and files computed from
the data before training and kept in the checkpoint (``prepare`` -> ``assets``, e.g. VQA's
candidate answers). :mod:`vlpipe.finetune.run` does the rest the same way for every task. See
docs/finetune.md for adding one.
"""

from __future__ import annotations

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
from vlpipe.models.transfer import load_mapped
from vlpipe.models.vision import LoadReport
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
    # fine-tuning resolution from a pre-trained checkpoint: this x its resolution, rounded to whole
    # patches (ALBEF: 384 from 256 = 1.5); --image-size wins, and a fine-tuned start keeps its own
    image_scale: float = 1.0


@dataclass(frozen=True)
class CollateSettings:
    """What every task's batch builder needs to know."""

    tokenizer_dir: str
    image_size: int
    max_len: int
    train: bool  # augment (random resized crop + flip) or plain resize
    crop_min_scale: float = 0.5
    task_config: Any = None  # the task's settings (TaskSpec.task_config), None for tasks without


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
    options: dict[str, Any] = field(default_factory=dict)  # task-specific (retrieval, vqa: k_test)
    task_config: Any = None  # the checkpoint's task settings (TaskSpec.task_config)
    assets: dict[str, Any] = field(default_factory=dict)  # the checkpoint's task files (TaskSpec.assets)

    def stream(self, make_collate: Callable[[CollateSettings], Collate], splits: list[str] | None = None,
               **settings: Any):
        """The evaluation batches of ``splits`` (default: this request's split) in dataset order,
        unaugmented, every row once (at most ``max_items``); a one-line error when the split is empty.
        ``make_collate(settings)`` builds the task's collate; ``settings`` extend CollateSettings."""
        from vlpipe.data.loader import ShardBatches, scan_blocks
        from vlpipe.errors import InputError

        splits = splits or [self.split]
        blocks = scan_blocks(self.files, splits)
        if not blocks:
            raise InputError(self.files[0].parent if self.files else "dataset", f"no rows in split {self.split!r}",
                             "pick a split the dataset has (see `vlpipe artifacts show`)")
        m = self.cfg.model
        cs = CollateSettings(str(self.tokenizer_dir), m.vision.image_size, m.text.max_len, train=False, **settings)
        return ShardBatches(blocks, make_collate(cs), batch_size=self.batch_size, shuffle=False, drop_last=False,
                            limit=self.max_items)


@dataclass
class Evaluation:
    """``metrics``: everything, JSON-able, with ``headline`` {name: value}; ``rows``: dicts of
    scoring, metric, value, headline (one per number, for ``metrics.parquet``); ``predictions``:
    one row per example, when the task has them."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    predictions: pa.Table | None = None


@dataclass(frozen=True)
class TaskOption:
    """A flag only this task's ``vlpipe finetune NAME`` takes (e.g. vqa's ``--answers FILE``); its
    value reaches ``prepare`` as ``TaskInputs.options[name]``."""

    name: str  # Python name of the value
    flag: str  # e.g. "--answers"
    help: str
    type: type = str
    default: Any = None


@dataclass
class TaskInputs:
    """What a task's ``prepare`` reads (before any folder is written)."""

    files: list[Path]  # the dataset's shards
    splits: tuple[str, ...]  # the training splits
    options: dict[str, Any]  # the task's own flags (TaskSpec.options), by name
    task_config: Any
    tokenizer_dir: Path | None = None
    root: Path | None = None  # artifacts root (to resolve names)


@dataclass
class TaskPrep:
    """What ``prepare`` found: ``assets`` (file name -> JSON value) are written into every
    checkpoint folder and handed back to ``evaluate`` (``EvalRequest.assets``); ``notes`` are
    printed; ``info`` joins ``head`` in config.json."""

    assets: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


LossFn = Callable[[nn.Module, dict, int, LossContext], dict[str, torch.Tensor]]
EvalFn = Callable[[EvalRequest, Progress], Evaluation]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    summary: str  # one line, shown by `vlpipe finetune --help`
    data_task: str | None  # task table the dataset must hold (None: a caption dataset)
    model_class: str  # "albef": the checkpoint is an ALBEF (embed/retrieve/evaluate retrieval load it)
    build: Callable[[Config, Any], nn.Module]  # (config, task config or None) -> an untrained task model
    recipe: TrainRecipe
    collate: Callable[[CollateSettings], Collate]
    loss: LossFn
    evaluate: EvalFn
    configure: Callable[[Config], Config] = lambda cfg: cfg  # e.g. switch objectives off
    fresh: tuple[str, ...] = ()  # parameter-name prefixes a pre-trained ALBEF has no value for (new heads)
    # (pre-trained ALBEF, fine-tuning config, task config) -> (task model, load report), for a task
    # whose model renames or replicates pre-trained tensors (e.g. NLVR2Model.from_albef); None =
    # ``build`` then :func:`transfer_weights` by name with ``fresh``.
    from_pretrained: Callable[[nn.Module, Config, Any], tuple[nn.Module, LoadReport]] | None = None
    headline: str = ""  # the metric summaries show
    eval_options: dict[str, Any] = field(default_factory=dict)  # for the end-of-run check
    checkpoint_info: dict[str, Any] = field(default_factory=dict)  # stored in config.json (labels, ...)
    find_unused_parameters: bool = False  # DDP: does some trainable parameter get no gradient?
    # Task settings: a dataclass with ``from_dict`` / ``to_dict`` (VQAConfig, NLVR2Config), stored in
    # config.json as ``task_config``; ``--set <name>.<field>=value`` changes a field.
    task_config: type | None = None
    options: tuple[TaskOption, ...] = ()  # flags only `vlpipe finetune NAME` takes
    prepare: Callable[[TaskInputs], TaskPrep] | None = None  # computed from the data before training
    assets: tuple[str, ...] = ()  # file names prepare writes into the checkpoint (read back for evaluate)


# --------------------------------------------------------------------------------------------------
# Pre-trained weights into a task model
# --------------------------------------------------------------------------------------------------


def transfer_weights(src: nn.Module, dst: nn.Module, fresh: tuple[str, ...] = ()) -> LoadReport:
    """Copy every tensor of ``src`` into the same-named tensor of ``dst``
    (:func:`vlpipe.models.transfer.load_mapped` with the identity key map).

    ``*pos_embed`` tables are interpolated to ``dst``'s patch grid (a fine-tuning resolution other
    than the pre-training one; listed in ``reshaped``). Any other shape mismatch, or a ``dst``
    tensor without a value that is not under a ``fresh`` prefix, is an error: no silent partial
    loads. Returns the fresh (``missing``) and unused (``unexpected``) keys.
    """
    return load_mapped(dst, src.state_dict(), fresh=tuple(fresh),
                       shape_hint="--set changed the architecture (only resolution may change when fine-tuning)")


def task_assignments(spec: TaskSpec, overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--set`` assignments into config ones and the task's own (``<task>.<field>=value``,
    for a task with a ``task_config``)."""
    if spec.task_config is None:
        return list(overrides), []
    mine = [o for o in overrides if o.split("=", 1)[0].strip().startswith(spec.name + ".")]
    return [o for o in overrides if o not in mine], mine


def make_task_config(spec: TaskSpec, stored: dict[str, Any] | None = None, assignments: list[str] = ()) -> Any:
    """The task's settings: ``stored`` (a checkpoint's ``task_config``, else the defaults) with
    ``assignments`` (``<task>.<field>=value``, value read as YAML) applied; None for a task without
    settings. A wrong key or value is a one-line error."""
    if spec.task_config is None:
        return None
    import dataclasses

    import yaml

    data = dict(stored or {})
    defaults = {f.name: f.default for f in dataclasses.fields(spec.task_config)}
    for a in assignments:
        key, sep, value = a.partition("=")
        name = key.strip()[len(spec.name) + 1:]
        if not sep or not name:
            raise VlpipeError(f"--set {a!r}: write {spec.name}.FIELD=VALUE")
        parsed = yaml.safe_load(value) if value.strip() else ""
        want = defaults.get(name)
        ok = (want is None or (isinstance(want, bool) and isinstance(parsed, bool))
              or (isinstance(want, int) and not isinstance(want, bool) and isinstance(parsed, int)
                  and not isinstance(parsed, bool))
              or (isinstance(want, float) and isinstance(parsed, (int, float)) and not isinstance(parsed, bool))
              or (isinstance(want, str) and isinstance(parsed, str)))
        if not ok:
            kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(want)]
            raise VlpipeError(f"--set {a!r}: {spec.name}.{name} takes {kind}, not {parsed!r}")
        data[name] = parsed
    return spec.task_config.from_dict(data)


def summarize_keys(keys: list[str]) -> str:
    """``['a.x', 'a.y', 'b.z']`` -> ``'a (2), b (1)'`` (top-level module names)."""
    counts: dict[str, int] = {}
    for k in keys:
        top = k.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{k} ({n})" for k, n in counts.items()) or "none"


def classifier_evaluation(task: str, split: str, labels: tuple[str, ...] | list[str], pred,
                          train_labels: list[str], seconds: float) -> Evaluation:
    """The Evaluation of a label classifier (VE, NLVR2) from its predictions table (``label`` and
    ``predicted`` columns, names from ``labels``): accuracy, per-class recall, the confusion matrix and
    the majority-class baseline of ``train_labels``."""
    from vlpipe.metrics.classification import classification_report, majority_baseline

    labels = list(labels)
    gold = pred.column("label").to_pylist()
    report = classification_report([labels.index(x) for x in gold],
                                   [labels.index(x) for x in pred.column("predicted").to_pylist()], labels)
    baseline = majority_baseline(train_labels, gold, labels)
    metrics = {"task": task, "split": split, **report, "labels": labels, "headline": {"accuracy": round(report["accuracy"], 6)},
               "baseline": baseline, "seconds": round(seconds, 3)}
    rows = [{"scoring": "model", "metric": "accuracy", "value": report["accuracy"], "headline": True}]
    for name, pc in report["per_class"].items():
        if pc["recall"] is not None:
            rows.append({"scoring": "model", "metric": f"recall:{name}", "value": pc["recall"], "headline": False})
    if baseline["accuracy"] is not None:
        rows.append({"scoring": "baseline:majority", "metric": "accuracy", "value": baseline["accuracy"],
                     "headline": False})
    return Evaluation(metrics, rows, pred)

