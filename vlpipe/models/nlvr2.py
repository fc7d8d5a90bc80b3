"""NLVR2 (ALBEF, sec. 5): does a sentence describe a pair of images? Text attends to both images.

The fusion encoder is extended to two images; the pre-trained single-image fusion layers give its
initial weights. Two layouts (``NLVR2Config.layout``):

``blocks`` (default; the paper's description and ALBEF's code)
    each pre-trained fusion layer ``i`` becomes two consecutive blocks (self-attention,
    cross-attention, FFN each): block ``2i`` attends to image 1, block ``2i + 1`` to image 2, both
    initialised from layer ``i``. Keys ``fusion_encoder.layer.{2i, 2i+1}.*`` (so an official
    ALBEF NLVR2 checkpoint, whose 12 fusion layers alternate images, has the same layout).
``cross``
    each fusion layer keeps one self-attention and one FFN and gets two consecutive
    cross-attentions, ``crossattention`` (image 1) then ``crossattention2`` (image 2), both
    initialised from the layer's single cross-attention. Cheaper (no second FFN / self-attention).

With ``share_kv`` (the paper: "the two cross-attention layers share the same linear projection
weights for keys and values") the key/value projections of a layer's two cross-attentions are one
module. The two images go through the image encoder as one batch. An MLP on the fused [CLS]
(``cls_head``: Linear W->W, ReLU, Linear W->2, ALBEF's) gives the logits; class 1 = true.

Momentum distillation (ALBEF's NLVR.yaml ``distill: True``): built with ``distill=True`` (the
``nlvr2`` task passes ``model.distill``), the model also holds frozen EMA copies
``visual_encoder_m``, ``text_encoder_m``, ``fusion_encoder_m`` (with the same shared key/value
projections) and ``cls_head_m``, saved with the weights. A training call
``forward(..., alpha=a, update_momentum=u)`` does the EMA step (``model.momentum``; when ``u``) and
returns ``(logits, soft)``, ``soft`` the momentum model's softmax for :func:`nlvr2_loss`'s
``(1 - alpha) CE + alpha soft-CE``; inside ``forward``, so it runs under DistributedDataParallel.
Plain calls (no ``alpha``: evaluation) use the online model only.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlpipe.config import Config, ModelConfig, TextConfig, validate
from vlpipe.errors import VlpipeError
from vlpipe.models.fusion import AttentionBlock, FusionLayer, Intermediate, Output
from vlpipe.models.text import TextEncoder, init_bert_weights, padding_mask
from vlpipe.models.transfer import backbone_keys, fill_tied_keys, load_mapped
from vlpipe.models.vision import LoadReport, VisionEncoder
from vlpipe.objectives.distill import distilled_cross_entropy
from vlpipe.objectives.momentum import (MomentumCopies,
                                        add_momentum_copies, fill_momentum_keys, momentum_soft_targets, without_momentum_keys)

LAYOUTS = ("blocks", "cross")


@dataclass
class NLVR2Config:
    layout: str = "blocks"  # blocks (paper, ALBEF code) | cross (two cross-attentions per layer)
    share_kv: bool = True  # the two cross-attentions of a layer share key/value projections (paper)
    head_hidden: int = 0  # hidden width of the MLP head; 0 = the text width (ALBEF)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> NLVR2Config:
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise VlpipeError(f"unknown NLVR2 setting(s) {', '.join(unknown)}: valid are "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        out = cls(**data)
        out.check()
        return out

    def check(self) -> None:
        if self.layout not in LAYOUTS:
            raise VlpipeError(f"NLVR2 layout {self.layout!r}: use one of {', '.join(LAYOUTS)}")
        if self.head_hidden < 0:
            raise VlpipeError("NLVR2 head_hidden must be >= 0")


class TwoImageLayer(nn.Module):
    """Layout ``cross``: self-attention -> cross-attention to image 1 -> to image 2 -> FFN."""

    def __init__(self, cfg: TextConfig, image_width: int):
        super().__init__()
        w, eps, d = cfg.width, cfg.layer_norm_eps, cfg.dropout
        self.attention = AttentionBlock(w, cfg.heads, w, eps, d, cfg.attention_dropout)
        self.crossattention = AttentionBlock(w, cfg.heads, image_width, eps, d, cfg.attention_dropout)
        self.crossattention2 = AttentionBlock(w, cfg.heads, image_width, eps, d, cfg.attention_dropout)
        self.intermediate = Intermediate(w, cfg.intermediate)
        self.output = Output(cfg.intermediate, w, eps, d)

    def forward(self, h, text_key_mask, image1, image2, image1_key_mask=None, image2_key_mask=None):
        h = self.attention(h, h, text_key_mask)
        h = self.crossattention(h, image1, image1_key_mask)
        h = self.crossattention2(h, image2, image2_key_mask)
        return self.output(self.intermediate(h), h)


class PairFusionEncoder(nn.Module):
    """``forward(text_tokens [B, L, W], text_mask [B, L], image1 [B, N, Wi], image2 [B, N, Wi]) -> [B, L, W]``."""

    def __init__(self, cfg: TextConfig, image_width: int, layout: str = "blocks", share_kv: bool = True):
        super().__init__()
        if layout not in LAYOUTS:
            raise VlpipeError(f"NLVR2 layout {layout!r}: use one of {', '.join(LAYOUTS)}")
        self.layout = layout
        if layout == "blocks":
            self.layer = nn.ModuleList([FusionLayer(cfg, image_width) for _ in range(2 * cfg.fusion_layers)])
        else:
            self.layer = nn.ModuleList([TwoImageLayer(cfg, image_width) for _ in range(cfg.fusion_layers)])
        init_bert_weights(self)
        self.share_kv = share_kv
        if share_kv:
            for a, b in self.cross_attention_pairs():
                second = self.get_submodule(b).self
                first = self.get_submodule(a).self
                second.key, second.value = first.key, first.value

    def cross_attention_pairs(self) -> list[tuple[str, str]]:
        """Module paths of the (image 1, image 2) cross-attention blocks of each pre-trained layer."""
        if self.layout == "blocks":
            return [(f"layer.{2 * i}.crossattention", f"layer.{2 * i + 1}.crossattention") for i in range(len(self.layer) // 2)]
        return [(f"layer.{i}.crossattention", f"layer.{i}.crossattention2") for i in range(len(self.layer))]

    def tied_keys(self) -> list[tuple[str, str]]:
        if not self.share_kv:
            return []
        return [(f"{a}.self.{p}.{t}", f"{b}.self.{p}.{t}") for a, b in self.cross_attention_pairs()
                for p in ("key", "value") for t in ("weight", "bias")]

    def forward(self, text_tokens, text_mask, image1, image2, image1_mask=None, image2_mask=None):
        text_key_mask = padding_mask(text_mask)
        m1 = padding_mask(image1_mask) if image1_mask is not None else None
        m2 = padding_mask(image2_mask) if image2_mask is not None else None
        h = text_tokens
        if self.layout == "blocks":
            for j, layer in enumerate(self.layer):
                h = layer(h, text_key_mask, *((image1, m1) if j % 2 == 0 else (image2, m2)))
        else:
            for layer in self.layer:
                h = layer(h, text_key_mask, image1, image2, m1, m2)
        return h


def nlvr2_head(width: int, hidden: int = 0, classes: int = 2) -> nn.Sequential:
    """ALBEF's classifier on the fused [CLS]: Linear(W, hidden) -> ReLU -> Linear(hidden, classes)."""
    hidden = hidden or width
    head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    init_bert_weights(head)
    return head


def nlvr2_loss(logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """Cross-entropy of [B, 2] logits against labels [B] (1 = the sentence is true); with ``soft``
    [B, 2] target probabilities (a momentum model's), ALBEF's ``(1 - alpha) CE + alpha soft-CE``."""
    return distilled_cross_entropy(logits, labels, soft, alpha)


class NLVR2Model(MomentumCopies, nn.Module):
    """Image encoder + text encoder (ALBEF names) + :class:`PairFusionEncoder` + ``cls_head``
    (+ their momentum copies ``*_m`` with ``distill``)."""

    MOMENTUM = ("visual_encoder", "text_encoder", "fusion_encoder", "cls_head")

    def __init__(self, cfg: ModelConfig, nlvr: NLVR2Config | None = None, distill: bool = False):
        super().__init__()
        validate(Config(model=cfg))
        self.cfg = copy.deepcopy(cfg)
        self.nlvr_cfg = copy.deepcopy(nlvr) if nlvr is not None else NLVR2Config()
        self.nlvr_cfg.check()
        v, t = cfg.vision, cfg.text
        if t.fusion_layers < 1:
            raise VlpipeError("the NLVR2 model needs model.text.fusion_layers >= 1")
        self.visual_encoder = VisionEncoder(v)
        self.text_encoder = TextEncoder(t)
        self.fusion_encoder = PairFusionEncoder(t, v.width, self.nlvr_cfg.layout, self.nlvr_cfg.share_kv)
        self.cls_head = nlvr2_head(t.width, self.nlvr_cfg.head_hidden)
        if distill:
            add_momentum_copies(self, self.MOMENTUM)
        self.register_load_state_dict_pre_hook(fill_tied_keys)
        if distill:  # after the tied keys are filled in
            self.register_load_state_dict_pre_hook(fill_momentum_keys(self.MOMENTUM))

    def tied_keys(self) -> list[tuple[str, str]]:
        fusions = ["fusion_encoder"] + (["fusion_encoder_m"] if hasattr(self, "fusion_encoder_m") else [])
        return [(f"{f}.{a}", f"{f}.{b}") for f in fusions for a, b in self.fusion_encoder.tied_keys()]

    @classmethod
    def from_albef(cls, albef: nn.Module | dict[str, torch.Tensor], cfg: ModelConfig | None = None,
                   nlvr: NLVR2Config | None = None, distill: bool = False) -> tuple[NLVR2Model, LoadReport]:
        """An NLVR2 model initialised from a pre-trained ALBEF (a model, or its state dict with ``cfg``);
        ``cls_head`` starts fresh (listed in ``missing``). With ``distill`` the momentum copies are
        set to the loaded online weights (not listed in ``missing``)."""
        state = albef.state_dict() if isinstance(albef, nn.Module) else albef
        if cfg is None:
            if not hasattr(albef, "cfg"):
                raise VlpipeError("NLVR2Model.from_albef: pass cfg with a state dict")
            cfg = albef.cfg
        model = cls(cfg, nlvr, distill)
        report = load_mapped(model, nlvr2_state_from_albef(state, model.nlvr_cfg.layout))
        return model, without_momentum_keys(model, report)

    def fused_cls(self, images1, images2, text_ids, text_mask) -> torch.Tensor:
        """[B, W] fused [CLS] state of (sentence, image 1, image 2)."""
        tokens = self.visual_encoder(torch.cat([images1, images2]))
        image1, image2 = tokens.split(images1.shape[0])
        text = self.text_encoder(text_ids, text_mask)
        return self.fusion_encoder(text, text_mask, image1, image2)[:, 0]

    def forward(self, images1, images2, text_ids, text_mask, alpha: float | None = None, update_momentum: bool = True):
        """[B, 2] logits (column 1 = the sentence is true of the image pair). With ``alpha`` (a
        training call): ``(logits, soft)``, ``soft`` [B, 2] the momentum model's probabilities after
        the EMA step (when ``update_momentum``); None without momentum copies, in eval mode, or for
        ``alpha <= 0``."""
        logits = self.cls_head(self.fused_cls(images1, images2, text_ids, text_mask))
        if alpha is None:
            return logits

        def head_m() -> torch.Tensor:
            tokens = self.visual_encoder_m(torch.cat([images1, images2]))
            image1, image2 = tokens.split(images1.shape[0])
            text = self.text_encoder_m(text_ids, text_mask)
            return self.cls_head_m(self.fusion_encoder_m(text, text_mask, image1, image2)[:, 0])

        return logits, momentum_soft_targets(self, float(alpha), update_momentum, head_m)


_FUSION_LAYER = re.compile(r"^fusion_encoder\.layer\.(\d+)\.(.*)$")


def nlvr2_state_from_albef(albef_state: dict[str, torch.Tensor], layout: str = "blocks") -> dict[str, torch.Tensor]:
    """The key map ALBEF -> NLVR2 model (see the module doc): towers by name; fusion layer ``i`` to
    blocks ``2i`` and ``2i+1`` (``blocks``), or to layer ``i`` with ``crossattention.*`` also copied
    to ``crossattention2.*`` (``cross``)."""
    out = backbone_keys(albef_state)
    for key, value in albef_state.items():
        m = _FUSION_LAYER.match(key)
        if not m:
            continue
        i, rest = int(m.group(1)), m.group(2)
        if layout == "blocks":
            out[f"fusion_encoder.layer.{2 * i}.{rest}"] = value.clone()
            out[f"fusion_encoder.layer.{2 * i + 1}.{rest}"] = value.clone()
        else:
            out[key] = value.clone()
            if rest.startswith("crossattention."):
                out[f"fusion_encoder.layer.{i}.crossattention2.{rest[len('crossattention.'):]}"] = value.clone()
    return out
