"""Image-text matching (ITM): hard-negative sampling and the 2-way loss.

For each image one negative text, and for each text one negative image, are drawn with probability
softmax(similarity) over the candidates, where every candidate showing the same image (by image
id) has probability 0: the draw never returns the positive nor another caption of the same image.
Given text keys, a candidate whose text equals the row's text is excluded the same way (it is no
negative: the same words are true of both images).

Degenerate case: when every candidate of a row shows the row's own image (e.g. a batch holding a
single image), there is no true negative. That row then draws uniformly from all candidates and is
flagged (``image_ok`` / ``text_ok`` False) so the ITM loss can leave its negative pair out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from vlpipe.objectives.itc import positive_mask


class HardNegatives(NamedTuple):
    text_for_image: torch.Tensor  # [B] long: column index of the negative text of each image
    image_for_text: torch.Tensor  # [B] long: column index of the negative image of each text
    image_ok: torch.Tensor  # [B] bool: False where image i had no candidate of another image id
    text_ok: torch.Tensor  # [B] bool: False where text i had no candidate of another image id


def _draw(sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None):
    logits = sim.detach().float().masked_fill(same, float("-inf"))
    ok = (~same).any(dim=1)
    weights = torch.where(ok[:, None], F.softmax(logits, dim=1).nan_to_num(0.0), torch.ones_like(logits))
    # NaN similarities (a diverged run) would leave a row of zeros: draw uniformly among other ids
    dead = weights.sum(dim=1) <= 0
    if bool(dead.any()):
        weights[dead] = (~same[dead]).float()
    return torch.multinomial(weights, 1, generator=generator).squeeze(1), ok


@torch.no_grad()
def sample_hard_negatives(
    sim_i2t: torch.Tensor,
    sim_t2i: torch.Tensor,
    image_ids: torch.Tensor,
    image_ids_all: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    text_keys: torch.Tensor | None = None,
    text_keys_all: torch.Tensor | None = None,
) -> HardNegatives:
    """Draw hard negatives.

    sim_i2t: [B, K] image i vs candidate text j; sim_t2i: [B, K] text i vs candidate image j.
    image_ids: [B] ids of the rows' pairs; image_ids_all: [K] ids of the candidate pairs (default
    ``image_ids``: the candidates are the batch itself). Candidate j's text and image both belong
    to pair j. ``generator`` must live on the tensors' device. ``text_keys`` [B] /
    ``text_keys_all`` [K] (default ``text_keys``): candidates with the row's text key count as the
    same pair too (:func:`~vlpipe.objectives.itc.positive_mask`).
    """
    ids_all = image_ids if image_ids_all is None else image_ids_all
    if text_keys is not None and text_keys_all is None:
        text_keys_all = text_keys
    same = positive_mask(image_ids, ids_all, text_keys, text_keys_all)
    text_for_image, image_ok = _draw(sim_i2t, same, generator)
    image_for_text, text_ok = _draw(sim_t2i, same, generator)
    return HardNegatives(text_for_image, image_for_text, image_ok, text_ok)


def itm_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over ITM pairs: logits [N, 2], labels [N] (1 = match). ALBEF's batch is the
    B positives, then B (text, negative image) and B (image, negative text) pairs. ``weight`` [N]
    (0/1) drops pairs, e.g. negatives flagged by :func:`sample_hard_negatives`."""
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if weight is None:
        return ce.mean()
    weight = weight.to(ce.dtype)
    return (ce * weight).sum() / weight.sum().clamp_min(1.0)
