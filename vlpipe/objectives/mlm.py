"""Masked language modelling (MLM): BERT's masking and the loss with momentum-distilled targets."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

IGNORE = -100


def mask_tokens(
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Iterable[int],
    prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ~``prob`` of the real (non-special, non-padding) tokens as MLM targets; of those 80%
    become [MASK], 10% a random non-special token, 10% stay unchanged.

    Returns (masked_ids, labels): labels hold the original id at chosen positions and -100
    elsewhere. Special ids ([CLS], [SEP], [PAD], ...) and positions with attention_mask 0 are never
    chosen. ``generator`` must live on ``ids.device``.
    """
    dev = ids.device
    special = torch.tensor(sorted(set(int(i) for i in special_ids)), dtype=ids.dtype, device=dev)
    candidate = attention_mask.bool() & ~torch.isin(ids, special)
    chosen = (torch.rand(ids.shape, generator=generator, device=dev) < prob) & candidate
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))

    how = torch.rand(ids.shape, generator=generator, device=dev)
    to_mask = chosen & (how < 0.8)
    to_random = chosen & (how >= 0.8) & (how < 0.9)
    keep_vocab = torch.ones(vocab_size, dtype=torch.bool, device=dev)
    keep_vocab[special[special < vocab_size]] = False
    allowed = keep_vocab.nonzero().squeeze(1).to(ids.dtype)
    random_ids = allowed[torch.randint(len(allowed), ids.shape, generator=generator, device=dev)]

    masked = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def mlm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_targets: torch.Tensor | None = None,
    alpha: float = 0.0,
) -> torch.Tensor:
    """MLM loss over the chosen positions.

    logits: [M, V] at the chosen positions (rows labelled -100, if any, are ignored);
    labels: [M] original token ids; soft_targets: [M, V] probabilities from the momentum model.
    loss = (1 - alpha) * CE(labels) + alpha * CE(soft_targets). Zero (with a graph) when M == 0.
    """
    valid = labels != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logits = logits[valid].float()
    labels = labels[valid]
    loss = F.cross_entropy(logits, labels)
    if soft_targets is not None and alpha > 0:
        distill = -(soft_targets[valid].float() * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        loss = (1.0 - alpha) * loss + alpha * distill
    return loss
