"""Visual entailment (SNLI-VE) model: ALBEF's encoders + an MLP on the fused [CLS].

As ALBEF's ``model_ve.py``: the image encoder, the text encoder and the fusion encoder read
(hypothesis, image); an MLP ``Linear(w, 2w) -> ReLU -> Linear(2w, classes)`` on the fused [CLS]
state gives the logits of entailment / neutral / contradiction (in
:data:`vlpipe.data.task_tables.VE_LABELS` order). Submodule names equal ALBEF's
(``visual_encoder``, ``text_encoder``, ``fusion_encoder``), so a pre-trained ALBEF's weights load by
name; the momentum copies, queues, projections, ITM and MLM heads are not part of it (vlpipe's VE
fine-tuning trains with plain cross entropy, without ALBEF's optional momentum distillation).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vlpipe.config import ModelConfig
from vlpipe.models.fusion import FusionEncoder
from vlpipe.models.text import TextEncoder
from vlpipe.models.vision import VisionEncoder


def classifier_head(width: int, classes: int) -> nn.Sequential:
    """ALBEF's ``cls_head``: Linear(w, 2w), ReLU, Linear(2w, classes)."""
    head = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, classes))
    for m in head:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return head


class VEModel(nn.Module):
    """``forward(images [B,3,H,W], text_ids [B,L], text_mask [B,L]) -> logits [B, classes]``."""

    def __init__(self, cfg: ModelConfig, classes: int = 3):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        v, t = cfg.vision, cfg.text
        self.visual_encoder = VisionEncoder(v)
        self.text_encoder = TextEncoder(t)
        self.fusion_encoder = FusionEncoder(t, image_width=v.width)
        self.cls_head = classifier_head(t.width, classes)
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

    def forward(self, images: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.fused_cls(images, text_ids, text_mask))


def ve_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """3-way cross entropy, mean over the batch (computed in float32)."""
    return F.cross_entropy(logits.float(), labels)
