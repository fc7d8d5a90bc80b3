"""Task ``ve``: visual entailment (SNLI-VE) as 3-way classification of (image, hypothesis).

The model (:class:`vlpipe.models.ve.VEModel`) reads the hypothesis with the image through the
fusion encoder; an MLP on the fused [CLS] gives entailment / neutral / contradiction logits
(:data:`~vlpipe.data.task_tables.VE_LABELS` order); the loss is cross entropy with ALBEF's momentum
distillation when ``model.distill`` is on (the default; ``--set model.distill=false`` for plain
cross entropy): EMA copies of the encoders and the head (momentum ``model.momentum``) give soft
targets, and the loss is ``(1 - alpha) CE + alpha soft-CE``, ``alpha`` ramped up to
``model.alpha`` over the first epoch as the retrieval task does. Evaluation reports
accuracy, per-class counts and the confusion matrix, next to the trivial baseline that always
answers the training split's majority class.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.dataset as pads
import torch

from vlpipe.config import Config
from vlpipe.data.loader import ImageTextCollate, batch_loader
from vlpipe.data.task_tables import VE_LABELS
from vlpipe.finetune.spec import (CollateSettings, EvalRequest, Evaluation, LossContext, TaskSpec, TrainRecipe,
                                  classifier_evaluation)
from vlpipe.models.ve import VEModel, ve_loss
from vlpipe.objectives.distill import ramped_alpha
from vlpipe.progress import Progress

#: ALBEF configs/VE.yaml: lr 2e-5 (pre-training 1e-4), cosine to 1e-6, 5 epochs, batch 32 per GPU,
#: weight decay 0.02, 384 px; momentum distillation (distill True, alpha 0.4, momentum 0.995) comes
#: from the model config (``model.distill``, ``model.alpha``, ``model.momentum``).
RECIPE = TrainRecipe(lr_ratio=0.2, epochs=5, batch_size=32, warmup_steps=0, min_lr_ratio=0.05, weight_decay=0.02,
                     source="ALBEF configs/VE.yaml")

PREDICTIONS = "predictions.parquet"


def build(cfg: Config, task_cfg: None = None) -> VEModel:
    return VEModel(cfg.model, classes=len(VE_LABELS), distill=cfg.model.distill)


def ve_targets(rows: dict[str, list]) -> dict[str, torch.Tensor]:
    """Label names -> class indices (``labels`` [B] long)."""
    return {"labels": torch.tensor([VE_LABELS.index(x) for x in rows["label"]], dtype=torch.long)}


def collate(s: CollateSettings, keep: tuple[str, ...] = ()) -> ImageTextCollate:
    return ImageTextCollate(s.tokenizer_dir, s.image_size, s.max_len, "hypothesis", s.train, s.crop_min_scale,
                            targets=ve_targets, target_columns=("label",), keep=keep)


def loss(net: torch.nn.Module, batch: dict, step: int, ctx: LossContext) -> dict[str, torch.Tensor]:
    m = ctx.cfg.model  # distillation weight ramped up over the first epoch; 0 with distill off
    alpha = ramped_alpha(m.alpha, step, ctx.steps_per_epoch, ctx.total_steps) if m.distill else 0.0
    logits, soft = net(batch["images"], batch["input_ids"], batch["attention_mask"], alpha=alpha,
                       update_momentum=batch.get("first_micro", True))
    labels = batch["labels"]
    return {"loss": ve_loss(logits, labels, soft, alpha),
            "acc": (logits.argmax(-1) == labels).float().mean().detach()}


def split_labels(files, split: str) -> list[str]:
    """The ``label`` column of one split (cheap: one column)."""
    d = pads.dataset([str(f) for f in files], format="parquet")
    return d.to_table(columns=["label"], filter=pads.field("split") == split).column("label").to_pylist()


@torch.no_grad()
def predict(req: EvalRequest, progress: Progress) -> pa.Table:
    """One row per example of the split: ids, text, true and predicted label, class probabilities."""
    ds = req.stream(lambda settings: collate(settings, keep=("example_id", "image_id", "hypothesis")))
    model = req.model.eval()
    cols: dict[str, list] = {c: [] for c in ("example_id", "image_id", "hypothesis", "label", "predicted")}
    probs: list[torch.Tensor] = []
    progress.start("evaluate ve", total=ds.total, unit="examples")
    for batch in batch_loader(ds, req.workers):
        logits = model(batch["images"].to(req.device), batch["input_ids"].to(req.device),
                       batch["attention_mask"].to(req.device)).float().cpu()
        p = torch.softmax(logits, dim=-1)
        probs.append(p)
        cols["example_id"] += batch["example_id"]
        cols["image_id"] += batch["image_id"]
        cols["hypothesis"] += batch["hypothesis"]
        cols["label"] += [VE_LABELS[i] for i in batch["labels"].tolist()]
        cols["predicted"] += [VE_LABELS[i] for i in p.argmax(-1).tolist()]
        progress.advance("evaluate ve", len(p))
    progress.finish("evaluate ve")
    p = torch.cat(probs) if probs else torch.zeros(0, len(VE_LABELS))
    table: dict[str, object] = dict(cols)
    table["correct"] = [a == b for a, b in zip(cols["label"], cols["predicted"])]
    for i, name in enumerate(VE_LABELS):
        table[f"p_{name}"] = pa.array(p[:, i].tolist(), pa.float32())
    return pa.table(table)


def evaluate(req: EvalRequest, progress: Progress) -> Evaluation:
    t0 = time.perf_counter()
    pred = predict(req, progress)
    return classifier_evaluation("ve", req.split, VE_LABELS, pred, split_labels(req.files, "train"),
                                 time.perf_counter() - t0)


TASK = TaskSpec(
    name="ve",
    summary="Visual entailment (SNLI-VE): entailment / neutral / contradiction from the fused [CLS] (MLP head).",
    data_task="ve",
    model_class="ve",
    build=build,
    recipe=RECIPE,
    collate=collate,
    loss=loss,
    evaluate=evaluate,
    fresh=("cls_head.", *(f"{n}_m." for n in VEModel.MOMENTUM)),  # momentum copies: set from the online weights
    headline="accuracy",
    checkpoint_info={"labels": list(VE_LABELS)},
)
