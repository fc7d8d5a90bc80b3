"""Benchmark `vlpipe retrieve`: per-query latency (encode, FAISS search, ITM rerank) with and without rerank.

Without ``--index`` it builds everything in a temporary artifacts root first, with the real stages:
a synthetic world (``--images`` pictures), ingest, tokenizer, a short ``albef-tiny`` pre-training
(``--steps``), ``vlpipe embed`` and ``vlpipe index build``. Then, in this process, it opens the index
with :class:`vlpipe.retrieval.search.Retriever` (model loaded once, as a server would) and times
``--queries`` single-text queries for each rerank depth in ``--rerank`` (0 = ITC only), after a
warm-up. Reported per query: mean and p95 milliseconds of each step. A last line times the same
queries sent as one batch (the rerank batched across queries) for the first non-zero depth.

    python benchmarks/bench_retrieve.py [--images 300] [--steps 10] [--queries 40] [--rerank 0,16,64,128]
    python benchmarks/bench_retrieve.py --index NAME --root artifacts [--checkpoint CK]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = ("encode_ms", "search_ms", "rerank_ms", "total_ms")
RERANK_PARTS = ("load_ms", "image_encode_ms", "itm_ms")  # what rerank_ms is made of


def vlpipe(root: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "vlpipe.stages.cli", "--root", str(root), *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def build_world(root: Path, images: int, size: int, steps: int, batch: int, config: list[str]) -> str:
    """Synth -> dataset -> tokenizer -> checkpoint -> embeddings -> index; returns the index name."""
    raw = root / "raw" / "bench"
    stages = [
        ("synth", ["synth", "--out", raw, "--images", images, "--size", size, "--seed", 0]),
        ("ingest", ["ingest", "karpathy", raw / "dataset_coco.json", "--images", raw, "--out", "bench"]),
        ("tokenizer", ["tokenizer", "train", "--data", "bench", "--vocab", 500, "--min-frequency", 1, "--out", "bench-wp"]),
        ("pretrain", ["pretrain", "--shards", "bench", "--tokenizer", "bench-wp", "--out", "bench-ck", "--steps", steps,
                      "--batch-size", batch, "--workers", 0, "--eval-split", "", *config]),
        ("embed", ["embed", "--checkpoint", "bench-ck", "--data", "bench", "--out", "bench-emb", "--split", "all",
                   "--modality", "image", "--workers", 0]),
        ("index", ["index", "build", "--embeddings", "bench-emb", "--out", "bench-images", "--modality", "image"]),
    ]
    for label, args in stages:
        t0 = time.perf_counter()
        vlpipe(root, *args)
        print(f"  {label:10s} {time.perf_counter() - t0:6.1f} s", flush=True)
    return "bench-images"


def query_texts(retriever, n: int) -> list[str]:
    """Captions of the index's dataset (else generic phrases) as realistic queries."""
    if retriever.dataset is not None:
        import pyarrow.parquet as pq

        caps: list[str] = []
        for f in sorted(retriever.dataset.path.glob("part-*.parquet")):
            caps += pq.read_table(f, columns=["caption"]).column(0).to_pylist()
            if len(caps) >= 50 * n:
                break
        rng = np.random.default_rng(0)
        return [caps[i] for i in rng.choice(len(caps), size=min(n, len(caps)), replace=False)]
    base = ["a dog on the beach", "a red car on the street", "two cats on a sofa", "a house next to a tree"]
    return [base[i % len(base)] for i in range(n)]


def stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(np.percentile(a, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, help="artifacts root (default: a temporary folder)")
    ap.add_argument("--index", help="existing index artifact (skips the build)")
    ap.add_argument("--checkpoint", help="checkpoint for the queries (default: the index's lineage)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--size", type=int, default=64, help="synthetic image size (pixels)")
    ap.add_argument("--steps", type=int, default=10, help="pre-training steps of the built checkpoint")
    ap.add_argument("--batch-size", type=int, default=16, help="pre-training batch size")
    ap.add_argument("--set", action="append", default=[], help="config override for the built checkpoint (repeatable)")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rerank", default="0,16,64,128", help="rerank depths to time (comma separated)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="vlpipe-bench-retrieve-")
        root = Path(tmp.name) / "artifacts"
    try:
        index = args.index
        if index is None:
            print(f"building a {args.images}-image world, albef-tiny x {args.steps} steps, under {root}")
            config = [x for s in args.set for x in ("--set", s)]
            index = build_world(root, args.images, args.size, args.steps, args.batch_size, config)
        run(root, index, args)
    finally:
        if tmp is not None:
            tmp.cleanup()


def run(root: Path, index: str, args) -> None:
    import torch

    from vlpipe.retrieval.search import Retriever

    r = Retriever.open(index, root, checkpoint=args.checkpoint, device=args.device)
    depths = [int(x) for x in args.rerank.split(",") if x.strip()]
    queries = query_texts(r, args.queries + args.warmup)
    warm, timed = queries[:args.warmup], queries[args.warmup:]
    m = r.cfg.model
    print(f"index {r.artifact.name}: {len(r):,} images, {r.index.__class__.__name__}; checkpoint {r.checkpoint.name} "
          f"({m.vision.image_size}px ViT depth {m.vision.depth}, text {m.text.text_layers}+{m.text.fusion_layers} layers, "
          f"width {m.text.width}); device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cpus")
    print(f"{len(timed)} single-text queries per row after {len(warm)} warm-up, k={args.k}; milliseconds per query")
    header = (f"{'rerank K':>9} | " + " | ".join(f"{s.removesuffix('_ms'):>15}" for s in STEPS)
              + " | rerank = load + image encode + ITM (means)")
    print(header)
    print(f"{'':>9} | " + " | ".join(f"{'mean':>7} {'p95':>7}" for _ in STEPS) + " |")
    print("-" * len(header))
    for depth in depths:
        if depth > len(r):
            print(f"{depth:>9} | skipped: the index holds {len(r)} images")
            continue
        for q in warm:
            r.search_texts([q], args.k, depth)
        rec: dict[str, list[float]] = {s: [] for s in STEPS + RERANK_PARTS}
        for q in timed:
            b = r.search_texts([q], args.k, depth)
            for s in STEPS + RERANK_PARTS:
                rec[s].append(b.timing_ms.get(s, 0.0))
        cells = []
        for s in STEPS:
            mean, p95 = stats(rec[s])
            cells.append(f"{mean:7.1f} {p95:7.1f}")
        parts = " + ".join(f"{np.mean(rec[s]):.1f}" for s in RERANK_PARTS) if depth else "-"
        print(f"{depth:>9} | " + " | ".join(cells) + f" | {parts}", flush=True)
    batched = [d for d in depths if 0 < d <= len(r)]
    if batched:
        d = batched[0]
        t0 = time.perf_counter()
        b = r.search_texts(timed, args.k, d)
        wall = (time.perf_counter() - t0) * 1000
        per = {s: b.timing_ms.get(s, 0.0) / len(timed) for s in STEPS}
        print(f"batch of {len(timed)} queries, rerank {d}: " + ", ".join(
            f"{s.removesuffix('_ms')} {v:.1f}" for s, v in per.items()) + f" ms/query (wall {wall / len(timed):.1f})")


if __name__ == "__main__":
    main()
