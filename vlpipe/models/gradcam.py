"""Grad-CAM on the fusion encoder's cross-attention (ALBEF's visualisation and weakly supervised
grounding), and scoring proposal boxes with the heatmap.

Recipe (ALBEF, ``Grounding.py`` with ``gradcam_mode=itm``): run the fusion encoder with one layer
keeping its cross-attention probabilities ``A`` [B, heads, L_text, 1 + N_patches]; take the
gradient ``G`` of the ITM *match logit* (the ITM head's class-1 output) w.r.t. ``A``; then

    cam = mean over heads of ( A * clamp(G, min=0) ),  image [CLS] key dropped,

one map per text token [B, L, N], zero at padding, reshaped to the patch grid [B, L, h, w]. The
sentence map averages the maps of the real tokens (ALBEF averages over every position, padding
included: the same map up to a per-example factor). ALBEF-base uses layer 8 of its BERT, i.e.
fusion layer 2 of 6; :func:`default_layer` picks the same relative depth for any depth.

Grounding (ALBEF's ``grounding_eval``): the map is resized (bicubic) to the original image, and
each proposal box ``[x, y, w, h]`` is scored by the heatmap mass inside it divided by
``area ** alpha``; ``alpha`` = 0.5 in ALBEF, 1 gives the mean, 0 the plain sum
(:func:`box_scores`, :func:`best_box`). A prediction is correct when its IoU with the annotated box
is at least 0.5 (:func:`box_iou`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from vlpipe.errors import VlpipeError

#: ALBEF's proposal score: mass / area ** alpha.
GROUNDING_ALPHA = 0.5
#: A grounding prediction counts as correct at IoU >= this (RefCOCO+ protocol).
IOU_THRESHOLD = 0.5


class GradCAM(NamedTuple):
    itm_logits: torch.Tensor  # [B, 2] ITM head logits (column 1 = match); the score is column 1
    token_maps: torch.Tensor  # [B, L, h, w] per text token (zero at padding), >= 0
    sentence_map: torch.Tensor  # [B, h, w] mean of the real tokens' maps, >= 0
    layer: int  # the fusion layer used


def default_layer(fusion_layers: int) -> int:
    """ALBEF's choice (fusion layer 2 of 6) at the same relative depth: ``fusion_layers // 3``."""
    return max(0, fusion_layers // 3)


def gradcam_maps(attention: torch.Tensor, grads: torch.Tensor, text_mask: torch.Tensor,
                 grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM from cross-attention probabilities and their gradients (pure function).

    ``attention`` / ``grads`` [B, heads, L, 1 + h*w] (key 0 = the image [CLS]); ``text_mask`` [B, L].
    Returns (token maps [B, L, h, w], sentence map [B, h, w]).
    """
    b, _, length, n = attention.shape
    h, w = grid
    if n - 1 != h * w:
        raise VlpipeError(f"cross-attention has {n - 1} patch keys, not the {h}x{w} patch grid")
    cam = (attention[..., 1:].float() * grads[..., 1:].float().clamp(min=0)).mean(1)  # [B, L, N]
    mask = text_mask.to(cam.dtype)
    cam = cam * mask[:, :, None]
    tokens = cam.reshape(b, length, h, w)
    sentence = tokens.sum(1) / mask.sum(1).clamp(min=1)[:, None, None]
    return tokens, sentence


def gradcam(model, images: torch.Tensor, text_ids: torch.Tensor, text_mask: torch.Tensor,
            layer: int | None = None) -> GradCAM:
    """Grad-CAM of the ITM match logit on fusion layer ``layer`` (default :func:`default_layer`).

    ``model``: an :class:`~vlpipe.models.albef.ALBEF` (anything with ``encode_image``,
    ``encode_text``, ``fusion_encoder`` and ``itm_head``), best in eval mode. The encoders run
    without gradients; only the fusion encoder is differentiated, w.r.t. the attention map itself
    (parameter ``.grad`` fields are left untouched). Works under an outer ``torch.no_grad()``.
    """
    layers = model.fusion_encoder.layer
    layer = default_layer(len(layers)) if layer is None else int(layer)
    if not 0 <= layer < len(layers):
        raise VlpipeError(f"--layer {layer}: the model has fusion layers 0..{len(layers) - 1}")
    attn = layers[layer].crossattention.self
    with torch.no_grad():
        image_tokens, _ = model.encode_image(images)
        text_tokens, _ = model.encode_text(text_ids, text_mask)
    was_saving = attn.save_attention
    try:
        attn.save_attention = True
        with torch.enable_grad():
            image_tokens = image_tokens.detach().float().requires_grad_(True)
            hidden = model.fuse(text_tokens.detach(), text_mask, image_tokens)
            logits = model.itm_head(hidden[:, 0])
            probs = attn.attention_probs
            (grads,) = torch.autograd.grad(logits[:, 1].sum(), probs)
    finally:
        attn.save_attention = was_saving
        if not was_saving:
            attn.attention_probs = None
    tokens, sentence = gradcam_maps(probs.detach(), grads.detach(), text_mask, tuple(model.visual_encoder.grid))
    return GradCAM(logits.detach().float(), tokens, sentence, layer)


# --------------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------------


def upsample(heatmap: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """[h, w] heatmap -> [height, width] (bicubic, as ALBEF); ``image_size`` = (width, height)."""
    width, height = int(image_size[0]), int(image_size[1])
    return F.interpolate(heatmap.float()[None, None], size=(height, width), mode="bicubic", align_corners=False)[0, 0]


def box_scores(heatmap: torch.Tensor, boxes: Sequence[Sequence[float]] | torch.Tensor, image_size: tuple[int, int],
               alpha: float = GROUNDING_ALPHA) -> torch.Tensor:
    """Score proposal boxes by heatmap mass: ``sum(map inside box) / (w * h) ** alpha``.

    ``heatmap`` [h, w] on the patch grid of the (un-cropped) image; ``boxes`` [n, 4] COCO
    ``[x, y, w, h]`` in pixels of the original image; ``image_size`` (width, height). The map is
    resized to the image (bicubic) and a box covers pixel rows ``int(y):int(y + h)`` and columns
    ``int(x):int(x + w)`` (clipped to the image), as ALBEF's grounding evaluation. A box with no
    positive area scores ``-inf``. Returns [n] float32.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return torch.empty(0)
    full = upsample(heatmap, image_size).double()
    height, width = full.shape
    # summed-area table with a zero row/column in front: sum over [y0, y1) x [x0, x1) in O(1)
    table = F.pad(full.cumsum(0).cumsum(1), (1, 0, 1, 0))
    x0 = boxes[:, 0].floor().long().clamp(0, width)
    y0 = boxes[:, 1].floor().long().clamp(0, height)
    x1 = (boxes[:, 0] + boxes[:, 2]).floor().long().clamp(0, width)
    y1 = (boxes[:, 1] + boxes[:, 3]).floor().long().clamp(0, height)
    mass = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    area = (boxes[:, 2] * boxes[:, 3]).clamp(min=0)
    ok = (area > 0) & (x1 > x0) & (y1 > y0)
    score = torch.full((len(boxes),), float("-inf"), dtype=torch.float64)
    score[ok] = mass[ok] / area[ok] ** alpha
    return score.float()


def best_box(heatmap: torch.Tensor, boxes: Sequence[Sequence[float]] | torch.Tensor, image_size: tuple[int, int],
             alpha: float = GROUNDING_ALPHA) -> tuple[int, list[float]]:
    """(index, box) of the highest-scoring proposal (:func:`box_scores`); the first on ties."""
    scores = box_scores(heatmap, boxes, image_size, alpha)
    if len(scores) == 0:
        raise VlpipeError("best_box: no proposal boxes")
    i = int(torch.argmax(scores))
    return i, [float(v) for v in torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)[i]]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two COCO ``[x, y, w, h]`` boxes (continuous coordinates).

    ALBEF's ``computeIoU`` counts inclusive integer pixels instead; on integer boxes the two agree
    except that boxes touching in a single pixel row or column count as disjoint there.
    """
    ax0, ay0, aw, ah = (float(v) for v in a)
    bx0, by0, bw, bh = (float(v) for v in b)
    iw = min(ax0 + aw, bx0 + bw) - max(ax0, bx0)
    ih = min(ay0 + ah, by0 + bh) - max(ay0, by0)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = max(aw, 0.0) * max(ah, 0.0) + max(bw, 0.0) * max(bh, 0.0) - inter
    return inter / union if union > 0 else 0.0
