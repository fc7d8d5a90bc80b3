"""Benchmark FAISS layouts as `vlpipe index build` makes them: flat, HNSW, IVF-PQ.

For each size, generates L2-normalised 256-d float32 vectors (a mixture of Gaussian clusters plus
uniformly random directions) and held-out queries from the same distribution, then for each kind
measures build time (train + add, through ``vlpipe.retrieval.index.build_index`` in 64k batches),
queries/s (all queries in one ``search`` call, best of ``--repeat``), recall@10 against exact
search, and the serialized index size. Ratios are against the flat index of the same run.

IVF-PQ uses ``choose_layout(..., "ivfpq")`` with polysemous training off (``np``, as the stage
does); its training sample is capped at ``--train-cap`` vectors (faiss's PQ k-means would
subsample to 65,536 anyway) and the table says how many were used.

    python benchmarks/bench_index.py [--sizes 100000 1000000] [--dim 256] [--queries 1000]
                                     [--kinds flat hnsw ivfpq] [--train-cap 40000] [--gpu auto|no]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

BATCH = 65_536


def make_vectors(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray, random_frac: float = 0.25):
    """``n`` unit vectors: (1 - random_frac) around ``centres`` (noisy clusters), the rest uniform
    on the sphere (for those, neighbours in 256-d are barely nearer than anything else: the hard
    case for every approximate index)."""
    out = np.empty((n, dim), dtype=np.float32)
    is_random = np.zeros(n, dtype=bool)
    for lo in range(0, n, BATCH):
        m = min(BATCH, n - lo)
        k = int(round(m * (1 - random_frac)))
        which = rng.integers(0, len(centres), k)
        # noise of norm ~0.3-0.8 around unit centres: members of a cluster have cosine ~0.6-0.9
        spread = rng.uniform(0.3, 0.8, size=(k, 1)).astype(np.float32) / np.float32(np.sqrt(dim))
        block = np.empty((m, dim), dtype=np.float32)
        block[:k] = centres[which] + spread * rng.standard_normal((k, dim), dtype=np.float32)
        block[k:] = rng.standard_normal((m - k, dim), dtype=np.float32)
        flags = np.arange(m) >= k
        perm = rng.permutation(m)
        block, flags = block[perm], flags[perm]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:lo + m] = block
        is_random[lo:lo + m] = flags
    return out, is_random


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def timed_search(index, queries: np.ndarray, k: int, repeat: int) -> tuple[np.ndarray, np.ndarray, float]:
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        d, i = index.search(queries, k)
        s = time.perf_counter() - t0
        best = s if best is None else min(best, s)
    return d, i, len(queries) / best


def recalls(x: np.ndarray, queries: np.ndarray, truth_s: np.ndarray, truth_i: np.ndarray, got: np.ndarray,
            q_random: np.ndarray) -> dict[str, float]:
    """Tie-aware recall (a returned row is a hit when its exact score reaches the exact k-th best
    score, so ties between near-identical vectors are not misses), overall and for clustered /
    uniformly random queries apart, and the plain id-overlap recall."""
    k = truth_i.shape[1]
    safe = np.where(got >= 0, got, 0)
    exact = np.einsum("qd,qkd->qk", queries, x[safe])
    hits = ((got >= 0) & (exact >= truth_s[:, -1:] - 1e-5)).mean(axis=1)
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth_i, got))
    return {"recall": float(hits.mean()), "recall_ids": overlap / (len(queries) * k),
            "recall_clustered": float(hits[~q_random].mean()) if (~q_random).any() else float("nan"),
            "recall_random": float(hits[q_random].mean()) if q_random.any() else float("nan")}


def run_size(n: int, args, gpus: int) -> list[dict]:
    import faiss

    from vlpipe.retrieval.index import build_index, choose_layout, without_polysemous

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.perf_counter()
    x, _ = make_vectors(n, args.dim, rng, centres)
    queries, q_random = make_vectors(args.queries, args.dim, rng, centres)
    print(f"\n== {n:,} x {args.dim}-d vectors ({x.nbytes / 2**20:,.0f} MB), {args.queries} held-out queries "
          f"(generated in {time.perf_counter() - t0:.1f}s)", flush=True)

    def batches():
        return (x[lo:lo + BATCH] for lo in range(0, n, BATCH))

    budget = int(args.memory_budget * 2**30)
    rows = []
    truth = None
    devices = ["cpu"] + (["gpu"] if gpus else [])
    for device in devices:
        for kind in args.kinds:
            if device == "gpu" and kind == "hnsw":
                continue  # faiss has no GPU HNSW; the stage builds it on CPU
            layout = without_polysemous(choose_layout(n, args.dim, budget, kind))
            train = None
            if layout.train_rows:
                used = min(layout.train_rows, args.train_cap, n)
                layout = dataclasses.replace(layout, train_rows=used)
                train = x[np.sort(rng.choice(n, used, replace=False))]
            note = f"train {layout.train_rows:,} (layout wanted {choose_layout(n, args.dim, budget, kind).train_rows:,})" \
                if layout.train_rows else ""
            print(f"  {device} {kind:6s} {layout.factory:22s} building... {note}", flush=True)
            t0 = time.perf_counter()
            index = build_index(layout, args.dim, batches, train, use_gpu=(device == "gpu"))
            build_s = time.perf_counter() - t0
            searcher = index
            if device == "gpu":
                searcher = faiss.index_cpu_to_all_gpus(index)
                if layout.nprobe:
                    faiss.GpuParameterSpace().set_index_parameter(searcher, "nprobe", layout.nprobe)
            d, got, qps = timed_search(searcher, queries, args.k, args.repeat)
            if truth is None:
                if kind != "flat" or device != "cpu":
                    exact = faiss.IndexFlatIP(args.dim)
                    exact.add(x)
                    d, got_exact, _ = timed_search(exact, queries, args.k, 1)
                    truth = (d, got_exact)
                else:
                    truth = (d, got)
            rec = recalls(x, queries, truth[0], truth[1], got, q_random)
            row = {"n": n, "device": device, "kind": kind, "factory": layout.factory, "train": layout.train_rows,
                   "build_s": build_s, "qps": qps, **rec,
                   "mb": index_bytes(index) / 2**20, "nprobe": layout.nprobe, "ef": layout.ef_search}
            rows.append(row)
            print(f"  {device} {kind:6s} {layout.factory:22s} build {build_s:8.2f}s  {qps:10,.0f} q/s  "
                  f"recall@{args.k} {row['recall']:.4f} (clustered {row['recall_clustered']:.4f}, "
                  f"random {row['recall_random']:.4f}, ids {row['recall_ids']:.4f})  {row['mb']:8.1f} MB", flush=True)
            del index, searcher
    return rows


def print_table(rows: list[dict], k: int) -> None:
    flat = {(r["n"], r["device"]): r for r in rows if r["kind"] == "flat"}
    head = (f"{'vectors':>10} {'dev':3} {'kind':6} {'factory':22} {'search params':14} {'train':>7} "
            f"{'build s':>9} {'x flat':>7} {'queries/s':>10} {'x flat':>7} {f'R@{k}':>7} {'R clus':>7} {'R rand':>7} "
            f"{'R ids':>7} {'MB':>8}")
    print("\n" + head)
    print("-" * len(head))
    for r in rows:
        f = flat.get((r["n"], r["device"])) or flat.get((r["n"], "cpu"))
        params = f"nprobe={r['nprobe']}" if r["nprobe"] else (f"efSearch={r['ef']}" if r["ef"] else "exact")
        b_ratio = f"{r['build_s'] / f['build_s']:.1f}" if f and f["build_s"] > 0 else "-"
        q_ratio = f"{r['qps'] / f['qps']:.1f}" if f else "-"
        print(f"{r['n']:>10,} {r['device']:3} {r['kind']:6} {r['factory']:22} {params:14} {r['train']:>7,} "
              f"{r['build_s']:>9.2f} {b_ratio:>7} {r['qps']:>10,.0f} {q_ratio:>7} {r['recall']:>7.4f} "
              f"{r['recall_clustered']:>7.4f} {r['recall_random']:>7.4f} {r['recall_ids']:>7.4f} {r['mb']:>8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"], choices=["flat", "hnsw", "ivfpq"])
    ap.add_argument("--clusters", type=int, default=1000, help="Gaussian clusters in the clustered part")
    ap.add_argument("--train-cap", type=int, default=40_000, help="most vectors to train IVF-PQ on")
    ap.add_argument("--memory-budget", type=float, default=4.0, help="GB, for choosing the PQ code size")
    ap.add_argument("--repeat", type=int, default=2, help="searches per index (best is reported)")
    ap.add_argument("--gpu", choices=["auto", "no"], default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import faiss

    gpus = faiss.get_num_gpus() if args.gpu == "auto" and hasattr(faiss, "get_num_gpus") else 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, {os.cpu_count()} CPUs "
          f"(load {load:.1f}), {gpus} GPU(s), Python {sys.version.split()[0]}; "
          f"k={args.k}, IVF-PQ training capped at {args.train_cap:,} vectors")
    rows = []
    t0 = time.perf_counter()
    for n in args.sizes:
        rows += run_size(n, args, gpus)
    print_table(rows, args.k)
    print(f"\nR@{args.k}: share of returned rows whose exact score reaches the exact {args.k}-th best, over all "
          f"queries / clustered queries (R clus) / uniformly random queries (R rand); R ids: plain id overlap. "
          f"Queries are held out, not stored vectors. Total {time.perf_counter() - t0:.0f}s.")


if __name__ == "__main__":
    main()
