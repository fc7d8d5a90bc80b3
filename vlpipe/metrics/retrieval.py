"""Image-text retrieval recall as the ALBEF/UNITER papers compute it, with several captions per image.

Text retrieval (TR, image -> text): an image query is a hit at k when ANY of its captions ranks in
the top k. Image retrieval (IR, text -> image): a caption query is a hit at k when its image ranks
in the top k. ``r_mean`` is the mean of the six recalls.
"""

from __future__ import annotations

import numpy as np
import torch


def recall_at_k(
    sim_i2t: torch.Tensor | np.ndarray,
    text_to_image: list[int] | np.ndarray,
    ks: tuple[int, ...] = (1, 5, 10),
    sim_t2i: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Recall in percent from an [images, texts] score matrix.

    ``text_to_image[j]`` is the index of caption j's image. ``sim_t2i`` defaults to the transpose
    (they differ after ITM reranking, where each direction is rescored on its own top-k).
    """
    s_i2t = torch.as_tensor(np.asarray(sim_i2t, dtype=np.float32))
    s_t2i = s_i2t.T if sim_t2i is None else torch.as_tensor(np.asarray(sim_t2i, dtype=np.float32))
    t2i = torch.as_tensor(np.asarray(text_to_image, dtype=np.int64))
    n_img, n_txt = s_i2t.shape
    if t2i.shape != (n_txt,):
        raise ValueError(f"text_to_image has {t2i.shape[0]} entries for {n_txt} texts")

    # TR: best rank among each image's captions. rank of text j for image i = #texts scoring higher.
    own = t2i.unsqueeze(0) == torch.arange(n_img).unsqueeze(1)  # [I, T] true captions
    order = s_i2t.argsort(dim=1, descending=True)
    ranks_of_text = torch.empty_like(order)
    ranks_of_text.scatter_(1, order, torch.arange(n_txt).expand(n_img, n_txt))
    best = torch.where(own, ranks_of_text, torch.full_like(ranks_of_text, n_txt)).min(dim=1).values

    # IR: rank of each caption's image.
    order_i = s_t2i.argsort(dim=1, descending=True)
    ir_rank = (order_i == t2i.unsqueeze(1)).float().argmax(dim=1)

    out = {}
    for k in ks:
        out[f"tr_r{k}"] = 100.0 * (best < k).float().mean().item()
    for k in ks:
        out[f"ir_r{k}"] = 100.0 * (ir_rank < k).float().mean().item()
    out["r_mean"] = float(np.mean([out[f"tr_r{k}"] for k in ks] + [out[f"ir_r{k}"] for k in ks]))
    return out
