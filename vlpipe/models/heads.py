"""Small heads: ITC projections, the ITM classifier and the MLM vocabulary head.

Parameter names of :class:`MLMHead` follow BERT's ``cls.predictions`` (``transform.dense``,
``transform.LayerNorm``, ``decoder.weight``, ``bias``). The MLM head is applied only to the hidden
states of masked positions (callers select them first): logits over the vocabulary at every position
would cost more than the rest of a tiny model's step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def projection(width: int, embed_dim: int) -> nn.Linear:
    """``vision_proj`` / ``text_proj``: [CLS] hidden state -> ITC embedding (normalised by the caller)."""
    return nn.Linear(width, embed_dim)


def itm_head(width: int) -> nn.Linear:
    """Fused [CLS] -> 2 logits (index 1 = the image and the text match)."""
    return nn.Linear(width, 2)


class MLMTransform(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(h)))


class MLMHead(nn.Module):
    """``forward(h [M, width]) -> logits [M, vocab]``; ``decoder.weight`` may be tied to the word
    embeddings (:meth:`tie_to`), ``bias`` is the head's own."""

    def __init__(self, width: int, vocab_size: int, eps: float = 1e-12):
        super().__init__()
        self.transform = MLMTransform(width, eps)
        self.decoder = nn.Linear(width, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.transform.dense.weight, std=0.02)
        nn.init.zeros_(self.transform.dense.bias)
        nn.init.normal_(self.decoder.weight, std=0.02)

    def tie_to(self, embedding: nn.Embedding) -> None:
        self.decoder.weight = embedding.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(h), self.decoder.weight, self.bias)
