"""`vlpipe evaluate TASK`: score a checkpoint on a dataset split and write a results artifact.

Every task shares :func:`load_eval_inputs` (checkpoint + dataset + model on a device) and
:func:`write_results` (``metrics.json`` + ``metrics.parquet``, one row per (scoring, metric), with
the checkpoint and dataset as inputs). A new task is one more ``@app.command`` using both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vlpipe.artifacts import Artifact, ArtifactBuilder, artifact_path, resolve
from vlpipe.data.shards import list_shards
from vlpipe.errors import InputError
from vlpipe.retrieval.rerank import DEFAULT_RERANK_SCORE, RERANK_SCORES, check_mode

from ._common import RichProgress, command_line, console, root_of, user_errors

app = typer.Typer(help="Evaluate a checkpoint on a downstream task (retrieval, ve, vqa, nlvr2, grounding).",
                  no_args_is_help=True)

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
    meta: dict[str, Any] = field(default_factory=dict)  # the checkpoint's config.json
    tokenizer_dir: Path | None = None
    task_config: Any = None  # the checkpoint's task settings (e.g. VQAConfig)
    assets: dict[str, Any] = field(default_factory=dict)  # the checkpoint's task files (e.g. answers.json)


def load_eval_inputs(root: Path, checkpoint: str, data: str, device: str = "auto", task: str = "retrieval") -> EvalInputs:
    """Resolve the checkpoint and dataset artifacts, check both fit ``task``, and load the model in
    eval mode on ``device``. Retrieval takes any ALBEF checkpoint (pre-trained, imported, or
    fine-tuned for an ALBEF-shaped task) and a caption dataset; another task takes a checkpoint
    fine-tuned for it and its task table."""
    from vlpipe.data.task_tables import check_task
    from vlpipe.data.tokenizer import load_tokenizer
    from vlpipe.finetune.tasks import get_task, load_task_checkpoint, require_task
    from vlpipe.train.distributed import pick_device

    spec = get_task(task)
    ck = resolve(checkpoint, "checkpoint", root)
    if spec.model_class == "albef":
        require_task(ck.path, ("albef",), f"`evaluate {task}` needs an ALBEF checkpoint (pre-trained, imported "
                                          "or fine-tuned for retrieval or grounding)")
    else:
        require_task(ck.path, (task,), f"`evaluate {task}` needs a checkpoint fine-tuned for it "
                                       f"(`vlpipe finetune {task}`)")
    ds = check_task(resolve(data, "dataset", root), spec.data_task)
    shards = list_shards(ds.path)
    if not shards:
        raise InputError(ds.path, "dataset has no part-*.parquet shards", "rebuild it with `vlpipe ingest`")
    dev = pick_device(device)
    loaded = load_task_checkpoint(ck.path, dev)
    if loaded.tokenizer_dir is None:
        raise InputError(ck.path, "checkpoint has no tokenizer/ folder", "re-import it with --tokenizer")
    return EvalInputs(ck, ds, shards, loaded.model, loaded.cfg, load_tokenizer(loaded.tokenizer_dir), dev,
                      loaded.meta, loaded.tokenizer_dir, loaded.task_config, loaded.assets)


def write_results(root: Path, name: str, metrics: dict[str, Any], rows: list[dict[str, Any]],
                  inputs: list[Artifact], params: dict[str, Any], overwrite: bool = False,
                  stats: dict[str, Any] | None = None, tables: dict[str, Any] | None = None) -> Artifact:
    """Publish a results artifact: ``metrics.json`` (everything) and ``metrics.parquet`` (the rows:
    task, split, scoring, metric, value, headline), plus ``tables`` (file name -> pyarrow Table,
    e.g. per-example predictions)."""
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
        for file_name, extra in (tables or {}).items():
            pq.write_table(extra, b.dir / file_name, compression="zstd")
        return b.publish(stats or {})


def _refuse_existing(root: Path, name: str, overwrite: bool) -> None:
    """Fail on an existing results artifact before spending the compute."""
    if (artifact_path(root, "results", name) / "manifest.json").exists() and not overwrite:
        raise InputError(artifact_path(root, "results", name), "results artifact already exists",
                         "pass --overwrite or choose another --out")


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
                                     help="Headline rerank score: itm (ALBEF paper: ITM alone), itm+itc (LAVIS: plus the ITC cosine) or itm+itc/temp (plus the ITC logit, cosine / temperature). All are reported."),
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
        _refuse_existing(root, name, overwrite)
        with RichProgress(transient=True) as progress:
            ev = evaluate_retrieval(inp.model, inp.tokenizer, es, inp.cfg.model.vision.image_size,
                                    inp.cfg.model.text.max_len, k_test, batch_size, inp.device, workers, progress)
        seconds = dict(ev.seconds, load=round(time.perf_counter() - t0 - ev.seconds["total"], 3))
        metrics = {
            "task": "retrieval", "checkpoint": inp.checkpoint.name, "checkpoint_task": inp.meta.get("task"),
            "image_size": inp.cfg.model.vision.image_size, "dataset": inp.dataset.name, "split": split,
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
    t = Table(title=f"retrieval: {metrics['checkpoint']} on {metrics['dataset']}/{metrics['split']} "
                    f"({ev.images} images, {ev.texts} texts)")
    t.add_column("scoring", no_wrap=True)
    for label, _ in RECALL_COLUMNS:
        t.add_column(label, justify="right")
    t.add_row("ITC", *(f"{ev.itc[k]:.2f}" for _, k in RECALL_COLUMNS))
    t.add_row(f"rerank {head}", *(f"{ev.rerank[head][k]:.2f}" for _, k in RECALL_COLUMNS), style="bold")
    for other in (m for m in RERANK_SCORES if m != head):
        t.add_row(f"rerank {other}", *(f"{ev.rerank[other][k]:.2f}" for _, k in RECALL_COLUMNS), style="dim")
    console.print(t)
    if metrics["k_test_i2t"] < metrics["k_test"] or metrics["k_test_t2i"] < metrics["k_test"]:
        console.print(f"k_test {metrics['k_test']} clamped to the split: {metrics['k_test_i2t']} texts per image "
                      f"query, {metrics['k_test_t2i']} images per text query", highlight=False)
    s = metrics["seconds"]
    console.print(f"time: load {s['load']:.1f}s, encode + ITC {s['encode_itc']:.1f}s, ITM rerank "
                  f"{s['itm_rerank']:.1f}s ({ev.itm_pairs} pairs); headline = {head}", highlight=False)
    console.print(f"-> {art.path}", highlight=False)


# --------------------------------------------------------------------------------------------------
# Tasks evaluated through their TaskSpec (ve, ...)
# --------------------------------------------------------------------------------------------------


def run_task_eval(root: Path, task: str, checkpoint: str, data: str, split: str, batch_size: int, device: str,
                  max_items: int | None, workers: int, out: str | None, overwrite: bool,
                  options: dict[str, Any] | None = None) -> tuple[Artifact, dict]:
    """Evaluate a fine-tuned checkpoint with its task's ``evaluate`` and publish the results
    artifact (metrics.json, metrics.parquet, and predictions.parquet when the task has them).
    ``options``: the task's evaluation settings (vqa: k_test; grounding: layer)."""
    from vlpipe.finetune.spec import EvalRequest
    from vlpipe.finetune.tasks import get_task

    if batch_size < 1:
        raise InputError("--batch-size", f"{batch_size} must be at least 1")
    if max_items is not None and max_items < 1:
        raise InputError("--max-examples", f"{max_items} must be at least 1")
    spec = get_task(task)
    t0 = time.perf_counter()
    inp = load_eval_inputs(root, checkpoint, data, device, task=task)
    name = out or f"{inp.checkpoint.name}-{task}-{split}"
    _refuse_existing(root, name, overwrite)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    req = EvalRequest(model=inp.model, cfg=inp.cfg, tokenizer_dir=inp.tokenizer_dir, files=inp.shards, split=split,
                      batch_size=batch_size, workers=workers, device=inp.device, max_items=max_items,
                      options=options, task_config=inp.task_config, assets=inp.assets)
    with RichProgress(transient=True) as progress:
        ev = spec.evaluate(req, progress)
    metrics = {"task": task, "checkpoint": inp.checkpoint.name, "dataset": inp.dataset.name,
               "image_size": inp.cfg.model.vision.image_size, "lineage": inp.meta.get("lineage", {}),
               **{k: v for k, v in ev.metrics.items() if k != "task"},
               "seconds_total": round(time.perf_counter() - t0, 3)}
    rows = [{"task": task, "split": split, **r} for r in ev.rows]
    params = {"checkpoint": inp.checkpoint.name, "data": inp.dataset.name, "split": split, "batch_size": batch_size,
              "max_items": max_items, "device": inp.device, **options}
    tables = {"predictions.parquet": ev.predictions} if ev.predictions is not None else None
    stats = {**{k: v for k, v in ev.metrics.get("headline", {}).items()}, "examples": ev.metrics.get("examples")}
    art = write_results(root, name, metrics, rows, [inp.checkpoint, inp.dataset], params, overwrite, stats, tables)
    return art, metrics


@app.command("ve")
def ve(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint fine-tuned with `vlpipe finetune ve` (name or path)."),
    data: str = typer.Option(..., "--data", help="SNLI-VE task table (`vlpipe ingest ve`), name or path."),
    split: str = typer.Option("test", "--split", help="Dataset split to evaluate (val or test)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Examples per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    max_examples: int = typer.Option(None, "--max-examples", help="Only the first N examples of the split."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers decoding images."),
    out: str = typer.Option(None, "--out", help="Results artifact name (default <checkpoint>-ve-<split>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
) -> None:
    """Visual entailment: accuracy, per-class counts and confusion matrix, vs the majority-class baseline.

    Writes metrics.json, metrics.parquet and predictions.parquet (one row per example: true and
    predicted label, class probabilities). The baseline always answers the most frequent label of
    the dataset's train split.
    """
    root = root_of(ctx)
    with user_errors():
        art, metrics = run_task_eval(root, "ve", checkpoint, data, split, batch_size, device, max_examples, workers,
                                     out, overwrite)
    _print_classification(metrics, art)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _print_classification(m: dict, art: Artifact) -> None:
    labels = m["labels"]
    t = Table(title=f"{m['task']}: {m['checkpoint']} on {m['dataset']}/{m['split']} ({m['examples']} examples, "
                    f"{m['image_size']} px): accuracy and recall per class, %")
    t.add_column("", no_wrap=True)
    t.add_column("accuracy %", justify="right")
    for name in labels:
        t.add_column(name, justify="right")
    t.add_row("model", _pct(m["accuracy"]), *(_pct(m["per_class"][n]["recall"]) for n in labels), style="bold")
    b = m.get("baseline") or {}
    if b.get("accuracy") is not None:
        t.add_row(f"baseline: always {b['class']!r}", _pct(b["accuracy"]),
                  *("100.00" if n == b["class"] else "0.00" for n in labels), style="dim")
    console.print(t)
    c = Table(title="confusion (rows: true label, columns: predicted)")
    c.add_column("true \\ predicted", no_wrap=True)
    for name in labels:
        c.add_column(name, justify="right")
    c.add_column("total", justify="right")
    for name, row in zip(labels, m["confusion"]["matrix"]):
        c.add_row(name, *map(str, row), str(sum(row)))
    console.print(c)
    console.print(f"-> {art.path}", highlight=False)


# --------------------------------------------------------------------------------------------------
# nlvr2, vqa, grounding
# --------------------------------------------------------------------------------------------------


@app.command("nlvr2")
def nlvr2(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint fine-tuned with `vlpipe finetune nlvr2` (name or path)."),
    data: str = typer.Option(..., "--data", help="NLVR2 task table (`vlpipe ingest nlvr2`), name or path."),
    split: str = typer.Option("test", "--split", help="Dataset split to evaluate (val or test)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Examples (image pairs) per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    max_examples: int = typer.Option(None, "--max-examples", help="Only the first N examples of the split."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers decoding images."),
    out: str = typer.Option(None, "--out", help="Results artifact name (default <checkpoint>-nlvr2-<split>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
) -> None:
    """NLVR2: accuracy, per-class counts and confusion matrix, vs the majority-label baseline.

    Writes metrics.json, metrics.parquet and predictions.parquet (one row per example: true and
    predicted label, P(true)). The baseline always answers the most frequent label of the
    dataset's train split.
    """
    root = root_of(ctx)
    with user_errors():
        art, metrics = run_task_eval(root, "nlvr2", checkpoint, data, split, batch_size, device, max_examples,
                                     workers, out, overwrite)
    _print_classification(metrics, art)


@app.command("vqa")
def vqa(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint fine-tuned with `vlpipe finetune vqa` (name or path)."),
    data: str = typer.Option(..., "--data", help="VQA task table (`vlpipe ingest vqa`), name or path."),
    split: str = typer.Option("test", "--split", help="Dataset split to evaluate (it needs human answers)."),
    k_test: int = typer.Option(None, "--k-test", help="Candidates kept after the first-token step and ranked by full "
                                                      "likelihood (default: the checkpoint's vqa.k_test, 128 as ALBEF; "
                                                      "capped at the candidate count)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Questions per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    max_examples: int = typer.Option(None, "--max-examples", help="Only the first N questions of the split."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers decoding images."),
    out: str = typer.Option(None, "--out", help="Results artifact name (default <checkpoint>-vqa-<split>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
) -> None:
    """VQA: the official VQA accuracy overall and per answer type, vs the most-frequent-answer baseline.

    Every question ranks the checkpoint's candidate answers (answers.json) and its best one is
    scored against the human answers. Writes metrics.json, metrics.parquet and predictions.parquet
    (one row per question: the human answers, the prediction, its log-likelihood, the top 5 and the
    accuracy). Also reported: the ceiling the candidate list allows.
    """
    root = root_of(ctx)
    with user_errors():
        if k_test is not None and k_test < 1:
            raise InputError("--k-test", f"{k_test} must be at least 1")
        art, metrics = run_task_eval(root, "vqa", checkpoint, data, split, batch_size, device, max_examples,
                                     workers, out, overwrite, {"k_test": k_test})
    _print_vqa(metrics, art)


def _print_vqa(m: dict, art: Artifact) -> None:
    types = list(m["per_answer_type"])
    t = Table(title=f"vqa: {m['checkpoint']} on {m['dataset']}/{m['split']} ({m['scored']} questions, "
                    f"{m['candidates_ranked']} candidate answers, k_test {m['k_test']}, {m['image_size']} px): "
                    "VQA accuracy, %")
    t.add_column("", no_wrap=True)
    t.add_column("overall", justify="right")
    for name in types:
        t.add_column(f"{name} ({m['per_answer_type'][name]['questions']})", justify="right")
    t.add_row("model", _pct(m["accuracy"]), *(_pct(m["per_answer_type"][n]["accuracy"]) for n in types), style="bold")
    b = m["baseline"]
    if b["accuracy"] is not None:
        t.add_row(f"baseline: always {b['answer']!r}", _pct(b["accuracy"]),
                  *(_pct(b["per_answer_type"].get(n)) for n in types), style="dim")
    t.add_row("ceiling of the candidate list", _pct(m["candidate_ceiling"]), *("" for _ in types), style="dim")
    console.print(t)
    if m.get("candidates_merged"):
        console.print(f"{m['candidates_merged']} candidate answers tokenize like a more frequent one and were not "
                      "ranked separately", highlight=False)
    console.print(f"-> {art.path}", highlight=False)


@app.command("grounding")
def grounding(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="ALBEF checkpoint: fine-tuned with `vlpipe finetune grounding`, "
                                                             "or any pre-trained / retrieval one (name or path)."),
    data: str = typer.Option(..., "--data", help="Grounding task table (`vlpipe ingest refcoco`), name or path."),
    split: str = typer.Option("test", "--split", help="Split to evaluate; a prefix takes every split it starts "
                                                      "(test: testA and testB, reported each)."),
    layer: int = typer.Option(None, "--layer", help="Fusion layer for Grad-CAM (default fusion_layers // 3, ALBEF's depth)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Expressions per Grad-CAM pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    max_examples: int = typer.Option(None, "--max-examples", help="Only the first N expressions."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers decoding images."),
    out: str = typer.Option(None, "--out", help="Results artifact name (default <checkpoint>-grounding-<split>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results artifact of that name."),
) -> None:
    """Weakly supervised grounding: Grad-CAM picks a proposal box per expression; hit at IoU >= 0.5.

    Reports accuracy overall and per split, vs two baselines: a random proposal (exact expected
    accuracy) and the largest proposal. Writes metrics.json, metrics.parquet and
    predictions.parquet (one row per expression: the box, the picked proposal, IoU, hit).
    """
    root = root_of(ctx)
    with user_errors():
        art, metrics = run_task_eval(root, "grounding", checkpoint, data, split, batch_size, device, max_examples,
                                     workers, out, overwrite, {"layer": layer})
    _print_grounding(metrics, art)


def _print_grounding(m: dict, art: Artifact) -> None:
    splits = list(m["per_split"])
    t = Table(title=f"grounding: {m['checkpoint']} on {m['dataset']}/{m['split']} ({m['scored']} expressions, "
                    f"{m['mean_proposals']:.1f} proposals each, Grad-CAM layer {m['method']['layer']}, "
                    f"{m['image_size']} px): accuracy at IoU >= {m['method']['iou_threshold']}, %")
    t.add_column("", no_wrap=True)
    t.add_column("overall", justify="right")
    if len(splits) > 1:
        for name in splits:
            t.add_column(f"{name} ({m['per_split'][name]['scored']})", justify="right")
    per = [m["per_split"][n] for n in splits] if len(splits) > 1 else []
    t.add_row("model (Grad-CAM)", _pct(m["accuracy"]), *(_pct(v["accuracy"]) for v in per), style="bold")
    t.add_row("baseline: random proposal", _pct(m["baseline"]["random"]["accuracy"]),
              *(_pct(v["random"]) for v in per), style="dim")
    t.add_row("baseline: largest proposal", _pct(m["baseline"]["largest"]["accuracy"]),
              *(_pct(v["largest"]) for v in per), style="dim")
    console.print(t)
    console.print(f"-> {art.path}", highlight=False)
