"""Momentum distillation (MoD) of a task's targets, as ALBEF fine-tunes VE, NLVR2 and VQA.

A momentum (EMA) copy of the model gives soft targets ``q`` (its softmax); the loss is

    (1 - alpha) * hard loss + alpha * soft cross-entropy  -sum_c q_c log p_c

All functions are pure (tensors in, tensors out) and compute in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row ``-sum_c targets_c * log_softmax(logits)_c``: [..., C] logits and target
    probabilities -> [...] (float32, no reduction)."""
    return -(F.log_softmax(logits.float(), dim=-1) * targets.float()).sum(-1)


def distill_mix(hard: torch.Tensor, soft: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * hard + alpha * soft`` (two losses of the same shape)."""
    return (1 - alpha) * hard + alpha * soft


def distilled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None,
                            alpha: float = 0.0) -> torch.Tensor:
    """Classifier loss: cross entropy of [B, C] ``logits`` against ``labels`` [B], mean over the
    batch; with ``soft`` [B, C] target probabilities and ``alpha > 0``, ALBEF's
    ``(1 - alpha) CE + alpha mean soft-CE``. Plain cross entropy otherwise."""
    logits = logits.float()
    loss = F.cross_entropy(logits, labels.long())
    if soft is None or alpha <= 0:
        return loss
    return distill_mix(loss, soft_cross_entropy(logits, soft).mean(), alpha)


def ramped_alpha(alpha: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """``alpha`` ramped up linearly over the first epoch (ALBEF's fine-tuning, and vlpipe's
    retrieval task): ``alpha * min(1, (step + 1) / ramp)``, ``ramp`` = the optimizer steps of one
    epoch (at most the run's total, at least 1)."""
    ramp = max(1, min(total_steps, steps_per_epoch))
    return alpha * min(1.0, (step + 1) / ramp)
