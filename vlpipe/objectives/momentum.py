"""Momentum (EMA) encoders and the feature queue; the task models' momentum (distillation) copies."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

R = TypeVar("R")


def _params(modules: list[nn.Module]) -> list[torch.Tensor]:
    # One walk over all modules so a tensor shared by two of them (a tied MLM decoder) counts once.
    return list(nn.ModuleList(modules).parameters())


@torch.no_grad()
def ema_update(model_pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """In place, for every parameter: ``param_m = momentum * param_m + (1 - momentum) * param``.

    ``model_pairs``: (online, momentum) modules of identical structure (and identical tying).
    """
    pairs = list(model_pairs)
    online = _params([a for a, _ in pairs])
    target = _params([b for _, b in pairs])
    if len(online) != len(target):
        raise ValueError("ema_update: online and momentum modules differ in structure")
    if not online:
        return
    torch._foreach_mul_(target, momentum)
    torch._foreach_add_(target, online, alpha=1.0 - momentum)


@torch.no_grad()
def copy_params(model_pairs: Iterable[tuple[nn.Module, nn.Module]]) -> None:
    """Set each momentum parameter to its online value (at initialisation or after loading)."""
    pairs = list(model_pairs)
    online = _params([a for a, _ in pairs])
    target = _params([b for _, b in pairs])
    if len(online) != len(target):
        raise ValueError("copy_params: online and momentum modules differ in structure")
    if online:
        torch._foreach_copy_(target, online)


def add_momentum_copies(model: nn.Module, names: Sequence[str]) -> None:
    """Give ``model`` a frozen (requires_grad False) momentum copy ``<name>_m`` of each submodule
    ``<name>`` (ALBEF's naming). The copies are made together, so weights shared within or between
    the modules (tied embeddings, shared key/value projections) stay shared in the copies."""
    copies = copy.deepcopy([getattr(model, n) for n in names])
    for name, m in zip(names, copies):
        m.requires_grad_(False)
        setattr(model, name + "_m", m)


def momentum_pairs_of(model: nn.Module, names: Sequence[str]) -> list[tuple[nn.Module, nn.Module]]:
    """(online, momentum) pairs of the ``names`` whose ``<name>_m`` copy ``model`` has."""
    return [(getattr(model, n), getattr(model, n + "_m")) for n in names if hasattr(model, n + "_m")]


class MomentumCopies:
    """Mixin for a task model (an ``nn.Module`` with ``cfg.momentum``) whose submodules named in
    ``MOMENTUM`` may have frozen EMA copies ``<name>_m`` (:func:`add_momentum_copies`)."""

    MOMENTUM: tuple[str, ...] = ()

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs; empty without distillation."""
        return momentum_pairs_of(self, self.MOMENTUM)

    @torch.no_grad()
    def momentum_update(self) -> None:
        ema_update(self.momentum_pairs(), self.cfg.momentum)

    @torch.no_grad()
    def sync_momentum(self) -> None:
        """Momentum copies := online weights (at the start of fine-tuning, after loading)."""
        copy_params(self.momentum_pairs())


def fill_momentum_keys(names: Sequence[str]) -> Callable[..., None]:
    """A load_state_dict pre-hook: a state dict with no ``<name>_m.*`` entry at all for a momentum
    copy (a checkpoint written without momentum copies) gets the online ``<name>.*`` values there,
    i.e. the copy starts equal to the online weights. Entries that are present are left alone."""

    def hook(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        for name in names:
            online, target = f"{prefix}{name}.", f"{prefix}{name}_m."
            if not hasattr(module, name + "_m") or any(k.startswith(target) for k in state_dict):
                continue
            for key in [k for k in state_dict if k.startswith(online)]:
                state_dict[target + key[len(online):]] = state_dict[key]

    return hook


def momentum_soft_targets(model: nn.Module, alpha: float, update_momentum: bool,
                          head_m: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    """The training-call part shared by the classifier task models (VE, NLVR2): without momentum
    copies or outside training mode, None; else the EMA step (when ``update_momentum``), then, for
    ``alpha > 0``, the momentum model's class probabilities ``softmax(head_m())`` (no gradient)."""
    if not model.momentum_pairs() or not model.training:
        return None
    with torch.no_grad():
        if update_momentum:
            model.momentum_update()
        if alpha <= 0:
            return None
        return F.softmax(head_m().float(), dim=-1)


def without_momentum_keys(model: nn.Module, report: R) -> R:
    """``report``: a :class:`~vlpipe.models.vision.LoadReport` (a NamedTuple with ``missing``).
    After a partial load: set the model's momentum copies (if any) to its online weights and drop
    their keys from ``report.missing`` (they are not left at a fresh initialisation)."""
    pairs = model.momentum_pairs()
    if not pairs:
        return report
    copy_params(pairs)
    names = tuple(n for n, m in model.named_children() if any(m is b for _, b in pairs))
    return report._replace(missing=[k for k in report.missing if not k.startswith(tuple(f"{n}." for n in names))])


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: int | torch.Tensor, keys: torch.Tensor) -> int | torch.Tensor:
    """Write ``keys`` into the ring buffer ``queue`` from slot ``ptr``; returns the next slot.

    queue: [..., Q] with the slot as LAST dim (ALBEF's [embed_dim, Q] feature queue, or a [Q] id
    queue); keys: [n, ...] one row per item. Writing wraps around the end, so Q need not be a
    multiple of n. When n > Q only the last Q keys are kept (the newest win). ``ptr`` may be an int
    (an int is returned) or a 0-d/1-element tensor (a 0-d tensor is returned, and no
    device-to-host copy happens).
    """
    size = queue.shape[-1]
    n = keys.shape[0]
    as_int = not torch.is_tensor(ptr)
    start = torch.as_tensor(ptr, device=queue.device).reshape(()).long() % size
    end = (start + n) % size
    if n > size:
        keys, start, n = keys[-size:], end, size  # the kept keys end exactly where all n would
    if n:
        slots = (start + torch.arange(n, device=queue.device)) % size
        queue.index_copy_(queue.dim() - 1, slots, keys.to(queue.dtype).movedim(0, -1).contiguous())
    return int(end) if as_int else end
