"""FAISS indexes through ``index_factory``: choosing a layout, building in batches, measuring recall.

``choose_layout`` reasons the way autofaiss does: exact search while the flat index is small and
fits the memory budget; HNSW while its graph plus full vectors fit; otherwise IVF with product
quantisation sized so that the codes fit the budget. Vectors are L2-normalised, so inner product
is cosine similarity.
"""

from __future__ import annotations

import dataclasses
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
        f"IVF{nlist},PQ{m}x8np",  # np: no polysemous training (slow, unused)
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

    ivf = faiss.try_extract_index_ivf(index) if layout.nprobe else None
    if ivf is not None:
        ivf.nprobe = layout.nprobe
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


# -- recall against exact search without holding every vector (added for `vlpipe index build`) ----
PQ_MIN_TRAIN = 256  # 8-bit PQ codes: k-means with 256 centroids per sub-quantiser


def sample_rows(rows: int, n: int, seed: int = 0, salt: str = "") -> np.ndarray:
    """``min(n, rows)`` distinct row numbers drawn with a seeded generator, sorted."""
    rng = np.random.default_rng([seed, sum(map(ord, salt))])
    n = max(0, min(n, rows))
    return np.sort(rng.choice(rows, size=n, replace=False)) if n else np.zeros(0, dtype=np.int64)


def exact_search_streaming(
    queries: np.ndarray, batches: Iterable[np.ndarray], k: int, block: int = 8192,
    extra_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Exact inner-product top-k of ``queries`` over vectors arriving in ``batches`` (row order).

    Returns (scores [q, k] descending, row ids [q, k], and when ``extra_ids`` [q, m] is given the
    exact score of each of those rows for its query, NaN where an id is -1). Memory is
    O(q * block) whatever the number of vectors.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    nq = len(q)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    extra = None if extra_ids is None else np.full(extra_ids.shape, np.nan, dtype=np.float32)
    offset = 0
    for batch in batches:
        for lo in range(0, len(batch), block):
            b = np.ascontiguousarray(batch[lo:lo + block], dtype=np.float32)
            s = q @ b.T
            base = offset + lo
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if s.shape[1] > kk else np.broadcast_to(
                np.arange(s.shape[1]), (nq, s.shape[1]))
            cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, part + base], axis=1)
            keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            best_s = np.take_along_axis(cand_s, keep, axis=1)
            best_i = np.take_along_axis(cand_i, keep, axis=1)
            if extra is not None:
                r, c = np.nonzero((extra_ids >= base) & (extra_ids < base + len(b)))
                extra[r, c] = s[r, extra_ids[r, c] - base]
        offset += len(batch)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1), extra


def evaluate_index(index, queries: np.ndarray, batches: Callable[[], Iterable[np.ndarray]], k: int = 10,
                   tol: float = 1e-5) -> dict[str, float]:
    """Recall@k of ``index`` against exact search, and its queries/s, in one streaming pass.

    The index is searched first (timed, all queries in one call: throughput). Then one pass over
    ``batches()`` (the indexed vectors, in index row order) computes the exact top-k and the exact
    score of every row the index returned. A returned row counts as a hit when its exact score is
    at least the exact k-th best score (minus ``tol``), so ties between equal vectors (repeated
    captions) do not count as misses. ``recall_ids`` is the plain id-overlap version.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    t0 = time.perf_counter()
    _, got = index.search(queries, k)
    seconds = max(1e-9, time.perf_counter() - t0)
    scores, truth, got_scores = exact_search_streaming(queries, batches(), k, extra_ids=got)
    kth = scores[:, -1:]
    hits = (got >= 0) & (got_scores >= kth - tol)
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, got))
    n = max(1, len(queries) * k)
    return {"recall": float(hits.sum() / n), "recall_ids": overlap / n, "k": k, "queries": len(queries),
            "qps": len(queries) / seconds, "search_seconds": seconds}


def without_polysemous(layout: Layout) -> Layout:
    """``layout`` with faiss's polysemous PQ training turned off (factory suffix ``np``).

    ``index_factory`` turns polysemous training on for ``PQ`` codes unless the name ends in ``np``;
    it re-orders the codebooks for Hamming-distance pre-filtering (``polysemous_ht``), which
    vlpipe never uses, and it dominates training time (minutes per thousand training vectors
    on a small CPU). Search results and recall do not depend on it.
    """
    if "PQ" not in layout.factory or layout.factory.endswith("np"):
        return layout
    return dataclasses.replace(layout, factory=layout.factory + "np")
