"""Recall@k with several captions per image, checked against a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from vlpipe.metrics.retrieval import recall_at_k


def test_hand_computed_case():
    # 3 images, 5 captions: captions 0,1 -> image 0; 2,3 -> image 1; 4 -> image 2
    t2i = [0, 0, 1, 1, 2]
    sim = np.array([
        # c0   c1   c2   c3   c4
        [0.1, 0.9, 0.8, 0.0, 0.2],  # image 0: top text is c1 (own) -> TR hit @1
        [0.7, 0.1, 0.3, 0.2, 0.9],  # image 1: order c4,c0,c2,c3,c1 -> best own (c2) at rank 2 -> hit @5 not @1
        [0.5, 0.4, 0.25, 0.15, 0.1],  # image 2: own c4 ranks last (rank 4) -> hit @5
    ])
    r = recall_at_k(sim, t2i, ks=(1, 2, 5))
    assert r["tr_r1"] == pytest.approx(100 / 3)
    assert r["tr_r2"] == pytest.approx(100 / 3)
    assert r["tr_r5"] == pytest.approx(100.0)
    # IR: columns. c0: image scores [0.1,0.7,0.5] -> image1 first, own image0 rank 2
    # c1: [0.9,0.1,0.4] -> own 0 rank 0; c2: [0.8,0.3,0.25] -> own 1 rank 1
    # c3: [0.0,0.2,0.15] -> own 1 rank 0; c4: [0.2,0.9,0.1] -> own 2 rank 2
    assert r["ir_r1"] == pytest.approx(40.0)
    assert r["ir_r2"] == pytest.approx(60.0)
    assert r["ir_r5"] == pytest.approx(100.0)


def test_perfect_and_reversed_scores():
    t2i = np.repeat(np.arange(4), 2)
    perfect = (t2i[None, :] == np.arange(4)[:, None]).astype(np.float32)
    r = recall_at_k(perfect, t2i)
    assert all(v == 100.0 for v in r.values())
    r = recall_at_k(-perfect, t2i, ks=(1,))
    assert r["tr_r1"] == 0.0 and r["ir_r1"] == 0.0


def test_shape_mismatch():
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 3)), [0, 1])
