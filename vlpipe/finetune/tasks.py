"""The fine-tuning tasks (:data:`TASKS`) and reading any vlpipe checkpoint back by its task.

A checkpoint's ``config.json`` says which task made it (``task``: ``pretrain``, ``import`` or a
fine-tuning task) and which model it holds (``model_class``: ``albef`` unless a task has its own
architecture). :func:`load_task_checkpoint` builds the right model for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlpipe.config import Config, from_dict
from vlpipe.errors import VlpipeError
from vlpipe.finetune import task_grounding, task_nlvr2, task_retrieval, task_ve, task_vqa
from vlpipe.finetune.spec import TaskSpec, make_task_config

#: task name -> spec. A new task is one module with a ``TASK = TaskSpec(...)`` and one line here.
TASKS: dict[str, TaskSpec] = {
    "retrieval": task_retrieval.TASK,
    "ve": task_ve.TASK,
    "vqa": task_vqa.TASK,
    "nlvr2": task_nlvr2.TASK,
    "grounding": task_grounding.TASK,
}

#: Checkpoints not made by fine-tuning: both hold an ALBEF.
BASE_TASKS = ("pretrain", "import")


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise VlpipeError(f"unknown task {name!r}: known tasks are {', '.join(TASKS)}")
    return TASKS[name]


def checkpoint_meta(folder: Path | str) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, with ``task`` and ``model_class`` always set."""
    from vlpipe.train.checkpoint import CONFIG, read_config

    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise VlpipeError(f"{folder}: not a vlpipe checkpoint (no {CONFIG})")
    meta = read_config(folder)
    meta.setdefault("task", "pretrain")
    meta.setdefault("model_class", "albef")
    return meta


def is_albef(meta: dict[str, Any]) -> bool:
    return meta.get("model_class", "albef") == "albef"


def describe(meta: dict[str, Any]) -> str:
    """'a pre-trained ALBEF (pretrain, 64 px)' / 'a fine-tuned \\'ve\\' model (48 px)'."""
    task, size = meta.get("task"), meta.get("image_size")
    if task in BASE_TASKS:
        return f"a {'pre-trained' if task == 'pretrain' else 'imported'} ALBEF ({size} px)"
    return f"a fine-tuned {task!r} {'ALBEF' if is_albef(meta) else 'model'} ({size} px)"


def require_task(folder: Path | str, allowed: tuple[str, ...], use: str) -> dict[str, Any]:
    """The checkpoint's meta, or a one-line error when its task is not in ``allowed``
    (``"albef"`` in ``allowed`` admits any ALBEF-shaped checkpoint)."""
    meta = checkpoint_meta(folder)
    if meta["task"] in allowed or ("albef" in allowed and is_albef(meta)):
        return meta
    raise VlpipeError(f"{folder}: is {describe(meta)}, but {use}")


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    cfg: Config
    meta: dict[str, Any]
    tokenizer_dir: Path | None  # None: the checkpoint carries no tokenizer
    task_config: Any = None  # the task's settings (TaskSpec.task_config), when it has them
    assets: dict[str, Any] = field(default_factory=dict)  # the task's files (TaskSpec.assets) by name


def task_config_of(meta: dict[str, Any]) -> Any:
    """The task settings a checkpoint was trained with (None for a task without, or an ALBEF)."""
    spec = TASKS.get(meta.get("task", ""))
    if spec is None or spec.task_config is None:
        return None
    return make_task_config(spec, meta.get("task_config"))


def build_for(meta: dict[str, Any], cfg: Config) -> torch.nn.Module:
    """An untrained model of the checkpoint's architecture."""
    if is_albef(meta):
        from vlpipe.models.albef import ALBEF

        return ALBEF(cfg.model)
    task = meta["task"]
    if task not in TASKS:
        raise VlpipeError(f"checkpoint of unknown task {task!r} (this vlpipe knows {', '.join(TASKS)}); upgrade vlpipe")
    return TASKS[task].build(cfg, task_config_of(meta))


def read_assets(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The task's files (``TaskSpec.assets``) a checkpoint folder holds, parsed."""
    import json

    spec = TASKS.get(meta.get("task", ""))
    out: dict[str, Any] = {}
    for name in spec.assets if spec is not None else ():
        if (folder / name).is_file():
            out[name] = json.loads((folder / name).read_text(encoding="utf-8"))
    return out


def load_task_checkpoint(folder: Path | str, device: str = "cpu") -> LoadedCheckpoint:
    """Any vlpipe checkpoint: its model (eval mode, on ``device``), config, meta and tokenizer folder."""
    from vlpipe.train.checkpoint import load_weights

    folder = Path(folder)
    meta = checkpoint_meta(folder)
    cfg = from_dict(meta["config"])
    model = build_for(meta, cfg)
    load_weights(model, folder)
    tok = folder / meta["tokenizer"] if meta.get("tokenizer") else None
    return LoadedCheckpoint(model.to(device).eval(), cfg, meta, tok if tok is not None and tok.is_dir() else None,
                            task_config_of(meta), read_assets(folder, meta))
