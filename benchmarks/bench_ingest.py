"""Benchmark `vlpipe ingest karpathy`: rows/s with and without image verification.

Builds (in a temporary folder) a Karpathy-style ``dataset_coco.json`` with 100k captions over
20k small JPEGs (a few distinct images hard-linked under many names), then ingests it in one
fresh child process per configuration (so peak memory is per run) and prints rows/s, the
verify/no-verify time ratio and peak RSS.

    python benchmarks/bench_ingest.py [--images 20000] [--captions-per-image 5] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [
    # (label, verify, store, workers)
    ("no-verify, paths only", False, False, 0),
    ("no-verify, store bytes", False, True, 0),
    ("verify, paths only", True, False, 0),
    ("verify, store bytes", True, True, 0),
    ("verify, paths only, pool 2", True, False, 2),
    ("verify, store bytes, pool 2", True, True, 2),
    ("verify, store bytes, pool 1", True, True, 1),
]


def make_fixture(folder: Path, n_images: int, per_image: int, size: int, distinct: int = 32) -> Path:
    """dataset_coco.json + val2014/ with ``n_images`` different small JPEGs (a few noise textures,
    each with its own randomly placed and coloured rectangle, so no two files share content)."""
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    w, h = size, size * 3 // 4
    bases = [Image.effect_noise((w, h), 20 + i).convert("RGB") for i in range(distinct)]
    img_dir = folder / "val2014"
    img_dir.mkdir(parents=True)
    images = []
    words = "a man woman dog cat red blue small large on the next to with beach street table car tree".split()
    for i in range(n_images):
        name = f"COCO_val2014_{i:012d}.jpg"
        im = bases[i % distinct].copy()
        x, y = rng.randrange(w // 2), rng.randrange(h // 2)
        ImageDraw.Draw(im).rectangle((x, y, x + w // 3, y + h // 3), fill=tuple(rng.randrange(256) for _ in range(3)))
        im.save(img_dir / name, format="JPEG", quality=85)
        split = "train" if i % 10 < 8 else ("val" if i % 10 == 8 else "test")
        sents = [
            {"raw": " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))), "tokens": [], "imgid": i,
             "sentid": i * per_image + k}
            for k in range(per_image)
        ]
        images.append({"filepath": "val2014", "filename": name, "imgid": i, "split": split, "cocoid": i,
                       "sentences": sents, "sentids": [s["sentid"] for s in sents]})
    out = folder / "dataset_coco.json"
    out.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return out


def run_one(dataset: str, root: str, verify: bool, store: bool, workers: int) -> dict:
    """One ingest in this process (called in a fresh child)."""
    from vlpipe.artifacts import ArtifactBuilder, artifact_path
    from vlpipe.data.ingest import ingest
    from vlpipe.data.readers import read_karpathy

    t0 = time.perf_counter()
    records = read_karpathy([dataset])
    t_read = time.perf_counter() - t0
    name = f"bench-{int(verify)}{int(store)}{workers}"
    with ArtifactBuilder(artifact_path(root, "dataset", name), "dataset", resumable=True, overwrite=True) as b:
        stats = ingest(records, b, shard_rows=10_000, store_images=store, verify_images=verify,
                       total=records.total, workers=workers)
        b.publish(stats.to_dict())
    wall = time.perf_counter() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    shutil.rmtree(artifact_path(root, "dataset", name))
    return {"rows": stats.rows, "rejected": stats.rejected, "wall_s": wall, "read_s": t_read,
            "ingest_s": stats.seconds, "bytes": stats.bytes, "peak_rss_mb": self_rss / 1024,
            "worker_peak_rss_mb": child_rss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--captions-per-image", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="image width in pixels (height 3/4 of it)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (best is reported)")
    ap.add_argument("--child", nargs=5, metavar=("DATASET", "ROOT", "VERIFY", "STORE", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        dataset, root, verify, store, workers = args.child
        print(json.dumps(run_one(dataset, root, verify == "1", store == "1", int(workers))))
        return

    with tempfile.TemporaryDirectory(prefix="vlpipe-bench-") as tmp:
        t0 = time.perf_counter()
        dataset = make_fixture(Path(tmp), args.images, args.captions_per_image, args.size)
        n = args.images * args.captions_per_image
        print(f"fixture: {n:,} captions over {args.images:,} JPEGs of {args.size}x{args.size * 3 // 4} "
              f"({time.perf_counter() - t0:.1f}s to build), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        results = {}
        for label, verify, store, workers in CONFIGS:
            best = None
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(dataset), str(Path(tmp) / "artifacts"),
                     str(int(verify)), str(int(store)), str(workers)],
                    check=True, capture_output=True, text=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if best is None or r["wall_s"] < best["wall_s"]:
                    best = r
            assert best["rows"] == n, best
            results[label] = best
            print(f"{label:30s} {n / best['wall_s']:>9,.0f} rows/s  (ingest {n / best['ingest_s']:>9,.0f} rows/s, "
                  f"total {best['wall_s']:5.2f}s, read json {best['read_s']:4.2f}s)  "
                  f"peak RSS {best['peak_rss_mb']:6.0f} MB"
                  + (f" (+ workers {best['worker_peak_rss_mb']:.0f} MB each)" if "pool" in label else "")
                  + f"  output {best['bytes'] / 1e6:6.1f} MB")

        def ratio(a: str, b: str) -> float:
            return results[a]["wall_s"] / results[b]["wall_s"]

        print(f"verify/no-verify time ratio, paths only:  {ratio('verify, paths only', 'no-verify, paths only'):.2f}")
        print(f"verify/no-verify time ratio, store bytes: {ratio('verify, store bytes', 'no-verify, store bytes'):.2f}")
        print(f"pool 2 / in-process (verify, paths only): {ratio('verify, paths only, pool 2', 'verify, paths only'):.2f}")
        print(f"pool 2 / in-process (verify, store bytes): {ratio('verify, store bytes, pool 2', 'verify, store bytes'):.2f}")


if __name__ == "__main__":
    main()
