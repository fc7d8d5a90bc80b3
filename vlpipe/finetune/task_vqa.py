"""Task ``vqa``: visual question answering as answer generation (ALBEF, sec. 5).

The model (:class:`vlpipe.models.vqa.VQAModel`, built from the pre-trained ALBEF with
``VQAModel.from_albef``) fuses (image, question) and an answer decoder generates the answer.
Training batches hold each question with its distinct answers and their weights (the task table's
``answer_weights``: an answer's share of the human answers), the question repeated once per
answer as ALBEF does (:class:`vlpipe.data.loader.QuestionAnswersCollate`); the loss is ALBEF's
weighted conditional LM loss, with ALBEF's momentum distillation when ``model.distill`` is on (the
default; ``--set model.distill=false`` for the plain loss): EMA copies of the encoders and the
answer decoder (momentum ``model.momentum``) give the decoder's soft token targets, mixed with
weight ``alpha`` ramped up to ``model.alpha`` over the first epoch.

Evaluation ranks a fixed list of candidate answers for every question
(:meth:`VQAModel.rank_answers`: first-token step, then the ``k_test`` best by full likelihood) and
scores the best one with the official VQA accuracy (:func:`vlpipe.metrics.vqa.vqa_accuracy`)
against the human answers (the table's ``answers`` x ``answer_counts``), overall and per
``answer_type``, next to the trivial baseline that always answers the train split's most frequent
answer. The candidates are the training split's answers by frequency (at most ``--max-answers``,
ALBEF: 3,128), or the list in ``--answers FILE`` (a JSON list such as ALBEF's
``answer_list.json``); they are stored in the checkpoint as ``answers.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import torch

from vlpipe.config import Config
from vlpipe.data.loader import QuestionAnswersCollate, batch_loader
from vlpipe.errors import InputError, VlpipeError
from vlpipe.finetune.spec import (
    CollateSettings,
    EvalRequest,
    Evaluation,
    LossContext,
    TaskInputs,
    TaskOption,
    TaskPrep,
    TaskSpec,
    TrainRecipe,
)
from vlpipe.metrics.vqa import vqa_accuracy
from vlpipe.models.vqa import VQAConfig, VQAModel, tokenize_answers
from vlpipe.objectives.distill import ramped_alpha
from vlpipe.progress import Progress

#: ALBEF configs/VQA.yaml: lr 2e-5 (pre-training 1e-4), cosine to 1e-6, 8 epochs, batch 32 per GPU,
#: weight decay 0.02, 384 px, k_test 128; momentum distillation (distill True, alpha 0.4, momentum
#: 0.995) comes from the model config (``model.distill``, ``model.alpha``, ``model.momentum``).
RECIPE = TrainRecipe(lr_ratio=0.2, epochs=8, batch_size=32, warmup_steps=0, min_lr_ratio=0.05, weight_decay=0.02,
                     source="ALBEF configs/VQA.yaml")

ANSWERS_FILE = "answers.json"
#: ALBEF's answer_list.json: the 3,128 most frequent answers of VQA v2 train + val.
MAX_ANSWERS = 3128
TOP_PREDICTIONS = 5  # ranked answers kept per question in predictions.parquet

KEEP = ("example_id", "question_id", "image_id", "question", "answer_type", "answers", "answer_counts")


# --------------------------------------------------------------------------------------------------
# The model and batches
# --------------------------------------------------------------------------------------------------


def build(cfg: Config, task_cfg: VQAConfig | None = None) -> VQAModel:
    return VQAModel(cfg.model, task_cfg or VQAConfig(), distill=cfg.model.distill)


def from_pretrained(albef: torch.nn.Module, cfg: Config, task_cfg: VQAConfig | None = None):
    return VQAModel.from_albef(albef, cfg.model, task_cfg or VQAConfig(), distill=cfg.model.distill)


def collate(s: CollateSettings, keep: tuple[str, ...] = (), answers: bool = True) -> QuestionAnswersCollate:
    vqa = s.task_config or VQAConfig()
    return QuestionAnswersCollate(s.tokenizer_dir, s.image_size, s.max_len, vqa.max_answer_len, s.train,
                                  s.crop_min_scale, answers=answers, keep=keep)


def loss(net: torch.nn.Module, batch: dict, step: int, ctx: LossContext) -> dict[str, torch.Tensor]:
    m = ctx.cfg.model  # distillation weight ramped up over the first epoch; 0 with distill off
    alpha = ramped_alpha(m.alpha, step, ctx.steps_per_epoch, ctx.total_steps) if m.distill else 0.0
    return net(batch["images"], batch["input_ids"], batch["attention_mask"], batch["answer_ids"],
               batch["answer_mask"], batch["answer_weights"], batch["answers_per_question"], alpha=alpha,
               update_momentum=batch.get("first_micro", True))


# --------------------------------------------------------------------------------------------------
# Candidate answers
# --------------------------------------------------------------------------------------------------


def _table(files: list[Path], splits: list[str], columns: list[str]) -> pa.Table:
    d = pads.dataset([str(f) for f in sorted(map(str, files))], format="parquet")
    return d.to_table(columns=columns, filter=pads.field("split").isin(splits))


def answer_frequencies(files: list[Path], splits: list[str]) -> Counter:
    """How many human answers of the ``splits`` gave each answer (``answers`` x ``answer_counts``)."""
    t = _table(files, splits, ["answers", "answer_counts"])
    counts: Counter = Counter()
    for answers, n in zip(t.column("answers").to_pylist(), t.column("answer_counts").to_pylist()):
        for a, c in zip(answers or [], n or []):
            counts[a] += int(c)
    return counts


def by_frequency(counts: Counter) -> list[str]:
    """Most frequent first; ties in alphabetical order (deterministic)."""
    return sorted(counts, key=lambda a: (-counts[a], a))


def read_answer_list(path: str) -> list[str]:
    """A JSON list of answer strings (ALBEF's ``answer_list.json``), duplicates dropped."""
    file = Path(path)
    if not file.is_file():
        raise InputError(file, "no such answer list file", "pass a JSON list of answers, e.g. answer_list.json")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(file, f"not JSON ({e})", "pass a JSON list of answers") from None
    if not isinstance(data, list) or not data or not all(isinstance(a, str) and a.strip() for a in data):
        raise InputError(file, "not a non-empty JSON list of answer strings", "pass a JSON list of answers")
    return list(dict.fromkeys(data))


def distinct_candidates(tokenizer, answers: list[str], max_len: int) -> tuple[list[int], list[tuple[str, str]]]:
    """Indices of the answers to rank: the first of each group that tokenizes the same (a tokenizer
    without digits reads '0' and '1' both as [UNK]; ranking cannot tell them apart), and the
    (dropped, kept) pairs."""
    ids, mask = tokenize_answers(tokenizer, answers, max_len)
    first: dict[tuple[int, ...], int] = {}
    keep, merged = [], []
    for i, (row, m) in enumerate(zip(ids.tolist(), mask.tolist())):
        key = tuple(t for t, on in zip(row, m) if on)
        if key in first:
            merged.append((answers[i], answers[first[key]]))
        else:
            first[key] = i
            keep.append(i)
    return keep, merged


def prepare(inp: TaskInputs) -> TaskPrep:
    """The candidate answer list (``answers.json``): ``--answers FILE``, else the training split's
    answers by frequency (at most ``--max-answers``)."""
    max_answers = inp.options.get("max_answers")
    max_answers = MAX_ANSWERS if max_answers is None else int(max_answers)
    if max_answers < 1:
        raise InputError("--max-answers", f"{max_answers} must be at least 1")
    counts = answer_frequencies(inp.files, list(inp.splits))
    if inp.options.get("answers"):
        answers = read_answer_list(inp.options["answers"])
        source = str(Path(inp.options["answers"]).resolve())
        what = f"{len(answers)} from {Path(inp.options['answers']).name}"
    else:
        if not counts:
            raise InputError("--split", f"no answers in splits {list(inp.splits)}", "train on a split with answers")
        answers = by_frequency(counts)[:max_answers]
        source = f"splits {', '.join(inp.splits)} by frequency"
        what = f"the {len(answers)} most frequent of the training split{'s' if len(inp.splits) > 1 else ''}"
    covered = sum(counts[a] for a in answers if a in counts)
    total = sum(counts.values())
    notes = [f"candidate answers: {what} (they cover {covered / total:.1%} of the training answers)"
             if total else f"candidate answers: {what}"]
    if inp.tokenizer_dir is not None:
        from vlpipe.data.tokenizer import load_tokenizer

        cfg = inp.task_config or VQAConfig()
        _, merged = distinct_candidates(load_tokenizer(inp.tokenizer_dir), answers, cfg.max_answer_len)
        if merged:
            eg = ", ".join(f"{a!r} = {b!r}" for a, b in merged[:3])
            notes.append(f"{len(merged)} candidate answers tokenize like a more frequent one ({eg}): "
                         "evaluation ranks only the first of each (the tokenizer lacks their pieces)")
    return TaskPrep(assets={ANSWERS_FILE: answers}, notes=notes,
                    info={"answers": len(answers), "answer_source": source})


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def human_answers(answers: list[str] | None, counts: list[int] | None) -> list[str]:
    """The human answer list (e.g. 10 answers) back from distinct answers and their counts."""
    return [a for a, c in zip(answers or [], counts or []) for _ in range(int(c))]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


@torch.no_grad()
def predict(req: EvalRequest, progress: Progress) -> tuple[pa.Table, dict[str, Any]]:
    """Rank the candidates for every question of the split; one row per question."""
    from vlpipe.data.tokenizer import load_tokenizer

    answers = req.assets.get(ANSWERS_FILE)
    if not answers:
        raise VlpipeError(f"the checkpoint has no {ANSWERS_FILE} (candidate answers): was it made by `vlpipe finetune vqa`?")
    vqa_cfg = req.task_config or VQAConfig()
    ds = req.stream(lambda settings: collate(settings, keep=KEEP, answers=False), task_config=vqa_cfg)
    tok = load_tokenizer(req.tokenizer_dir)
    keep_idx, merged = distinct_candidates(tok, answers, vqa_cfg.max_answer_len)
    candidates = [answers[i] for i in keep_idx]
    cand_ids, cand_mask = tokenize_answers(tok, candidates, vqa_cfg.max_answer_len, req.device)
    k = max(1, min(int(req.options.get("k_test") or vqa_cfg.k_test), len(candidates)))
    model = req.model.eval()
    cols: dict[str, list] = {c: [] for c in (*KEEP, "predicted", "log_likelihood", "top_answers")}
    progress.start("evaluate vqa", total=ds.total, unit="questions")
    for batch in batch_loader(ds, req.workers):
        ranked = model.rank_answers(batch["images"].to(req.device), batch["input_ids"].to(req.device),
                                    batch["attention_mask"].to(req.device), cand_ids, cand_mask, k=k)
        idx, ll = ranked.indices.cpu().tolist(), ranked.log_likelihood.float().cpu().tolist()
        for c in KEEP:
            cols[c] += batch[c]
        cols["predicted"] += [candidates[row[0]] for row in idx]
        cols["log_likelihood"] += [row[0] for row in ll]
        cols["top_answers"] += [[candidates[i] for i in row[:TOP_PREDICTIONS]] for row in idx]
        progress.advance("evaluate vqa", len(idx))
    progress.finish("evaluate vqa")
    humans = [human_answers(a, c) for a, c in zip(cols["answers"], cols["answer_counts"])]
    cols["accuracy"] = [vqa_accuracy(p, h) if h else None for p, h in zip(cols["predicted"], humans)]
    table = pa.table({**{c: cols[c] for c in ("example_id", "question_id", "image_id", "question", "answer_type")},
                      "human_answers": humans, "predicted": cols["predicted"],
                      "log_likelihood": pa.array(cols["log_likelihood"], pa.float32()),
                      "top_answers": cols["top_answers"], "accuracy": pa.array(cols["accuracy"], pa.float64())})
    info = {"candidates": len(answers), "candidates_ranked": len(candidates), "candidates_merged": len(merged),
            "k_test": k, "candidate_set": set(candidates)}
    return table, info


def score(pred: pa.Table, train_counts: Counter, candidate_set: set[str]) -> dict[str, Any]:
    """Accuracy overall and per answer type, the most-frequent-answer baseline, and the ceiling the
    candidate list allows (the best candidate's accuracy for every question)."""
    humans = pred.column("human_answers").to_pylist()
    acc = pred.column("accuracy").to_pylist()
    types = [t or "unknown" for t in pred.column("answer_type").to_pylist()]
    top = by_frequency(train_counts)[0] if train_counts else None
    scored = [i for i, h in enumerate(humans) if h]
    base = {i: vqa_accuracy(top, humans[i]) for i in scored} if top is not None else {}
    ceiling = {i: max([vqa_accuracy(a, humans[i]) for a in set(humans[i]) if a in candidate_set], default=0.0)
               for i in scored}
    per_type: dict[str, dict[str, Any]] = {}
    for name in sorted({types[i] for i in scored}):
        rows = [i for i in scored if types[i] == name]
        per_type[name] = {"questions": len(rows), "accuracy": _mean([acc[i] for i in rows]),
                          "baseline": _mean([base[i] for i in rows]) if base else None}
    return {
        "examples": pred.num_rows,
        "scored": len(scored),
        "accuracy": _mean([acc[i] for i in scored]),
        "per_answer_type": per_type,
        "candidate_ceiling": _mean([ceiling[i] for i in scored]),
        "baseline": {"rule": "always the train split's most frequent answer", "answer": top,
                     "accuracy": _mean(list(base.values())) if base else None,
                     "per_answer_type": {k: v["baseline"] for k, v in per_type.items()}},
    }


def evaluate(req: EvalRequest, progress: Progress) -> Evaluation:
    t0 = time.perf_counter()
    pred, info = predict(req, progress)
    train_counts = answer_frequencies(req.files, ["train"])
    s = score(pred, train_counts, info.pop("candidate_set"))
    if s["accuracy"] is None:
        raise InputError(req.split, f"none of the {pred.num_rows} questions has human answers to score against",
                         "evaluate a split with annotations (val, or test when its answers are known)")
    metrics = {"task": "vqa", "split": req.split, **s, **info,
               "metric": "official VQA accuracy: mean over each human left out of min(1, matches among the others / 3)",
               "headline": {"accuracy": round(s["accuracy"], 6)}, "seconds": round(time.perf_counter() - t0, 3)}
    rows = [{"scoring": "model", "metric": "accuracy", "value": s["accuracy"], "headline": True}]
    rows += [{"scoring": "model", "metric": f"accuracy:{t}", "value": v["accuracy"], "headline": False}
             for t, v in s["per_answer_type"].items()]
    b = s["baseline"]
    if b["accuracy"] is not None:
        rows.append({"scoring": "baseline:most-frequent", "metric": "accuracy", "value": b["accuracy"], "headline": False})
        rows += [{"scoring": "baseline:most-frequent", "metric": f"accuracy:{t}", "value": v, "headline": False}
                 for t, v in b["per_answer_type"].items() if v is not None]
    rows.append({"scoring": "ceiling:candidates", "metric": "accuracy", "value": s["candidate_ceiling"], "headline": False})
    return Evaluation(metrics, rows, pred)


TASK = TaskSpec(
    name="vqa",
    summary="Visual question answering: an answer decoder on the fused question states (ALBEF), ranked candidate answers.",
    data_task="vqa",
    model_class="vqa",
    build=build,
    from_pretrained=from_pretrained,
    recipe=RECIPE,
    collate=collate,
    loss=loss,
    evaluate=evaluate,
    fresh=tuple(f"{n}_m." for n in VQAModel.MOMENTUM),  # momentum copies: set from the online weights
    headline="accuracy",
    task_config=VQAConfig,
    options=(
        TaskOption("answers", "--answers", "JSON list of candidate answers (e.g. ALBEF's answer_list.json); "
                   "default: the training split's answers by frequency."),
        TaskOption("max_answers", "--max-answers", f"At most this many candidates from the training split "
                   f"(default {MAX_ANSWERS}, ALBEF's list).", int),
    ),
    prepare=prepare,
    assets=(ANSWERS_FILE,),
)
