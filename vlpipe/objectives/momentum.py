"""Momentum (EMA) encoders and the feature queue."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


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
    torch._foreach_copy_(target, online)


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
