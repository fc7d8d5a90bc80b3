"""FAISS indexes through ``index_factory``: choosing a layout, building in batches, measuring recall.

``choose_layout`` reasons the way autofaiss does: exact search while the flat index is small and
fits the memory budget; HNSW while its graph plus full vectors fit; otherwise IVF with product
quantisation sized so that the codes fit the budget. Vectors are L2-normalised, so inner product
is cosine similarity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from vlpipe.errors import VlpipeError

FLAT_MAX_ROWS = 100_000
HNSW_MAX_ROWS = 2_000_000
HNSW_M = 32


@dataclass(frozen=True)
class Layout:
    factory: str
    reason: str
    nprobe: int = 0  # IVF only
    ef_search: int = 0  # HNSW only
    train_rows: int = 0  # rows to train on (0 = no training)


def parse_bytes(text: str) -> int:
    """'4GB', '512MB', '1.5G', '1000' -> bytes."""
    t = text.strip().upper().removesuffix("B")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = float(t)
    except ValueError:
        raise VlpipeError(f"--memory-budget {text!r}: not a size (write e.g. 4GB or 512MB)") from None
    if value <= 0:
        raise VlpipeError(f"--memory-budget {text!r}: must be positive")
    return int(value * mult)


def _pq_m(dim: int, rows: int, budget: int) -> int:
    """Largest number of PQ sub-quantisers (8 bits each) dividing dim whose codes fit the budget."""
    for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1):
        if dim % m == 0 and m <= max(1, dim // 4) and rows * (m + 8) <= budget:
            return m
    raise VlpipeError(
        f"{rows:,} vectors do not fit a {budget / 2**30:.1f} GB memory budget even with 1-byte codes "
        "(raise --memory-budget)"
    )


def choose_layout(rows: int, dim: int, memory_budget: int, kind: str = "auto") -> Layout:
    """Pick a FAISS factory string for ``rows`` vectors of ``dim`` within ``memory_budget`` bytes."""
    flat_bytes = rows * dim * 4
    hnsw_bytes = flat_bytes + rows * HNSW_M * 2 * 4
    if kind == "flat" or (kind == "auto" and rows <= FLAT_MAX_ROWS and flat_bytes <= memory_budget):
        return Layout("Flat", f"{rows:,} vectors: exact search is fast and fits ({flat_bytes / 2**20:.0f} MB)")
    if kind == "hnsw" or (kind == "auto" and rows <= HNSW_MAX_ROWS and hnsw_bytes <= memory_budget):
        return Layout(
            f"HNSW{HNSW_M}", f"{rows:,} vectors: HNSW graph + vectors fit ({hnsw_bytes / 2**20:.0f} MB)",
            ef_search=128,
        )
    if kind not in ("auto", "ivfpq"):
        raise VlpipeError(f"--kind {kind}: use auto, flat, hnsw or ivfpq")
    nlist = 2 ** max(4, min(16, round(math.log2(max(16, 4 * math.sqrt(rows))))))
    nlist = min(nlist, max(1, rows // 39))  # faiss wants >= 39 training points per centroid
    m = _pq_m(dim, rows, memory_budget)
    train = min(rows, max(256 * 39, nlist * 64))
    return Layout(
        f"IVF{nlist},PQ{m}x8",
        f"{rows:,} vectors: IVF{nlist} with {m}-byte PQ codes ({rows * (m + 8) / 2**20:.0f} MB)",
        nprobe=max(1, min(nlist, nlist // 16 or 1, 64)),
        train_rows=train,
    )


def _gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def build_index(
    layout: Layout,
    dim: int,
    batches: Callable[[], Iterable[np.ndarray]],
    train_sample: np.ndarray | None = None,
    use_gpu: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
):
    """Train (on ``train_sample``) and fill an index from float32 ``batches()``; returns a CPU index."""
    import faiss

    index = faiss.index_factory(dim, layout.factory, faiss.METRIC_INNER_PRODUCT)
    gpu = _gpu_count() > 0 if use_gpu is None else use_gpu
    work = index
    if gpu and "HNSW" not in layout.factory:
        work = faiss.index_cpu_to_all_gpus(index)
    if not work.is_trained:
        if train_sample is None or len(train_sample) == 0:
            raise VlpipeError(f"{layout.factory} needs training vectors")
        work.train(np.ascontiguousarray(train_sample, dtype=np.float32))
    for batch in batches():
        work.add(np.ascontiguousarray(batch, dtype=np.float32))
        if on_batch:
            on_batch(len(batch))
    if work is not index:
        index = faiss.index_gpu_to_cpu(work)
    set_search_params(index, layout)
    return index


def set_search_params(index, layout: Layout) -> None:
    import faiss

    if layout.nprobe:
        faiss.extract_index_ivf(index).nprobe = layout.nprobe
    if layout.ef_search and hasattr(index, "hnsw"):
        index.hnsw.efSearch = layout.ef_search


def recall_vs_exact(index, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Mean overlap of the index's top-k with exact top-k, and the index's queries per second."""
    import faiss

    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    k = min(k, len(vectors))
    _, truth = exact.search(queries, k)
    t0 = time.perf_counter()
    _, got = index.search(queries, k)
    qps = len(queries) / max(1e-9, time.perf_counter() - t0)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, got))
    return hits / (len(queries) * k), qps


# -- on-disk form of an index artifact -------------------------------------------------------------
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"  # row i of the index -> the embedding row's identifying columns


def save_index(folder, index, ids) -> None:
    """Write ``index.faiss`` and ``ids.parquet`` (a pyarrow table, one row per index row)."""
    import faiss
    import pyarrow.parquet as pq
    from pathlib import Path

    folder = Path(folder)
    if ids.num_rows != index.ntotal:
        raise VlpipeError(f"id map has {ids.num_rows} rows for an index of {index.ntotal} vectors")
    faiss.write_index(index, str(folder / INDEX_FILE))
    pq.write_table(ids, folder / IDS_FILE, compression="zstd")


def load_index(folder):
    """(faiss index, ids table) from an index artifact folder."""
    import faiss
    import pyarrow.parquet as pq
    from pathlib import Path

    folder = Path(folder)
    return faiss.read_index(str(folder / INDEX_FILE)), pq.read_table(folder / IDS_FILE)
