"""Checkpoints: weights as safetensors, config as JSON, train state for exact resume.

A checkpoint folder holds ``model.safetensors`` (every parameter and buffer: momentum copies and
queues included), ``config.json`` (the full typed config plus tokenizer, resolution and lineage)
and, for a run in progress, ``train_state.pt`` (optimizer, scheduler, RNG states, data position).
During a run, :class:`RunningCheckpoints` keeps them as ``ckpt-<step>`` folders in the artifact's
staging folder: each is written under a temporary name and renamed, and only then recorded as the
latest, so a kill at any moment leaves the last good checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAIN_STATE = "train_state.pt"


TOKENIZER_DIR = "tokenizer"  # a checkpoint's own copy of its tokenizer


def copy_tokenizer(tok_dir: Path, folder: Path) -> None:
    """Put a copy of the tokenizer folder ``tok_dir`` (without its artifact manifest) in ``folder``."""
    if (folder / TOKENIZER_DIR).exists():
        shutil.rmtree(folder / TOKENIZER_DIR)
    shutil.copytree(tok_dir, folder / TOKENIZER_DIR, ignore=shutil.ignore_patterns("manifest.json"))


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    save_model(model, str(folder / WEIGHTS))  # handles tied (shared) tensors


def load_state_dict(folder: Path | str) -> dict[str, torch.Tensor]:
    """The raw tensors (tied weights appear once)."""
    return load_file(str(Path(folder) / WEIGHTS))


def load_weights(model: torch.nn.Module, folder: Path | str, strict: bool = True):
    """Load ``model.safetensors`` into ``model``; returns (missing, unexpected).

    ``save_model`` keeps one name of each tied tensor; the model's own load hook (ALBEF has one)
    fills the other name in.
    """
    return model.load_state_dict(load_state_dict(folder), strict=strict)


def write_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def read_config(folder: Path | str) -> dict[str, Any]:
    return json.loads((Path(folder) / CONFIG).read_text(encoding="utf-8"))


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(folder: Path, state: dict[str, Any]) -> None:
    torch.save(state, folder / TRAIN_STATE)


def load_train_state(folder: Path | str) -> dict[str, Any]:
    # weights_only: a checkpoint file cannot run code when loaded.
    return torch.load(Path(folder) / TRAIN_STATE, map_location="cpu", weights_only=True)


class RunningCheckpoints:
    """``ckpt-<step>`` folders inside a staging folder; the pointer is saved via ``record``."""

    def __init__(self, folder: Path, record: Callable[[str], None], keep: int = 1):
        self.folder = Path(folder)
        self.record = record
        self.keep = keep

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        tmp = self.folder / f".ckpt-tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        write(tmp)
        final = self.folder / f"ckpt-{step:08d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.record(final.name)  # only now is it the latest good checkpoint
        for old in sorted(self.folder.glob("ckpt-*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.folder.glob(".ckpt-tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return final

    def remove_all(self) -> None:
        for p in list(self.folder.glob("ckpt-*")) + list(self.folder.glob(".ckpt-tmp-*")):
            shutil.rmtree(p, ignore_errors=True)
