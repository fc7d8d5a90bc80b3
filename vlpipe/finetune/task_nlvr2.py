"""Task ``nlvr2``: is a sentence true of a pair of images? (NLVR2, ALBEF sec. 5.)

The model (:class:`vlpipe.models.nlvr2.NLVR2Model`, from the pre-trained ALBEF with
``NLVR2Model.from_albef``; layout ``blocks`` by default, ``--set nlvr2.layout=cross`` for the
cheaper one) reads the sentence with both images (the task table's ``image`` and ``image2``); an MLP
on the fused [CLS] gives false / true logits, trained with cross entropy (:func:`nlvr2_loss`) and,
when ``model.distill`` is on (the default; ``--set model.distill=false`` for plain cross entropy),
ALBEF's momentum distillation: EMA copies of the encoders and the head (momentum
``model.momentum``) give soft targets, the loss is ``(1 - alpha) CE + alpha soft-CE`` with ``alpha``
ramped up to ``model.alpha`` over the first epoch.
Evaluation reports accuracy, per-class counts and the confusion matrix next to the trivial
baseline that always answers the training split's majority label.

Not implemented from ALBEF: the text-assignment pre-training stage before NLVR2 fine-tuning.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.dataset as pads
import torch

from vlpipe.config import Config
from vlpipe.data.loader import ImagePairTextCollate, batch_loader
from vlpipe.finetune.spec import (CollateSettings, EvalRequest, Evaluation, LossContext, TaskSpec, TrainRecipe,
                                  classifier_evaluation)
from vlpipe.models.nlvr2 import NLVR2Config, NLVR2Model, nlvr2_loss
from vlpipe.objectives.distill import ramped_alpha
from vlpipe.progress import Progress

#: ALBEF configs/NLVR.yaml: lr 2e-5 (pre-training 1e-4), cosine to 1e-6, 10 epochs, batch 16 per
#: GPU, weight decay 0.02, 384 px; momentum distillation (distill True, alpha 0.4, momentum 0.995) comes
#: from the model config (``model.distill``, ``model.alpha``, ``model.momentum``).
RECIPE = TrainRecipe(lr_ratio=0.2, epochs=10, batch_size=16, warmup_steps=0, min_lr_ratio=0.05, weight_decay=0.02,
                     source="ALBEF configs/NLVR.yaml (without its text-assignment pre-training)")

#: class index -> name (class 1 = the sentence is true, as NLVR2Model's logits)
LABELS = ("false", "true")

KEEP = ("example_id", "image_id", "image_id2", "sentence")


def build(cfg: Config, task_cfg: NLVR2Config | None = None) -> NLVR2Model:
    return NLVR2Model(cfg.model, task_cfg or NLVR2Config(), distill=cfg.model.distill)


def from_pretrained(albef: torch.nn.Module, cfg: Config, task_cfg: NLVR2Config | None = None):
    return NLVR2Model.from_albef(albef, cfg.model, task_cfg or NLVR2Config(), distill=cfg.model.distill)


def nlvr2_targets(rows: dict[str, list]) -> dict[str, torch.Tensor]:
    """True/False labels -> class indices (``labels`` [B] long, 1 = true)."""
    return {"labels": torch.tensor([int(bool(x)) for x in rows["label"]], dtype=torch.long)}


def collate(s: CollateSettings, keep: tuple[str, ...] = ()) -> ImagePairTextCollate:
    return ImagePairTextCollate(s.tokenizer_dir, s.image_size, s.max_len, "sentence", s.train, s.crop_min_scale,
                                targets=nlvr2_targets, target_columns=("label",), keep=keep)


def loss(net: torch.nn.Module, batch: dict, step: int, ctx: LossContext) -> dict[str, torch.Tensor]:
    m = ctx.cfg.model  # distillation weight ramped up over the first epoch; 0 with distill off
    alpha = ramped_alpha(m.alpha, step, ctx.steps_per_epoch, ctx.total_steps) if m.distill else 0.0
    logits, soft = net(batch["images"], batch["images2"], batch["input_ids"], batch["attention_mask"], alpha=alpha,
                       update_momentum=batch.get("first_micro", True))
    labels = batch["labels"]
    return {"loss": nlvr2_loss(logits, labels, soft, alpha),
            "acc": (logits.argmax(-1) == labels).float().mean().detach()}


def split_labels(files, split: str) -> list[str]:
    """The labels of one split as class names (cheap: one column)."""
    d = pads.dataset([str(f) for f in files], format="parquet")
    col = d.to_table(columns=["label"], filter=pads.field("split") == split).column("label").to_pylist()
    return [LABELS[int(bool(x))] for x in col]


@torch.no_grad()
def predict(req: EvalRequest, progress: Progress) -> pa.Table:
    """One row per example of the split: ids, sentence, true and predicted label, P(true)."""
    ds = req.stream(lambda settings: collate(settings, keep=KEEP))
    model = req.model.eval()
    cols: dict[str, list] = {c: [] for c in (*KEEP, "label", "predicted", "p_true")}
    progress.start("evaluate nlvr2", total=ds.total, unit="examples")
    for batch in batch_loader(ds, req.workers):
        logits = model(batch["images"].to(req.device), batch["images2"].to(req.device),
                       batch["input_ids"].to(req.device), batch["attention_mask"].to(req.device)).float().cpu()
        p = torch.softmax(logits, dim=-1)
        for c in KEEP:
            cols[c] += batch[c]
        cols["label"] += [LABELS[i] for i in batch["labels"].tolist()]
        cols["predicted"] += [LABELS[i] for i in p.argmax(-1).tolist()]
        cols["p_true"] += p[:, 1].tolist()
        progress.advance("evaluate nlvr2", len(p))
    progress.finish("evaluate nlvr2")
    table = {c: cols[c] for c in (*KEEP, "label", "predicted")}
    table["correct"] = [a == b for a, b in zip(cols["label"], cols["predicted"])]
    table["p_true"] = pa.array(cols["p_true"], pa.float32())
    return pa.table(table)


def evaluate(req: EvalRequest, progress: Progress) -> Evaluation:
    t0 = time.perf_counter()
    pred = predict(req, progress)
    return classifier_evaluation("nlvr2", req.split, LABELS, pred, split_labels(req.files, "train"),
                                 time.perf_counter() - t0)


TASK = TaskSpec(
    name="nlvr2",
    summary="NLVR2: is the sentence true of the image pair? Text attends to both images; MLP head on the fused [CLS].",
    data_task="nlvr2",
    model_class="nlvr2",
    build=build,
    from_pretrained=from_pretrained,
    recipe=RECIPE,
    collate=collate,
    loss=loss,
    evaluate=evaluate,
    fresh=("cls_head.", *(f"{n}_m." for n in NLVR2Model.MOMENTUM)),  # momentum copies: set from the online weights
    headline="accuracy",
    checkpoint_info={"labels": list(LABELS)},
    task_config=NLVR2Config,
)
