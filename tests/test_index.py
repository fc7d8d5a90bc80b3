"""FAISS layout choice and index quality against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from vlpipe.errors import VlpipeError
from vlpipe.retrieval.index import build_index, choose_layout, parse_bytes, recall_vs_exact


def _clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, dim))
    x = centers[rng.integers(0, 64, n)] + 0.3 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def test_layout_choice_follows_size_and_budget():
    gb = 1 << 30
    assert choose_layout(10_000, 256, 4 * gb).factory == "Flat"
    assert choose_layout(500_000, 256, 4 * gb).factory.startswith("HNSW")
    ivf = choose_layout(50_000_000, 256, 4 * gb)
    assert ivf.factory.startswith("IVF") and "PQ" in ivf.factory and ivf.nprobe > 0
    m = int(ivf.factory.split("PQ")[1].split("x")[0])
    assert 50_000_000 * (m + 8) <= 4 * gb
    assert choose_layout(500_000, 256, 100 << 20).factory.startswith("IVF")  # budget forces PQ
    with pytest.raises(VlpipeError, match="memory budget"):
        choose_layout(10**10, 256, 1 << 20)


def test_parse_bytes():
    assert parse_bytes("4GB") == 4 << 30 and parse_bytes("512mb") == 512 << 20 and parse_bytes("1000") == 1000
    with pytest.raises(VlpipeError, match="4GB"):
        parse_bytes("lots")


# Random results would overlap exact top-10 about 10/n of the time (~0.003 here).
@pytest.mark.parametrize("kind,floor", [("flat", 0.999), ("hnsw", 0.9), ("ivfpq", 0.3)])
def test_recall_against_exact(kind, floor):
    dim = 16
    data = _clustered(3_200, dim)
    x, q = data[:3_000], data[3_000:]  # held-out queries from the same distribution
    layout = choose_layout(len(x), dim, 1 << 30, kind)
    sample = x[np.random.default_rng(0).choice(len(x), min(len(x), layout.train_rows or 1), replace=False)]
    index = build_index(layout, dim, lambda: (x[i:i + 1024] for i in range(0, len(x), 1024)), sample)
    assert index.ntotal == len(x)
    recall, qps = recall_vs_exact(index, x, q, k=10)
    assert recall >= floor, (kind, recall)
    assert qps > 0
