"""`vlpipe evaluate TASK`: score a checkpoint on a dataset split and write a results artifact.

Every task shares :func:`load_eval_inputs` (checkpoint + dataset + model on a device) and
:func:`write_results` (``metrics.json`` + ``metrics.parquet``, one row per (scoring, metric), with
the checkpoint and dataset as inputs). A new task is one more ``@app.command`` using both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vlpipe.artifacts import Artifact, ArtifactBuilder, artifact_path, resolve
from vlpipe.data.shards import list_shards
from vlpipe.errors import InputError
from vlpipe.retrieval.rerank import DEFAULT_RERANK_SCORE, RERANK_SCORES, check_mode

from ._common import RichProgress, command_line, console, root_of, user_errors

app = typer.Typer(help="Evaluate a checkpoint on a downstream task (retrieval, ...).", no_args_is_help=True)

METRICS_JSON = "metrics.json"
METRICS_PARQUET = "metrics.parquet"


# --------------------------------------------------------------------------------------------------
# Shared by every task
# --------------------------------------------------------------------------------------------------


@dataclass
class EvalInputs:
    checkpoint: Artifact
    dataset: Artifact
    shards: list[Path]
    model: Any
    cfg: Any
    tokenizer: Any
    device: str


def load_eval_inputs(root: Path, checkpoint: str, data: str, device: str = "auto") -> EvalInputs:
    """Resolve the checkpoint and dataset artifacts and load the model in eval mode on ``device``."""
    from vlpipe.train.distributed import pick_device
    from vlpipe.train.pretrain import load_checkpoint

    ck = resolve(checkpoint, "checkpoint", root)
    ds = resolve(data, "dataset", root)
    shards = list_shards(ds.path)
    if not shards:
        raise InputError(ds.path, "dataset has no part-*.parquet shards", "rebuild it with `vlpipe ingest`")
    dev = pick_device(device)
    model, cfg, tokenizer = load_checkpoint(ck.path, dev)
    return EvalInputs(ck, ds, shards, model, cfg, tokenizer, dev)


def write_results(root: Path, name: str, metrics: dict[str, Any], rows: list[dict[str, Any]],
                  inputs: list[Artifact], params: dict[str, Any], overwrite: bool = False,
                  stats: dict[str, Any] | None = None) -> Artifact:
    """Publish a results artifact: ``metrics.json`` (everything) and ``metrics.parquet`` (the rows:
    task, split, scoring, metric, value, headline)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with ArtifactBuilder(artifact_path(root, "results", name), "results", params=params, inputs=inputs,
                         command=command_line(), overwrite=overwrite) as b:
        (b.dir / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        table = pa.Table.from_pylist(rows, schema=pa.schema([
            ("task", pa.string()), ("split", pa.string()), ("scoring", pa.string()),
            ("metric", pa.string()), ("value", pa.float64()), ("headline", pa.bool_()),
        ]))
        pq.write_table(table, b.dir / METRICS_PARQUET)
        return b.publish(stats or {})


# --------------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------------

RECALL_COLUMNS = [("TR@1", "tr_r1"), ("TR@5", "tr_r5"), ("TR@10", "tr_r10"),
                  ("IR@1", "ir_r1"), ("IR@5", "ir_r5"), ("IR@10", "ir_r10"), ("mean", "r_mean")]


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in d.items()}


@app.command("retrieval")
def retrieval(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint artifact (name or path)."),
    data: str = typer.Option(..., "--data", help="Dataset artifact (name or path) holding the split."),
    split: str = typer.Option("test", "--split", help="Dataset split to evaluate."),
    k_test: int = typer.Option(128, "--k-test", help="Candidates per query rescored by ITM (ALBEF: 256 COCO, 128 Flickr)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images/texts per encoder batch and (image, text) pairs per ITM batch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    max_images: int = typer.Option(None, "--max-images", help="Only the first N images of the split (and their captions)."),
    rerank_score: str = typer.Option(DEFAULT_RERANK_SCORE, "--rerank-score",
                                     help="Headline rerank score: itm (ALBEF paper: ITM alone) or itm+itc (LAVIS: plus ITC). Both are reported."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers decoding images."),
    out: str = typer.Option(None, "--out", help="Results artifact name (default <checkpoint>-retrieval-<split>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
) -> None:
    """Image-text retrieval, ALBEF protocol: ITC over all pairs, then each query's top k_test by ITM.

    Reports text retrieval (TR, image -> text) and image retrieval (IR, text -> image) R@1/5/10 and
    their mean, for ITC alone and after the ITM rerank, under both rerank score definitions.
    """
    from vlpipe.retrieval.embed import load_eval_set
    from vlpipe.retrieval.rerank import evaluate_retrieval

    root = root_of(ctx)
    with user_errors():
        check_mode(rerank_score)
        if batch_size < 1:
            raise InputError("--batch-size", f"{batch_size} must be at least 1")
        if max_images is not None and max_images < 1:
            raise InputError("--max-images", f"{max_images} must be at least 1")
        t0 = time.perf_counter()
        inp = load_eval_inputs(root, checkpoint, data, device)
        es = load_eval_set(inp.shards, split, max_images)
        name = out or f"{inp.checkpoint.name}-retrieval-{split}"
        # fail on an existing artifact before spending the compute
        if (artifact_path(root, "results", name) / "manifest.json").exists() and not overwrite:
            raise InputError(artifact_path(root, "results", name), "results artifact already exists",
                             "pass --overwrite or choose another --out")
        with RichProgress(transient=True) as progress:
            ev = evaluate_retrieval(inp.model, inp.tokenizer, es, inp.cfg.model.vision.image_size,
                                    inp.cfg.model.text.max_len, k_test, batch_size, inp.device, workers, progress)
        seconds = dict(ev.seconds, load=round(time.perf_counter() - t0 - ev.seconds["total"], 3))
        metrics = {
            "task": "retrieval", "checkpoint": inp.checkpoint.name, "dataset": inp.dataset.name, "split": split,
            "images": ev.images, "texts": ev.texts, "k_test": k_test, "k_test_i2t": ev.k_i2t, "k_test_t2i": ev.k_t2i,
            "itm_pairs": ev.itm_pairs, "rerank_score": rerank_score,
            "itm_score": "log-odds of a match from the ITM head (ranks as p_itm)",
            "headline": _round(ev.rerank[rerank_score]),
            "itc": _round(ev.itc),
            "rerank": {mode: _round(v) for mode, v in ev.rerank.items()},
            "chance_r1": round(100.0 / ev.images, 4),  # TR and IR alike: 1 / images
            "seconds": seconds,
        }
        rows = [{"task": "retrieval", "split": split, "scoring": "itc", "metric": m, "value": float(v),
                 "headline": False} for m, v in ev.itc.items()]
        for mode in RERANK_SCORES:
            rows += [{"task": "retrieval", "split": split, "scoring": f"rerank:{mode}", "metric": m,
                      "value": float(v), "headline": mode == rerank_score} for m, v in ev.rerank[mode].items()]
        params = {"checkpoint": inp.checkpoint.name, "data": inp.dataset.name, "split": split, "k_test": k_test,
                  "batch_size": batch_size, "max_images": max_images, "rerank_score": rerank_score,
                  "device": inp.device}
        art = write_results(root, name, metrics, rows, [inp.checkpoint, inp.dataset], params, overwrite,
                            stats={"images": ev.images, "texts": ev.texts, **{f"{rerank_score}_r_mean":
                                   round(ev.rerank[rerank_score]["r_mean"], 2)}, "itc_r_mean": round(ev.itc["r_mean"], 2)})
    _print_retrieval(metrics, ev, art)


def _print_retrieval(metrics: dict, ev, art: Artifact) -> None:
    head = metrics["rerank_score"]
    other = [m for m in RERANK_SCORES if m != head][0]
    t = Table(title=f"retrieval: {metrics['checkpoint']} on {metrics['dataset']}/{metrics['split']} "
                    f"({ev.images} images, {ev.texts} texts)")
    t.add_column("scoring", no_wrap=True)
    for label, _ in RECALL_COLUMNS:
        t.add_column(label, justify="right")
    t.add_row("ITC", *(f"{ev.itc[k]:.2f}" for _, k in RECALL_COLUMNS))
    t.add_row(f"ITC+ITM rerank ({head})", *(f"{ev.rerank[head][k]:.2f}" for _, k in RECALL_COLUMNS), style="bold")
    t.add_row(f"ITC+ITM rerank ({other})", *(f"{ev.rerank[other][k]:.2f}" for _, k in RECALL_COLUMNS), style="dim")
    console.print(t)
    if metrics["k_test_i2t"] < metrics["k_test"] or metrics["k_test_t2i"] < metrics["k_test"]:
        console.print(f"k_test {metrics['k_test']} clamped to the split: {metrics['k_test_i2t']} texts per image "
                      f"query, {metrics['k_test_t2i']} images per text query", highlight=False)
    s = metrics["seconds"]
    console.print(f"time: load {s['load']:.1f}s, encode + ITC {s['encode_itc']:.1f}s, ITM rerank "
                  f"{s['itm_rerank']:.1f}s ({ev.itm_pairs} pairs); headline = {head}", highlight=False)
    console.print(f"-> {art.path}", highlight=False)
