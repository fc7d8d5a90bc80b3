"""`vlpipe index build|info`: FAISS indexes over an embeddings artifact, with measured recall."""

from __future__ import annotations

import dataclasses
import time
from enum import Enum

import numpy as np
import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path, resolve
from vlpipe.errors import ArtifactError, VlpipeError
from vlpipe.progress import Progress
from vlpipe.retrieval import embed as emb
from vlpipe.retrieval import index as idx

from ._common import RichProgress, command_line, console, human_size, root_of, user_errors

app = typer.Typer(help="Build and inspect FAISS indexes over embeddings.", no_args_is_help=True)

BATCH_ROWS = 65_536


class IndexModality(str, Enum):
    image = "image"
    text = "text"


class IndexKind(str, Enum):
    auto = "auto"
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


@app.command("build")
def build(
    ctx: typer.Context,
    embeddings: str = typer.Option(..., "--embeddings", help="Embeddings artifact (name or path)."),
    out: str = typer.Option(..., "--out", help="Name of the index artifact to write."),
    modality: IndexModality = typer.Option(IndexModality.image, "--modality", help="Which vectors to index."),
    kind: IndexKind = typer.Option(IndexKind.auto, "--kind", help="auto picks from rows and --memory-budget; or force flat, hnsw, ivfpq."),
    memory_budget: str = typer.Option("4GB", "--memory-budget", help="Memory the index may take, e.g. 4GB or 512MB."),
    metric: str = typer.Option("ip", "--metric", help="Similarity; only ip (inner product = cosine on the normalised vectors)."),
    eval_queries: int = typer.Option(1000, "--eval-queries", help="Stored vectors sampled as queries to measure recall@10 against exact search (0: skip)."),
    train_rows: int = typer.Option(0, "--train-rows", help="Vectors sampled to train IVF-PQ (0: the layout's choice, up to 64 per IVF list)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training and query samples."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index artifact of that name."),
) -> None:
    """Build a FAISS index (index_factory) over one modality of an embeddings artifact.

    Vectors stream from the Parquet shards in batches; IVF-PQ trains on a seeded random sample.
    Recall@10 is measured against exact search, using --eval-queries stored vectors as queries.
    """
    root = root_of(ctx)
    with user_errors():
        if metric.lower() != "ip":
            raise VlpipeError(
                f"--metric {metric}: only 'ip' is supported (embeddings are L2-normalised, so inner "
                "product is cosine similarity and ranks like L2 distance)"
            )
        if eval_queries < 0 or train_rows < 0:
            raise VlpipeError("--eval-queries and --train-rows must be >= 0")
        budget = idx.parse_bytes(memory_budget)
        src = resolve(embeddings, "embeddings", root)
        files = emb.embedding_files(src.path, modality.value)
        if not files:
            raise ArtifactError(f"{src.path}: no {modality.value} embeddings (it was built with "
                                f"--modality {src.manifest.params.get('modality', '?')}); pick the other --modality")
        rows, dim, layout = plan_index(src, files, modality.value, kind.value, budget, train_rows)
        with RichProgress() as progress:
            progress.note(f"{layout.factory}: {layout.reason}")
            art = build_index_artifact(root, src, files, out, modality.value, kind.value, budget, eval_queries,
                                       seed, overwrite, progress, rows, dim, layout)
    _show(art)


def plan_index(src, files, modality: str, kind: str, budget: int, train_rows: int = 0) -> tuple[int, int, idx.Layout]:
    """Rows, dimension and the FAISS layout for one modality of an embeddings artifact."""
    rows = emb.count_rows(files)
    dim = emb.vector_dim(files)
    if rows == 0:
        raise ArtifactError(f"{src.path}: the {modality} embeddings have no rows")
    layout = idx.without_polysemous(idx.choose_layout(rows, dim, budget, kind))
    if train_rows and layout.train_rows:
        layout = dataclasses.replace(layout, train_rows=min(rows, train_rows))
    if "PQ" in layout.factory and layout.train_rows < idx.PQ_MIN_TRAIN:
        have = f"the {modality} embeddings have {rows}" if rows < idx.PQ_MIN_TRAIN else f"--train-rows is {train_rows}"
        raise VlpipeError(f"--kind {kind}: {layout.factory} needs at least {idx.PQ_MIN_TRAIN} vectors to train "
                          f"its 8-bit PQ codes, {have} (use --kind flat or hnsw for small sets)")
    return rows, dim, layout


def build_index_artifact(root, src, files, out, modality, kind, budget, eval_queries, seed, overwrite,
                         progress: Progress, rows: int, dim: int, layout: idx.Layout):
    """Sample, build, measure and publish; returns the index Artifact."""
    params = {"embeddings": src.name, "embeddings_content_id": src.manifest.content_id, "modality": modality,
              "kind": kind, "memory_budget": budget, "metric": "ip", "eval_queries": eval_queries, "seed": seed,
              "train_rows": layout.train_rows}
    with ArtifactBuilder(artifact_path(root, "index", out), "index", params=params, inputs=[src],
                         command=command_line(), overwrite=overwrite) as builder:
        t0 = time.perf_counter()
        train_rows = idx.sample_rows(rows, layout.train_rows, seed, "train") if layout.train_rows else None
        query_rows = idx.sample_rows(rows, eval_queries, seed, "queries")
        wanted = np.concatenate([train_rows if train_rows is not None else np.zeros(0, np.int64), query_rows])
        sample = emb.take_vectors(files, wanted, BATCH_ROWS) if len(wanted) else np.zeros((0, dim), np.float32)
        train = sample[: len(wanted) - len(query_rows)] if train_rows is not None else None
        queries = sample[len(wanted) - len(query_rows):]
        progress.start("add vectors", total=rows, unit="vectors")
        try:
            index = idx.build_index(layout, dim, lambda: emb.iter_vectors(files, BATCH_ROWS), train,
                                    on_batch=lambda n: progress.advance("add vectors", n))
        except RuntimeError as e:  # faiss reports bad training sets etc. as RuntimeError
            detail = str(e).strip().splitlines()[-1].rsplit("Error: ", 1)[-1][:200] if str(e).strip() else "?"
            raise VlpipeError(f"{layout.factory} on {rows:,} vectors failed in faiss: {detail} "
                              "(try --kind flat or hnsw for small sets)") from None
        progress.finish("add vectors")
        build_seconds = time.perf_counter() - t0
        stats = {
            "factory": layout.factory, "reason": layout.reason, "rows": rows, "dim": dim, "metric": "ip",
            "modality": modality, "nprobe": layout.nprobe or None, "ef_search": layout.ef_search or None,
            "train_rows": 0 if train is None else len(train), "build_seconds": round(build_seconds, 3),
            "vectors_per_s": round(rows / max(1e-9, build_seconds), 1),
        }
        if len(queries):
            progress.start("recall vs exact", total=None, unit="queries")
            ev = idx.evaluate_index(index, queries, lambda: emb.iter_vectors(files, BATCH_ROWS), k=10)
            progress.advance("recall vs exact", len(queries))
            progress.finish("recall vs exact")
            stats.update({
                "eval_queries": ev["queries"], "recall_at_10": round(ev["recall"], 4),
                "recall_at_10_ids": round(ev["recall_ids"], 4), "qps": round(ev["qps"], 1),
                "eval_k": ev["k"],
            })
        stats["lineage"] = _lineage(src)
        idx.save_index(builder.dir, index, emb.read_ids(files))
        return builder.publish(stats)


def _lineage(src) -> dict[str, str | None]:
    """embeddings -> checkpoint -> dataset names, from the embeddings manifest."""
    by_kind = {i["kind"]: i["name"] for i in src.manifest.inputs}
    return {"embeddings": src.name, "checkpoint": by_kind.get("checkpoint"), "dataset": by_kind.get("dataset")}


@app.command("info")
def info(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Index artifact (name or path)."),
) -> None:
    """Show an index artifact: layout, size, measured recall@10 and speed, lineage."""
    root = root_of(ctx)
    with user_errors():
        art = resolve(name, "index", root)
    _show(art)


def _show(art) -> None:
    m = art.manifest
    s = m.stats
    files = {f.path: f.bytes for f in m.files}
    lineage = s.get("lineage") or {}  # written by every `index build`
    t = Table(title=f"index {art.name}")
    t.add_column("field")
    t.add_column("value", justify="right")

    def row(label: str, value) -> None:
        t.add_row(label, "-" if value is None else str(value))

    row("factory", s.get("factory"))
    row("why", s.get("reason"))
    row("modality", s.get("modality"))
    row("rows", f"{s['rows']:,}" if "rows" in s else None)
    row("dim", s.get("dim"))
    row("metric", s.get("metric"))
    if s.get("nprobe"):
        row("nprobe", s["nprobe"])
    if s.get("ef_search"):
        row("efSearch", s["ef_search"])
    row("train rows", s.get("train_rows"))
    row("index on disk", human_size(files.get(idx.INDEX_FILE)))
    row("ids on disk", human_size(files.get(idx.IDS_FILE)))
    row("recall@10 vs exact", f"{s['recall_at_10']:.4f} ({s['eval_queries']} stored-vector queries)"
        if "recall_at_10" in s else "not measured")
    row("queries/s", f"{s['qps']:,.0f}" if "qps" in s else None)
    row("build time", f"{s['build_seconds']:.2f} s" if "build_seconds" in s else None)
    row("lineage", " -> ".join(f"{k} {v}" for k, v in lineage.items() if v))
    row("created", m.created)
    console.print(t)
    console.print(f"-> {art.path}")
