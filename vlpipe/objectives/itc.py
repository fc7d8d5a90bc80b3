"""Image-text contrastive loss (ITC) against momentum features and the queue.

Positives are decided by image id, not by position: when one image appears with several captions
(COCO has five), every (image, caption-of-that-image) pair in the batch or in the queue is a
positive, and the target distribution spreads evenly over them. With momentum distillation the
target is mixed with the momentum model's own similarity distribution:

    target = alpha * softmax(sim_momentum) + (1 - alpha) * positives / (number of positives)
    loss   = ( CE(image -> texts) + CE(text -> images) ) / 2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_mask(image_ids: torch.Tensor, image_ids_all: torch.Tensor, text_keys: torch.Tensor | None = None,
                  text_keys_all: torch.Tensor | None = None) -> torch.Tensor:
    """[B, K] bool: True where row i's image id equals column j's (batch ids vs batch+queue ids).

    With ``text_keys`` [B] and ``text_keys_all`` [K'] (K' <= K: the keys of the first K' columns,
    the gathered batch; queued columns carry none), a pair is also positive when its two texts have
    the same key: a text equal to one of image j's texts is true of image j. Grounding uses it,
    where short expressions ("the dog") recur across images.
    """
    pos = image_ids.view(-1, 1) == image_ids_all.view(1, -1)
    if text_keys is not None and text_keys_all is not None:
        k = text_keys_all.numel()
        pos[:, :k] |= text_keys.view(-1, 1) == text_keys_all.view(1, -1)
    return pos


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij * log_softmax(logits)_ij."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def itc_targets(pos_mask: torch.Tensor, soft_logits: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """Positives normalised per row, mixed by ``alpha`` with ``softmax(soft_logits)`` when given."""
    pos = pos_mask.float()
    hard = pos / pos.sum(dim=1, keepdim=True).clamp_min(1.0)
    if soft_logits is None or alpha == 0:
        return hard
    return alpha * F.softmax(soft_logits.float(), dim=1) + (1.0 - alpha) * hard


def itc_loss(
    image_feat: torch.Tensor,
    text_feat: torch.Tensor,
    image_feat_all: torch.Tensor,
    text_feat_all: torch.Tensor,
    temp: torch.Tensor | float,
    pos_mask_i2t: torch.Tensor,
    pos_mask_t2i: torch.Tensor | None = None,
    sim_targets_soft: tuple[torch.Tensor, torch.Tensor] | None = None,
    alpha: float = 0.0,
) -> torch.Tensor:
    """ITC loss (a scalar).

    image_feat, text_feat: [B, D] L2-normalised features of the batch (with gradients).
    image_feat_all, text_feat_all: [K, D] candidates, rows (momentum features of the batch followed
        by the queue, in ALBEF).
    temp: the temperature (a scalar tensor keeps its gradient).
    pos_mask_i2t: [B, K] bool, True where image i and text j show the same image
        (:func:`positive_mask`); pos_mask_t2i: [B, K] for text i vs image j (defaults to the same).
    sim_targets_soft: (sim_i2t_m, sim_t2i_m), [B, K] momentum-model similarity logits (already
        divided by temp) for momentum distillation with weight ``alpha``; None = hard targets only.
    Every row should have at least one positive (the batch's own momentum features ensure it).
    """
    if pos_mask_t2i is None:
        pos_mask_t2i = pos_mask_i2t
    sim_i2t = image_feat.float() @ text_feat_all.float().t() / temp
    sim_t2i = text_feat.float() @ image_feat_all.float().t() / temp
    soft_i2t, soft_t2i = sim_targets_soft if sim_targets_soft is not None else (None, None)
    with torch.no_grad():
        t_i2t = itc_targets(pos_mask_i2t, soft_i2t, alpha)
        t_t2i = itc_targets(pos_mask_t2i, soft_t2i, alpha)
    return (soft_cross_entropy(sim_i2t, t_i2t) + soft_cross_entropy(sim_t2i, t_t2i)) / 2
