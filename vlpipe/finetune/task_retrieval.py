"""Task ``retrieval``: fine-tune ITC + ITM (hard negatives) on a caption dataset, MLM off.

As ALBEF's ``Retrieval.py``: the pre-trained model, momentum encoders and queues included, keeps
training with the ITC loss (momentum distillation with alpha ramped up over the first epoch) and
the ITM loss with in-batch hard negatives; captions of the same image are positives in ITC and never
ITM negatives. The checkpoint is an ALBEF, so `vlpipe embed`, `retrieve` and `evaluate retrieval`
read it like a pre-trained one; its resolution is recorded in its config.
"""

from __future__ import annotations

import dataclasses

import torch

from vlpipe.config import Config
from vlpipe.data.loader import ImageTextCollate
from vlpipe.finetune.spec import CollateSettings, EvalRequest, Evaluation, LossContext, TaskSpec, TrainRecipe
from vlpipe.models.albef import ALBEF
from vlpipe.progress import Progress

#: ALBEF configs/Retrieval_coco.yaml: lr 1e-5 (pre-training 1e-4), cosine to 1e-6, 5 epochs
#: (Flickr30K: 10), batch 32 per GPU, weight decay 0.02, no warm-up, 384 px, distillation alpha 0.4.
RECIPE = TrainRecipe(lr_ratio=0.1, epochs=5, batch_size=32, warmup_steps=0, min_lr_ratio=0.1, weight_decay=0.02,
                     source="ALBEF configs/Retrieval_coco.yaml (Flickr30K: 10 epochs)")

RECALL_KEYS = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")


def configure(cfg: Config) -> Config:
    cfg.model = dataclasses.replace(cfg.model, itc=True, itm=True, mlm=False)
    return cfg


def build(cfg: Config, task_cfg: None = None) -> ALBEF:
    return ALBEF(cfg.model)


def collate(s: CollateSettings) -> ImageTextCollate:
    return ImageTextCollate(s.tokenizer_dir, s.image_size, s.max_len, "caption", s.train, s.crop_min_scale)


def loss(net: torch.nn.Module, batch: dict, step: int, ctx: LossContext) -> dict[str, torch.Tensor]:
    ramp = max(1, min(ctx.total_steps, ctx.steps_per_epoch))  # alpha warms up over the first epoch
    alpha = ctx.cfg.model.alpha * min(1.0, (step + 1) / ramp)
    return net(batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_ids"],
               alpha=alpha, update_momentum=batch.get("first_micro", True), text_keys=batch.get("text_keys"))


def evaluate(req: EvalRequest, progress: Progress) -> Evaluation:
    """The ALBEF k_test protocol (ITC over all pairs, ITM on each query's top k) on a caption split."""
    from vlpipe.data.tokenizer import load_tokenizer
    from vlpipe.retrieval.embed import load_eval_set
    from vlpipe.retrieval.rerank import evaluate_retrieval

    k_test = int(req.options.get("k_test", 16))
    es = load_eval_set(req.files, req.split, req.max_items)
    cfg = req.cfg.model
    ev = evaluate_retrieval(req.model, load_tokenizer(req.tokenizer_dir), es, cfg.vision.image_size, cfg.text.max_len,
                            k_test, req.batch_size, req.device, req.workers, progress)

    def r(d):
        return {k: round(float(d[k]), 4) for k in RECALL_KEYS}

    metrics = {"task": "retrieval", "split": req.split, "images": ev.images, "texts": ev.texts, "k_test": k_test,
               "headline": r(ev.rerank["itm"]), "itc": r(ev.itc), "rerank": {m: r(v) for m, v in ev.rerank.items()},
               "chance_r1": round(100.0 / ev.images, 4)}
    rows = [{"scoring": "itc", "metric": k, "value": float(v), "headline": False} for k, v in metrics["itc"].items()]
    rows += [{"scoring": f"rerank:{m}", "metric": k, "value": float(v), "headline": m == "itm"}
             for m, vals in metrics["rerank"].items() for k, v in vals.items()]
    return Evaluation(metrics, rows)


TASK = TaskSpec(
    name="retrieval",
    summary="Image-text retrieval: ITC + ITM with hard negatives on a caption dataset (MLM off).",
    data_task=None,
    model_class="albef",
    build=build,
    configure=configure,
    recipe=RECIPE,
    collate=collate,
    loss=loss,
    evaluate=evaluate,
    headline="r_mean",
    eval_options={"k_test": 16},
    # as pre-training does whenever an objective is off (the MLM head's own weights get no gradient)
    find_unused_parameters=True,
)
