"""Training reports: metrics as Parquet, loss curves as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

METRICS = "metrics.parquet"
CURVES = "loss_curves.png"


def write_metrics(rows: list[dict], folder: Path) -> Path:
    """All rows so far, written atomically (columns are the union of the rows' keys)."""
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    table = pa.table({k: [r.get(k) for r in rows] for k in keys}) if rows else pa.table({"step": pa.array([], pa.int64())})
    path = folder / METRICS
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read_metrics(folder: Path) -> list[dict]:
    path = Path(folder) / METRICS
    return pq.read_table(path).to_pylist() if path.exists() else []


def plot_losses(rows: list[dict], path: Path, title: str = "training losses") -> Path | None:
    """One line per ``loss*`` column against step (smoothed lightly); returns None without rows."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for k in keys:
        ys = [r.get(k) for r in rows]
        smooth, acc = [], None
        for y in ys:
            acc = y if acc is None else 0.9 * acc + 0.1 * y
            smooth.append(acc)
        ax.plot(steps, smooth, label=k, linewidth=2 if k == "loss" else 1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (EMA 0.9)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
