"""`vlpipe rerank`: ITM-rescore a table of (query, candidate image) rows into a results artifact."""

from __future__ import annotations

from pathlib import Path

import typer

from vlpipe.artifacts import Artifact, ArtifactBuilder, artifact_path, resolve
from vlpipe.errors import InputError
from vlpipe.retrieval.rerank import DEFAULT_RERANK_SCORE, check_mode

from ._common import RichProgress, command_line, console, err_console, root_of, user_errors

app = typer.Typer(help="Rerank retrieval candidates with the ITM head.")

RESULTS_FILE = "results.parquet"


def _candidates(ref: str, root: Path) -> tuple[Path, Artifact | None]:
    """A Parquet file, or a results artifact (its single Parquet table, e.g. `vlpipe retrieve --queries`)."""
    p = Path(ref)
    if p.is_file():
        if p.suffix != ".parquet":
            raise InputError(p, "not a Parquet file", "pass a .parquet table or a results artifact")
        return p, None
    art = resolve(ref, "results", root)
    tables = sorted(art.path.glob("*.parquet"))
    if len(tables) != 1:
        raise InputError(art.path, f"holds {len(tables)} Parquet tables, not one", "pass the file itself")
    return tables[0], art


@app.callback(invoke_without_command=True)
def rerank(
    ctx: typer.Context,
    candidates: str = typer.Option(..., "--candidates", help="Parquet table (query, image_id[, itc, image_path]) or a results artifact of `vlpipe retrieve --queries`."),
    out: str = typer.Option(..., "--out", help="Name of the results artifact to write."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Checkpoint whose ITM head rescores (default: from the candidates artifact's lineage)."),
    data: str = typer.Option(None, "--data", help="Dataset holding the image bytes (default: image_path column, or the candidates' lineage)."),
    rerank_score: str = typer.Option(DEFAULT_RERANK_SCORE, "--rerank-score", help="itm (ALBEF paper: ITM alone), itm+itc (LAVIS: plus the itc column) or itm+itc/temp (plus itc / the model's temperature)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per encoder batch and (query, image) pairs per ITM batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
) -> None:
    """Rescore every (query, image) row with ITM and rank each query's candidates by the rerank score.

    Writes results.parquet: the input columns plus itm (log-odds of a match), p_match, score,
    rank (1-based within the query) and itc_rank when the table has an itc column.
    """
    import pyarrow.parquet as pq

    from vlpipe.retrieval.search import ImageSource, find_in_lineage, rerank_table
    from vlpipe.train.distributed import pick_device
    from vlpipe.train.pretrain import load_checkpoint

    root = root_of(ctx)
    with user_errors():
        check_mode(rerank_score)
        path, cand_art = _candidates(candidates, root)
        notes: list[str] = []
        if checkpoint is not None:
            ck = resolve(checkpoint, "checkpoint", root)
        else:
            ck = find_in_lineage(cand_art, "checkpoint", root, notes) if cand_art is not None else None
            if ck is None:
                raise InputError("--checkpoint", "required (the candidates record no checkpoint in their lineage)")
        if data is not None:
            ds = resolve(data, "dataset", root)
        else:
            ds = find_in_lineage(cand_art, "dataset", root, notes) if cand_art is not None else None
        for note in notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        table = pq.read_table(path)
        dev = pick_device(device)
        model, cfg, tokenizer = load_checkpoint(ck.path, dev)
        params = {"candidates": str(path), "checkpoint": ck.name, "data": ds.name if ds else None,
                  "rerank_score": rerank_score, "batch_size": batch_size, "device": dev}
        inputs = [ck] + ([ds] if ds is not None else []) + ([cand_art] if cand_art is not None else [])
        with ArtifactBuilder(artifact_path(root, "results", out), "results", params=params, inputs=inputs,
                             command=command_line(), overwrite=overwrite) as b:
            with RichProgress(transient=True) as progress:
                result = rerank_table(table, model, cfg, tokenizer, ImageSource(ds), rerank_score, batch_size,
                                      dev, progress=progress)
            pq.write_table(result, b.dir / RESULTS_FILE)
            n_queries = len(set(result.column("query").to_pylist()))
            art = b.publish({"queries": n_queries, "rows": result.num_rows})
    console.print(f"reranked {result.num_rows} candidates of {n_queries} queries ({rerank_score}) -> "
                  f"{art.path / RESULTS_FILE}", highlight=False)
