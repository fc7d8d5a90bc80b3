"""Task ``grounding``: weakly supervised visual grounding (RefCOCO+, ALBEF sec. 5 / ``Grounding.py``).

Training sees image-text pairs only: the referring expressions of a ``grounding`` task table
(``vlpipe ingest refcoco``) with their images, never a box. It is the retrieval task's training
(ITC with momentum distillation + ITM with hard negatives, MLM off); expressions of the same image
are ITC positives and never ITM negatives. The checkpoint is an ALBEF, so every ALBEF consumer
(`embed`, `retrieve`, `evaluate retrieval`, `explain`) reads it.

Evaluation localises each expression with Grad-CAM (:func:`vlpipe.models.gradcam.gradcam` on the
default fusion layer, the ITM match logit): the sentence heatmap, resized to the original image,
scores every proposal box of the row by ``mass / area ** 0.5`` (:func:`~vlpipe.models.gradcam.best_box`),
and the pick is a hit when its IoU with the annotated box is at least 0.5. Accuracy is reported
overall and per split (``--split test`` takes RefCOCO+'s ``testA`` and ``testB`` and reports each).
Baselines: a random proposal (its expected accuracy, computed exactly: the mean over rows of the
share of proposals with IoU >= 0.5) and the largest proposal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from vlpipe.config import Config
from vlpipe.data.loader import ImageTextCollate, batch_loader
from vlpipe.data.transforms import decode
from vlpipe.errors import InputError
from vlpipe.finetune import task_retrieval
from vlpipe.finetune.spec import CollateSettings, EvalRequest, Evaluation, TaskSpec, TrainRecipe
from vlpipe.models.albef import ALBEF
from vlpipe.models.gradcam import GROUNDING_ALPHA, IOU_THRESHOLD, best_box, box_iou, default_layer, gradcam
from vlpipe.progress import Progress

#: ALBEF configs/Grounding.yaml: lr 1e-5 (pre-training 1e-4), cosine to 1e-6, 5 epochs, batch 32 per
#: GPU, weight decay 0.02, 384 px from 256 (image_scale 1.5), distillation alpha 0.4. The resolution
#: matters most here: Grad-CAM's grid is the patch grid. Measured on `make demo`'s world (demo-albef,
#: 300 steps, the whole val split of 2,537 expressions, 2 seeds): 0.383 / 0.373 at 96 px (12x12
#: patches) vs 0.361 / 0.359 at the pre-trained 64 px (8x8); 0.390 at 128 px; largest proposal
#: 0.341, random 0.306.
RECIPE = TrainRecipe(lr_ratio=0.1, epochs=5, batch_size=32, warmup_steps=0, min_lr_ratio=0.1, weight_decay=0.02,
                     source="ALBEF configs/Grounding.yaml", image_scale=1.5)

KEEP = ("example_id", "split", "image_id", "text", "box", "proposals", "width", "height", "image", "image_path")


def build(cfg: Config, task_cfg: None = None) -> ALBEF:
    return ALBEF(cfg.model)


def collate(s: CollateSettings, keep: tuple[str, ...] = ()) -> ImageTextCollate:
    """Expressions with their text keys: the same expression of two images is a positive pair in
    ITC and never an ITM negative ("the dog" is true of every image with one dog, and ITC's nearest
    images for it, the hard negatives ITM draws, are exactly such images)."""
    return ImageTextCollate(s.tokenizer_dir, s.image_size, s.max_len, "text", s.train, s.crop_min_scale, keep=keep,
                            text_keys=True)


# --------------------------------------------------------------------------------------------------
# Scoring (pure)
# --------------------------------------------------------------------------------------------------


def random_hit_rate(box: Sequence[float], proposals: Sequence[Sequence[float]]) -> float:
    """Expected hit of a proposal drawn uniformly: the share of proposals with IoU >= 0.5."""
    return sum(box_iou(p, box) >= IOU_THRESHOLD for p in proposals) / len(proposals)


def largest(proposals: Sequence[Sequence[float]]) -> int:
    """Index of the largest proposal by area (the first on ties)."""
    areas = [max(float(p[2]), 0.0) * max(float(p[3]), 0.0) for p in proposals]
    return areas.index(max(areas))


def scorable(box, proposals) -> bool:
    return box is not None and bool(proposals)


def split_names(files, split: str) -> list[str]:
    """``[split]`` when the dataset has it, else its splits that start with it (``test`` ->
    ``testA``, ``testB``); a one-line error when there are none."""
    d = pads.dataset([str(f) for f in files], format="parquet")
    names = sorted(set(d.to_table(columns=["split"]).column("split").to_pylist()))
    if split in names:
        return [split]
    found = [n for n in names if n.startswith(split)]
    if not found:
        raise InputError(files[0].parent if files else "dataset", f"no rows in split {split!r}",
                         f"the dataset has splits {', '.join(names)}")
    return found


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def predict(req: EvalRequest, progress: Progress) -> tuple[pa.Table, int]:
    """Grad-CAM box pick for every expression of the split(s); one row per expression."""
    splits = split_names(req.files, req.split)
    cfg = req.cfg.model
    layer = req.options.get("layer")
    layer = default_layer(cfg.text.fusion_layers) if layer is None else int(layer)
    ds = req.stream(lambda settings: collate(settings, keep=KEEP), splits=splits)
    model = req.model.eval()
    out: dict[str, list] = {c: [] for c in ("example_id", "split", "image_id", "text", "box", "proposals",
                                            "predicted_index", "predicted_box", "iou", "hit", "random_hit_rate",
                                            "largest_hit")}
    progress.start("evaluate grounding", total=ds.total, unit="expressions")
    for batch in batch_loader(ds, req.workers):
        cam = gradcam(model, batch["images"].to(req.device), batch["input_ids"].to(req.device),
                      batch["attention_mask"].to(req.device), layer=layer)
        maps = cam.sentence_map.float().cpu()
        for i in range(len(maps)):
            box, proposals = batch["box"][i], batch["proposals"][i] or []
            w, h = batch["width"][i], batch["height"][i]
            if w is None or h is None:
                w, h = decode(batch["image"][i], batch["image_path"][i]).size
            pick = pbox = iou = hit = rand = big = None
            if scorable(box, proposals):
                pick, pbox = best_box(maps[i], proposals, (w, h), GROUNDING_ALPHA)
                iou = box_iou(pbox, box)
                hit = iou >= IOU_THRESHOLD
                rand = random_hit_rate(box, proposals)
                big = box_iou(proposals[largest(proposals)], box) >= IOU_THRESHOLD
            for c in ("example_id", "split", "image_id", "text", "box"):
                out[c].append(batch[c][i])
            out["proposals"].append(len(proposals))
            out["predicted_index"].append(pick)
            out["predicted_box"].append(pbox)
            out["iou"].append(iou)
            out["hit"].append(hit)
            out["random_hit_rate"].append(rand)
            out["largest_hit"].append(big)
        progress.advance("evaluate grounding", len(maps))
    progress.finish("evaluate grounding")
    table = pa.table({
        **{c: out[c] for c in ("example_id", "split", "image_id", "text")},
        "box": pa.array(out["box"], pa.list_(pa.float64())),
        "proposals": pa.array(out["proposals"], pa.int32()),
        "predicted_index": pa.array(out["predicted_index"], pa.int32()),
        "predicted_box": pa.array(out["predicted_box"], pa.list_(pa.float64())),
        "iou": pa.array(out["iou"], pa.float64()),
        "hit": pa.array(out["hit"], pa.bool_()),
        "random_hit_rate": pa.array(out["random_hit_rate"], pa.float64()),
        "largest_hit": pa.array(out["largest_hit"], pa.bool_()),
    })
    return table, layer


def _mean(xs: list) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(pred: pa.Table) -> dict[str, Any]:
    """Accuracy, the random- and largest-proposal baselines, overall and per split."""
    cols = {c: pred.column(c).to_pylist() for c in ("split", "hit", "random_hit_rate", "largest_hit")}

    def block(rows: list[int]) -> dict[str, Any]:
        scored = [i for i in rows if cols["hit"][i] is not None]
        return {"examples": len(rows), "scored": len(scored),
                "accuracy": _mean([cols["hit"][i] for i in scored]),
                "random": _mean([cols["random_hit_rate"][i] for i in scored]),
                "largest": _mean([cols["largest_hit"][i] for i in scored])}

    everything = block(list(range(pred.num_rows)))
    per_split = {s: block([i for i, x in enumerate(cols["split"]) if x == s]) for s in sorted(set(cols["split"]))}
    return {**everything, "per_split": per_split}


def evaluate(req: EvalRequest, progress: Progress) -> Evaluation:
    t0 = time.perf_counter()
    pred, layer = predict(req, progress)
    s = summarize(pred)
    if s["accuracy"] is None:
        raise InputError(req.split, f"none of the {pred.num_rows} expressions has both a box and proposals",
                         "ingest refcoco with instances.json (boxes) and dets.json (proposals)")
    metrics = {
        "task": "grounding", "split": req.split, "splits": sorted(s["per_split"]),
        "examples": s["examples"], "scored": s["scored"], "accuracy": s["accuracy"],
        "per_split": s["per_split"],
        "method": {"gradcam": "ITM match logit, cross-attention", "layer": layer, "alpha": GROUNDING_ALPHA,
                   "iou_threshold": IOU_THRESHOLD},
        "headline": {"accuracy": round(s["accuracy"], 6)},
        "baseline": {
            "random": {"rule": "a proposal drawn uniformly (exact expectation: mean share of proposals with "
                               f"IoU >= {IOU_THRESHOLD})", "accuracy": s["random"]},
            "largest": {"rule": "the largest proposal", "accuracy": s["largest"]},
        },
        "mean_proposals": _mean([n for n, h in zip(pred.column("proposals").to_pylist(),
                                                   pred.column("hit").to_pylist()) if h is not None]),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    rows = [{"scoring": "model", "metric": "accuracy", "value": s["accuracy"], "headline": True},
            {"scoring": "baseline:random", "metric": "accuracy", "value": s["random"], "headline": False},
            {"scoring": "baseline:largest", "metric": "accuracy", "value": s["largest"], "headline": False}]
    if len(s["per_split"]) > 1:
        for name, v in s["per_split"].items():
            for scoring, key in (("model", "accuracy"), ("baseline:random", "random"), ("baseline:largest", "largest")):
                if v[key] is not None:
                    rows.append({"scoring": scoring, "metric": f"accuracy:{name}", "value": v[key], "headline": False})
    return Evaluation(metrics, rows, pred)


TASK = TaskSpec(
    name="grounding",
    summary="Weakly supervised grounding (RefCOCO+): ITC + ITM on the expressions and images (no boxes); "
            "evaluated by Grad-CAM box picks.",
    data_task="grounding",
    model_class="albef",
    build=build,
    configure=task_retrieval.configure,
    recipe=RECIPE,
    collate=collate,
    loss=task_retrieval.loss,
    evaluate=evaluate,
    headline="accuracy",
    # as retrieval: the MLM head's own weights get no gradient
    find_unused_parameters=True,
)
