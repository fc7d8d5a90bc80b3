"""Building a downstream-task model from a pre-trained ALBEF: key maps applied with a load report.

A task model (:mod:`vlpipe.models.vqa`, :mod:`vlpipe.models.nlvr2`) keeps the pre-trained towers
under the same names as :class:`~vlpipe.models.albef.ALBEF` (``visual_encoder.*``,
``text_encoder.*``, and ``fusion_encoder.*`` where the layout is unchanged), and adds modules whose
initial weights come from renamed pre-trained keys. Each task module writes its rename as a pure
function ``ALBEF state dict -> task state dict``; :func:`load_mapped` loads the result and says
what happened (nothing is loaded silently: missing, unused and resized keys are all listed).
Momentum copies, queues, projections and the heads a task does not use are simply not mapped.
"""

from __future__ import annotations

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


def load_mapped(model: nn.Module, mapped: dict[str, torch.Tensor], unused: Iterable[str] = ()) -> LoadReport:
    """Load renamed pre-trained tensors into ``model``.

    ``visual_encoder.pos_embed`` is interpolated to the model's patch grid (fine-tuning at a higher
    resolution, as ALBEF does: listed in ``reshaped``). Any other shape mismatch is an error naming
    the key. Returns ``missing`` (model keys left at their fresh initialisation; a tied twin of a
    loaded key does not count), ``unexpected`` (mapped names the model lacks, plus ``unused``) and
    ``reshaped``.
    """
    own = model.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    unexpected, reshaped = list(unused), []
    for name, value in mapped.items():
        if name not in own:
            unexpected.append(name)
            continue
        if name.endswith("visual_encoder.pos_embed") and value.shape != own[name].shape:
            vit = model.get_submodule(name[: -len(".pos_embed")])
            value = interpolate_pos_embed(value, vit.grid, num_prefix=vit.num_prefix_tokens)
            reshaped.append(name)
        if value.shape != own[name].shape:
            raise VlpipeError(
                f"pre-trained {name} has shape {tuple(value.shape)}, the task model wants {tuple(own[name].shape)}: "
                "build the task model with the checkpoint's model config"
            )
        to_load[name] = value
    tied = getattr(model, "tied_keys", lambda: [])()
    twins = {b for a, b in tied if a in to_load} | {a for a, b in tied if b in to_load}
    missing = [k for k in own if k not in to_load and k not in twins]
    model.load_state_dict(to_load, strict=False)
    return LoadReport(missing, sorted(unexpected), reshaped)
