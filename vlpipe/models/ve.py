"""Visual entailment (SNLI-VE) model: ALBEF's encoders + an MLP on the fused [CLS].

As ALBEF's ``model_ve.py``: the image encoder, the text encoder and the fusion encoder read
(hypothesis, image); an MLP ``Linear(w, 2w) -> ReLU -> Linear(2w, classes)`` on the fused [CLS]
state gives the logits of entailment / neutral / contradiction (in
:data:`vlpipe.data.task_tables.VE_LABELS` order). Submodule names equal ALBEF's
(``visual_encoder``, ``text_encoder``, ``fusion_encoder``), so a pre-trained ALBEF's weights load by
name; ALBEF's queues, projections, ITM and MLM heads are not part of it.

Momentum distillation (ALBEF's VE.yaml ``distill: True``): built with ``distill=True`` (the ``ve``
task passes ``model.distill``), the model also holds frozen EMA copies ``visual_encoder_m``,
``text_encoder_m``, ``fusion_encoder_m`` and ``cls_head_m`` (saved with the weights). A training
call ``forward(..., alpha=a, update_momentum=u)`` first does the EMA step (``model.momentum``; when
``u``), then returns ``(logits, soft)``: ``soft`` [B, classes] is the momentum model's softmax, the
target of :func:`ve_loss`'s ``(1 - alpha) CE + alpha soft-CE``. Both happen inside ``forward`` so
they run under DistributedDataParallel. Plain calls (no ``alpha``: evaluation, Grad-CAM) use the
online model only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vlpipe.config import ModelConfig
from vlpipe.models.fusion import FusionEncoder
from vlpipe.models.text import TextEncoder
from vlpipe.models.vision import VisionEncoder
from vlpipe.objectives.distill import distilled_cross_entropy
from vlpipe.objectives.momentum import (MomentumCopies,
                                        add_momentum_copies, fill_momentum_keys, momentum_soft_targets)


def classifier_head(width: int, classes: int) -> nn.Sequential:
    """ALBEF's ``cls_head``: Linear(w, 2w), ReLU, Linear(2w, classes)."""
    head = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, classes))
    for m in head:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return head


class VEModel(MomentumCopies, nn.Module):
    """``forward(images [B,3,H,W], text_ids [B,L], text_mask [B,L]) -> logits [B, classes]``;
    with ``alpha=...`` (training, see the module doc) ``-> (logits, soft targets or None)``."""

    MOMENTUM = ("visual_encoder", "text_encoder", "fusion_encoder", "cls_head")

    def __init__(self, cfg: ModelConfig, classes: int = 3, distill: bool = False):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        v, t = cfg.vision, cfg.text
        self.visual_encoder = VisionEncoder(v)
        self.text_encoder = TextEncoder(t)
        self.fusion_encoder = FusionEncoder(t, image_width=v.width)
        self.cls_head = classifier_head(t.width, classes)
        if distill:
            add_momentum_copies(self, self.MOMENTUM)
            self.register_load_state_dict_pre_hook(fill_momentum_keys(self.MOMENTUM))
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual_encoder.set_grad_checkpointing(enable)
        self.text_encoder.set_grad_checkpointing(enable)
        self.fusion_encoder.set_grad_checkpointing(enable)

    def fused_cls(self, images: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The fusion encoder's [CLS] state [B, width] of each (text, image) row."""
        image_tokens = self.visual_encoder(images)
        text_tokens = self.text_encoder(text_ids, text_mask)
        return self.fusion_encoder(text_tokens, text_mask, image_tokens)[:, 0]

    def forward(self, images: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
                alpha: float | None = None, update_momentum: bool = True):
        """Logits [B, classes]. With ``alpha`` (a training call): ``(logits, soft)``, ``soft`` the
        momentum model's probabilities [B, classes] after the EMA step (when ``update_momentum``);
        None without momentum copies, in eval mode, or for ``alpha <= 0``."""
        logits = self.cls_head(self.fused_cls(images, text_ids, text_mask))
        if alpha is None:
            return logits

        def head_m() -> torch.Tensor:
            image_tokens = self.visual_encoder_m(images)
            text_tokens = self.text_encoder_m(text_ids, text_mask)
            return self.cls_head_m(self.fusion_encoder_m(text_tokens, text_mask, image_tokens)[:, 0])

        return logits, momentum_soft_targets(self, float(alpha), update_momentum, head_m)


def ve_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None,
            alpha: float = 0.0) -> torch.Tensor:
    """3-way cross entropy, mean over the batch (computed in float32); with ``soft`` [B, 3] target
    probabilities (the momentum model's) and ``alpha > 0``, ``(1 - alpha) CE + alpha soft-CE``."""
    return distilled_cross_entropy(logits, labels, soft, alpha)
