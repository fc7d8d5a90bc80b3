"""Fusion (multimodal) encoder: BERT layers with cross-attention from text to image tokens.

transformers 5 only builds a cross-attending ``BertLayer`` for decoders, so this is a small
encoder layer of our own. Each layer is, in order (post-LayerNorm, as BERT):

    h = LN(h + Dense(SelfAttention(h, key padding mask)))          # attention.*
    h = LN(h + Dense(CrossAttention(q=h, k=v=image tokens)))        # crossattention.*
    h = LN(h + Dense(GELU(Dense(h))))                               # intermediate.* / output.*

Parameter names equal a BERT layer's (``attention.self.query`` ... ``output.LayerNorm``; the
cross-attention block as in ALBEF/BERT-decoder checkpoints), so ``encoder.layer.{k}.*`` of a BERT
folder, or ``text_encoder.bert.encoder.layer.{6..11}.*`` of an ALBEF checkpoint, load by a plain
key rename. Cross-attention key/value read the image width, which may differ from the text width.

Attention goes through ``F.scaled_dot_product_attention``. For Grad-CAM, set
``save_cross_attention = True`` on the encoder (or a layer): those layers then compute the
cross-attention probabilities explicitly and keep them, graph attached, in
``layer.crossattention.self.attention_probs`` [B, heads, L_text, N_image].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlpipe.config import TextConfig
from vlpipe.models.text import init_bert_weights, padding_mask


class MultiHeadAttention(nn.Module):
    """Query from ``x``, key/value from ``context`` (``x`` itself for self-attention)."""

    def __init__(self, width: int, heads: int, context_width: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(context_width, width)
        self.value = nn.Linear(context_width, width)
        self.dropout = dropout
        self.save_attention = False
        self.attention_probs: torch.Tensor | None = None

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # [B, L, W] -> [B, heads, L, head_dim]
        return t.view(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``key_mask``: [B, 1, 1, N] bool, True = may be attended; None = every key."""
        q, k, v = self._split(self.query(x)), self._split(self.key(context)), self._split(self.value(context))
        p = self.dropout if self.training else 0.0
        if self.save_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            self.attention_probs = probs
            out = F.dropout(probs, p=p, training=self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        return out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)


class Output(nn.Module):
    """Dense + dropout + residual + LayerNorm (BERT's ``*.output`` after attention and after the FFN)."""

    def __init__(self, in_features: int, width: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_features, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class AttentionBlock(nn.Module):
    """``self`` (query/key/value) + ``output`` (dense/LayerNorm): BERT's ``BertAttention`` names."""

    def __init__(self, width: int, heads: int, context_width: int, eps: float, dropout: float, attn_dropout: float):
        super().__init__()
        self.self = MultiHeadAttention(width, heads, context_width, attn_dropout)
        self.output = Output(width, width, eps, dropout)

    def forward(self, h, context, key_mask=None):
        return self.output(self.self(h, context, key_mask), h)


class Intermediate(nn.Module):
    def __init__(self, width: int, intermediate: int):
        super().__init__()
        self.dense = nn.Linear(width, intermediate)

    def forward(self, h):
        return F.gelu(self.dense(h))


class FusionLayer(nn.Module):
    def __init__(self, cfg: TextConfig, image_width: int):
        super().__init__()
        w, eps, d = cfg.width, cfg.layer_norm_eps, cfg.dropout
        self.attention = AttentionBlock(w, cfg.heads, w, eps, d, cfg.attention_dropout)
        self.crossattention = AttentionBlock(w, cfg.heads, image_width, eps, d, cfg.attention_dropout)
        self.intermediate = Intermediate(w, cfg.intermediate)
        self.output = Output(cfg.intermediate, w, eps, d)

    def forward(self, h, text_key_mask, image_tokens, image_key_mask=None):
        h = self.attention(h, h, text_key_mask)
        h = self.crossattention(h, image_tokens, image_key_mask)
        return self.output(self.intermediate(h), h)


class FusionEncoder(nn.Module):
    """``forward(text_tokens [B, L, W], text_mask [B, L], image_tokens [B, N, Wi]) -> [B, L, W]``."""

    def __init__(self, cfg: TextConfig, image_width: int):
        super().__init__()
        self.layer = nn.ModuleList([FusionLayer(cfg, image_width) for _ in range(cfg.fusion_layers)])
        self.grad_checkpointing = False
        init_bert_weights(self, cfg.init_std)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @property
    def save_cross_attention(self) -> bool:
        return any(layer.crossattention.self.save_attention for layer in self.layer)

    @save_cross_attention.setter
    def save_cross_attention(self, on: bool) -> None:
        for layer in self.layer:
            layer.crossattention.self.save_attention = on
            if not on:
                layer.crossattention.self.attention_probs = None

    def cross_attention_maps(self) -> list[torch.Tensor | None]:
        """The saved [B, heads, L, N] probabilities of each layer (None where not saved)."""
        return [layer.crossattention.self.attention_probs for layer in self.layer]

    def forward(self, text_tokens, text_mask, image_tokens, image_mask=None):
        text_key_mask = padding_mask(text_mask)
        image_key_mask = padding_mask(image_mask) if image_mask is not None else None
        h = text_tokens
        for layer in self.layer:
            if self.grad_checkpointing and self.training and not layer.crossattention.self.save_attention:
                h = checkpoint(layer, h, text_key_mask, image_tokens, image_key_mask, use_reentrant=False)
            else:
                h = layer(h, text_key_mask, image_tokens, image_key_mask)
        return h
