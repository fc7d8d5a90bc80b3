"""Building a downstream-task model from a pre-trained ALBEF: key maps applied with a load report.

A task model (:mod:`vlpipe.models.vqa`, :mod:`vlpipe.models.nlvr2`) keeps the pre-trained towers
under the same names as :class:`~vlpipe.models.albef.ALBEF` (``visual_encoder.*``,
``text_encoder.*``, and ``fusion_encoder.*`` where the layout is unchanged), and adds modules whose
initial weights come from renamed pre-trained keys. Each task module writes its rename as a pure
function ``ALBEF state dict -> task state dict``; :func:`load_mapped` loads the result and says
what happened (nothing is loaded silently: missing, unused and resized keys are all listed).
Momentum copies, queues, projections and the heads a task does not use are simply not mapped.
The fine-tuning framework's :func:`vlpipe.finetune.spec.transfer_weights` is :func:`load_mapped`
with the identity map and the task's declared new heads as ``fresh``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from vlpipe.errors import VlpipeError
from vlpipe.models.vision import LoadReport, interpolate_pos_embed

#: Pre-trained modules every task model keeps under their ALBEF names.
BACKBONE = ("visual_encoder.", "text_encoder.")


def fill_tied_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: accept a state dict that holds only one name of each tied pair
    (safetensors' ``save_model`` keeps one). ``module.tied_keys()`` lists the pairs."""
    for a, b in module.tied_keys():
        a, b = prefix + a, prefix + b
        if a in state_dict and b not in state_dict:
            state_dict[b] = state_dict[a]
        elif b in state_dict and a not in state_dict:
            state_dict[a] = state_dict[b]


def backbone_keys(albef_state: dict[str, torch.Tensor], prefixes: Iterable[str] = BACKBONE) -> dict[str, torch.Tensor]:
    """The entries of an ALBEF state dict under ``prefixes`` (online towers only: ``*_m`` momentum
    copies start with ``visual_encoder_m.`` etc. and are left out)."""
    prefixes = tuple(prefixes)
    return {k: v for k, v in albef_state.items() if k.startswith(prefixes)}


def _pos_embed_grid(model: nn.Module, name: str, target: torch.Tensor) -> tuple[tuple[int, int], int]:
    """(patch grid, prefix tokens) of the position table ``name`` of ``model``: the owning ViT's
    own when it says (``grid``, ``num_prefix_tokens``), else a square grid after one class token."""
    owner = model.get_submodule(name[: -len("pos_embed")].rstrip("."))
    grid, prefix = getattr(owner, "grid", None), getattr(owner, "num_prefix_tokens", None)
    if grid is not None and prefix is not None:
        return tuple(grid), int(prefix)
    n = target.shape[1] - 1
    g = math.isqrt(n)
    if g * g != n:
        raise VlpipeError(f"position table {name} of {n} patches is not a square grid")
    return (g, g), 1


def load_mapped(model: nn.Module, mapped: dict[str, torch.Tensor], unused: Iterable[str] = (), *,
                fresh: tuple[str, ...] | None = None,
                shape_hint: str = "build the task model with the checkpoint's model config") -> LoadReport:
    """Load renamed pre-trained tensors into ``model``.

    Every ``*pos_embed`` table (``visual_encoder.pos_embed``, a momentum copy's, ...) is
    interpolated to the model's patch grid (fine-tuning at a higher resolution, as ALBEF does:
    listed in ``reshaped``). Any other shape mismatch is an error naming the key (``shape_hint``
    says what to do). With ``fresh``, a model tensor left without a value that is not under one of
    those prefixes (the task's new heads) is an error too, raised before anything is loaded: no
    silent partial loads. Returns ``missing`` (model keys left at their fresh initialisation; a
    tied twin of a loaded key does not count), ``unexpected`` (mapped names the model lacks, plus
    ``unused``) and ``reshaped``.
    """
    own = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    unexpected, reshaped = list(unused), []
    for name, value in mapped.items():
        if name not in own:
            unexpected.append(name)
            continue
        if name.endswith("pos_embed") and value.shape != own[name].shape:
            grid, prefix = _pos_embed_grid(model, name, own[name])
            value = interpolate_pos_embed(value, grid, num_prefix=prefix)
            reshaped.append(name)
        if value.shape != own[name].shape:
            raise VlpipeError(
                f"pre-trained {name} has shape {tuple(value.shape)}, the task model wants {tuple(own[name].shape)}: "
                + shape_hint
            )
        to_load[name] = value
    tied = getattr(model, "tied_keys", lambda: [])()
    twins = {b for a, b in tied if a in to_load} | {a for a, b in tied if b in to_load}
    missing = [k for k in own if k not in to_load and k not in twins]
    if fresh is not None:
        stray = [k for k in missing if not k.startswith(fresh)]
        if stray:
            raise VlpipeError(
                f"the pre-trained checkpoint has no value for {len(stray)} task-model tensors "
                f"({', '.join(stray[:4])}{' ...' if len(stray) > 4 else ''}): is it an ALBEF checkpoint?"
            )
    model.load_state_dict(to_load, strict=False)
    return LoadReport(missing, sorted(unexpected), reshaped)
