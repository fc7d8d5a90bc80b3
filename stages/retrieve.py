"""`vlpipe retrieve`: query an index (text -> image, or image -> text) with optional ITM rerank."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.errors import InputError
from vlpipe.retrieval.rerank import DEFAULT_RERANK_SCORE

from ._common import RichProgress, command_line, console, err_console, root_of, user_errors

app = typer.Typer(help="Search an index by text (or by image) and rerank the top hits with ITM.")

RESULTS_FILE = "results.parquet"


@app.callback(invoke_without_command=True)
def retrieve(
    ctx: typer.Context,
    index: str = typer.Option(..., "--index", help="Index artifact (name or path)."),
    query: str = typer.Option(None, "--query", help="A text query (text -> image)."),
    image: Path = typer.Option(None, "--image", help="An image file as the query (image -> text; needs an index of captions)."),
    queries: Path = typer.Option(None, "--queries", help="A file with one text query per line: batch mode, writes a results artifact."),
    k: int = typer.Option(10, "--k", help="Hits to return per query."),
    rerank: int = typer.Option(None, "--rerank", help="Rescore the top K hits with ITM (default 16; 0 = ITC order only).", show_default=False),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Checkpoint encoding the queries (default: the one that embedded the index, from its lineage)."),
    data: str = typer.Option(None, "--data", help="Dataset holding the image bytes for the rerank (default: from the index lineage)."),
    rerank_score: str = typer.Option(DEFAULT_RERANK_SCORE, "--rerank-score", help="itm (ALBEF paper: ITM alone), itm+itc (LAVIS: plus the ITC cosine) or itm+itc/temp (plus the ITC logit: cosine / the model's temperature)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    out: str = typer.Option(None, "--out", help="Results artifact name for --queries (default <index>-<file name>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images/texts per encoder batch and pairs per ITM batch."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print latency: encode, search and rerank milliseconds."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Retrieve from an index with one of --query TEXT, --image PATH or --queries FILE.

    The query is encoded by the checkpoint that embedded the index (found through the index's
    lineage), FAISS returns the top max(k, rerank) hits by ITC similarity, and the top --rerank
    hits are rescored by the ITM head (image tokens recomputed for just those candidates) and
    re-ordered. Scores: itc = cosine similarity; itm = log-odds of a match (p_match = its sigmoid).
    """
    from vlpipe.retrieval.search import DEFAULT_RERANK_K, Retriever
    from vlpipe.train.distributed import pick_device

    root = root_of(ctx)
    with user_errors():
        given = [n for n, v in (("--query", query), ("--image", image), ("--queries", queries)) if v is not None]
        if len(given) != 1:
            raise InputError("retrieve", f"pass exactly one of --query, --image, --queries (got {', '.join(given) or 'none'})")
        if out is not None and queries is None:
            raise InputError("--out", "only batch mode (--queries FILE) writes an artifact")
        rr = DEFAULT_RERANK_K if rerank is None else rerank
        if queries is not None:
            texts = _read_queries(queries)
        r = Retriever.open(index, root, checkpoint=checkpoint, data=data, device=pick_device(device))
        for note in r.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        if queries is not None:
            _batch(r, texts, queries, k, rr, rerank_score, batch_size, out, overwrite, root, as_json, verbose)
            return
        if query is not None:
            if not query.strip():
                raise InputError("--query", "empty query")
            b = r.search_texts([query], k, rr, rerank_score, batch_size)
        else:
            b = r.search_images([image], k, rr, rerank_score, batch_size)
    _show(r, b, k, rr, rerank_score, as_json, verbose)


def _read_queries(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(path, "queries file not found", "pass a text file with one query per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text", "write one query per line in UTF-8") from None
    texts = [ln.strip() for ln in lines if ln.strip()]
    if not texts:
        raise InputError(path, "no queries (every line is empty)")
    return texts


def _show(r, b, k: int, rerank: int, mode: str, as_json: bool, verbose: bool) -> None:
    hits = b.hits[0]
    if as_json:
        typer.echo(json.dumps({
            "query": b.queries[0], "mode": "text->image" if r.modality == "image" else "image->text",
            "index": r.artifact.name, "checkpoint": r.checkpoint.name, "k": k, "rerank": rerank,
            "rerank_score": mode, "results": [h.to_dict() for h in hits], "timing_ms": b.timing_ms,
        }))
        return
    t = Table(title=f"{b.queries[0]!r} in {r.artifact.name}" + (f" (ITM rerank of top {rerank}, {mode})" if rerank else " (ITC)"))
    t.add_column("rank", justify="right")
    t.add_column("id")
    t.add_column("caption" if r.modality == "text" else "image", overflow="fold")
    t.add_column("ITC", justify="right")
    t.add_column("ITM", justify="right")
    t.add_column("p(match)", justify="right")
    for h in hits:
        what = h.caption if r.modality == "text" else _short(h.image_path) or h.image_id
        t.add_row(str(h.rank), h.id, what, f"{h.itc:.4f}", "" if h.itm is None else f"{h.itm:.3f}",
                  "" if h.itm is None else f"{h.p_match:.3f}")
    console.print(t)
    if verbose:
        _latency(b.timing_ms)


def _short(path: str | None) -> str | None:
    """A path relative to the working folder when that is shorter."""
    if not path:
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive
        return path
    return rel if len(rel) < len(path) else path


def _latency(timing: dict[str, float], per: int = 1) -> None:
    parts = [f"{key.removesuffix('_ms')} {v / per:.1f} ms" for key, v in timing.items() if key != "total_ms"]
    console.print("latency: " + ", ".join(parts) + f"; total {timing.get('total_ms', 0) / per:.1f} ms",
                  highlight=False)


def _batch(r, texts, path: Path, k, rerank, mode, batch_size, out, overwrite, root, as_json, verbose) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlpipe.retrieval.search import RESULTS_SCHEMA, batch_rows

    name = out or f"{r.artifact.name}-{path.stem}"
    params = {"index": r.artifact.name, "checkpoint": r.checkpoint.name, "queries_file": str(path),
              "queries": len(texts), "k": k, "rerank": rerank, "rerank_score": mode, "batch_size": batch_size}
    inputs = [r.artifact, r.checkpoint] + ([r.dataset] if r.dataset is not None and rerank else [])
    timing: dict[str, float] = {}
    with ArtifactBuilder(artifact_path(root, "results", name), "results", params=params, inputs=inputs,
                         command=command_line(), overwrite=overwrite) as b:
        rows, done = [], 0
        with RichProgress(transient=True) as progress:
            for batch in r.search_many(texts, k, rerank, mode, batch_size, progress=progress):
                rows += batch_rows(batch, offset=done)
                done += len(batch.queries)
                for key, v in batch.timing_ms.items():
                    timing[key] = timing.get(key, 0.0) + v
        pq.write_table(pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA), b.dir / RESULTS_FILE)
        per_query = {key: round(v / len(texts), 3) for key, v in timing.items()}
        art = b.publish({"queries": len(texts), "rows": len(rows), "ms_per_query": per_query})
    if as_json:
        typer.echo(json.dumps({"artifact": str(art.path), "queries": len(texts), "rows": len(rows),
                               "ms_per_query": per_query}))
        return
    console.print(f"{len(texts)} queries, {len(rows)} hits -> {art.path / RESULTS_FILE}", highlight=False)
    if verbose:
        console.print("per query:", highlight=False)
        _latency(timing, per=len(texts))
