"""Text encoder: BERT embeddings + the first ``text_layers`` BERT layers (transformers' own modules).

The layers are transformers' ``BertLayer`` run with SDPA attention, so a Hugging Face BERT folder's
``embeddings.*`` and ``encoder.layer.{i}.*`` weights load by name (see ``load_text_weights`` in
:mod:`vlpipe.models.albef`). There is no pooler: ALBEF uses the [CLS] token's hidden state.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlpipe.config import TextConfig
from vlpipe.errors import VlpipeError

TYPE_VOCAB_SIZE = 2  # BERT's segment embeddings; vlpipe uses segment 0 only


def bert_config(cfg: TextConfig, num_layers: int | None = None):
    """A transformers ``BertConfig`` with the sizes of ``cfg`` and SDPA attention."""
    from transformers import BertConfig

    bc = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        num_hidden_layers=cfg.text_layers + cfg.fusion_layers if num_layers is None else num_layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=cfg.max_len,
        type_vocab_size=TYPE_VOCAB_SIZE,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
    )
    bc._attn_implementation = "sdpa"
    return bc


def padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] 1/0 (or bool) attention mask -> [B, 1, 1, L] bool, True where a key may be attended."""
    return mask.bool()[:, None, None, :]


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialisation: normal(0, 0.02) linears/embeddings, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class TextEncoder(nn.Module):
    """``forward(ids [B, L], mask [B, L]) -> hidden states [B, L, width]`` (text-only layers)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

        self.cfg = cfg
        bc = bert_config(cfg)
        self.embeddings = BertEmbeddings(bc)
        self.layer = nn.ModuleList([BertLayer(bc, layer_idx=i) for i in range(cfg.text_layers)])
        self.width = cfg.width
        self.grad_checkpointing = False
        init_bert_weights(self, cfg.init_std)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.cfg.max_len:
            raise VlpipeError(
                f"text of {ids.shape[1]} tokens is longer than model.text.max_len {self.cfg.max_len}: "
                "truncate captions to max_len when tokenizing"
            )
        h = self.embeddings(input_ids=ids)
        attn = padding_mask(mask)
        for layer in self.layer:
            if self.grad_checkpointing and self.training:
                h = checkpoint(layer, h, attn, use_reentrant=False)
            else:
                h = layer(h, attn)
        return h
