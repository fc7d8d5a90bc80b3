"""ALBEF's pre-training objectives as pure functions of tensors (no module state).

``itc`` image-text contrastive loss with queue positives by image id and momentum distillation;
``itm`` hard-negative sampling and the matching loss; ``mlm`` BERT masking and the masked-LM loss;
``momentum`` the EMA update, the feature-queue write and the task models' momentum copies;
``distill`` the momentum-distillation mix of hard and soft targets.
"""

from vlpipe.objectives.distill import distill_mix, distilled_cross_entropy, ramped_alpha, soft_cross_entropy
from vlpipe.objectives.itc import itc_loss, positive_mask
from vlpipe.objectives.itm import HardNegatives, itm_loss, sample_hard_negatives
from vlpipe.objectives.mlm import mask_tokens, mlm_loss
from vlpipe.objectives.momentum import ema_update, enqueue

__all__ = [
    "HardNegatives",
    "distill_mix",
    "distilled_cross_entropy",
    "ema_update",
    "enqueue",
    "itc_loss",
    "itm_loss",
    "mask_tokens",
    "mlm_loss",
    "positive_mask",
    "ramped_alpha",
    "sample_hard_negatives",
    "soft_cross_entropy",
]
