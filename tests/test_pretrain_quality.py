"""albef-tiny really learns: a short pretrain on a small synthetic world, every loss falls,
zero-shot ITC retrieval on the held-out test split is well above chance, the pre-trained
model fine-tunes to VE and VQA faster than the same model from random initialisation, and its
retrieval, grounding and NLVR2 fine-tunes beat their trivial baselines.

The full-size figures (5k images, 64 px, 500 steps, `make demo`; 300 fine-tune steps) are in the
README and docs/finetune.md; this is the small, fast version with the same preset, only at 32 px.
Measured (one thread, about 1.5 minutes): 250 steps give mean recall 22.7 where chance is a mean of
6.7 (R@1 1.25); before albef-tiny's text init_std 0.05 + mean pooling it was 19.75.
"""

from __future__ import annotations

import json
import math

import duckdb
import pytest

from .conftest import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality") / "artifacts"
    raw = root / "raw" / "w"
    run_cli(root, "synth", "--out", raw, "--images", "800", "--size", "32", "--seed", "3",
            "--tasks", "captions,snli_ve,vqa,refcoco,nlvr2")  # each task has its own random stream: the captions do not change
    run_cli(root, "ingest", "karpathy", raw / "dataset_coco.json", "--images", raw, "--out", "w")
    run_cli(root, "tokenizer", "train", "--data", "w", "--vocab", "500", "--out", "tok")
    run_cli(root, "pretrain", "--shards", "w", "--tokenizer", "tok", "--config", "albef-tiny", "--steps", "250",
            "--workers", "0", "--eval-images", "100", "--out", "q", "--set", "model.vision.image_size=32")
    return root / "checkpoints" / "q"


@pytest.mark.slow
def test_every_loss_falls(trained):
    path = trained / "metrics.parquet"
    rows = duckdb.sql(f"select loss, loss_itc, loss_itm, loss_mlm from '{path}' order by step").fetchall()
    assert len(rows) == 250

    def mean(i, part):
        return sum(r[i] for r in part) / len(part)

    first, last = rows[:20], rows[-20:]
    assert mean(0, last) < mean(0, first) - 0.5  # measured 12.6 -> 9.9
    assert mean(2, last) < mean(2, first)  # ITM, measured 0.642 -> 0.601
    assert mean(3, last) < mean(3, first) - 0.5  # MLM, measured 5.95 -> 4.26
    # ITC gains candidates as the queue fills (its starting value is low for that reason), so it is
    # judged against chance: the loss of uniform scores over batch + queue = ln(32 + 512)
    assert mean(1, last) < math.log(32 + 512) - 0.2  # measured 5.06 vs 6.30


@pytest.mark.slow
def test_zero_shot_retrieval_is_well_above_chance(trained):
    z = json.loads((trained / "zero_shot.json").read_text())
    assert z["split"] == "test" and z["images"] == 80 and z["texts"] == 400
    chance = {k: min(100.0, k * z["chance_r1"]) for k in (1, 5, 10)}
    chance_mean = sum(chance.values()) / 3
    # measured 23.3 against a chance mean of 6.7; the bound leaves a wide margin for other CPUs
    assert z["r_mean"] >= 2.0 * chance_mean, z
    assert (z["tr_r10"] + z["ir_r10"]) / 2 >= 2.0 * chance[10], z
    assert (z["tr_r1"] + z["ir_r1"]) / 2 >= 1.5 * chance[1], z  # R@1 on 80 images moves in steps of 1.25


# -- transfer: pre-trained vs random initialisation ----------------------------------------------------
#
# A few fine-tune steps at the recipe's lr for albef-tiny (0.2 x 3e-4); the random start is the same
# preset written by `pretrain --init-only` (measured with one step at lr 1e-12, the same weights). VE
# after 80 steps: 0.790 pre-trained vs 0.669 random init, whose contradiction recall is 0.01 (a
# second run: 0.794 vs 0.717, recall 0.56 vs 0.19). VQA after 40 steps: 0.501 vs 0.347 ('other'
# answers 0.39 vs 0.08; numbers and yes/no equal, from the answer priors). At this size
# pre-training is a head start: by 150 steps the random start catches up (VE 0.79 vs 0.80, VQA 0.55
# vs 0.56). At the demo's size it does not (300 steps: VE 0.84 vs 0.78, VQA 0.59 vs 0.56,
# docs/finetune.md).
STEPS = {"ve": 80, "vqa": 40, "grounding": 80, "nlvr2": 80}


@pytest.fixture(scope="module")
def starts(trained):
    root = trained.parent.parent
    raw = root / "raw" / "w"
    run_cli(root, "ingest", "ve", *(raw / f"snli_ve_{n}.jsonl" for n in ("train", "dev", "test")), "--out", "ve",
            "--workers", "0")
    run_cli(root, "ingest", "vqa", raw / "v2_OpenEnded_mscoco_train2014_questions.json",
            raw / "v2_mscoco_train2014_annotations.json", raw / "v2_OpenEnded_mscoco_val2014_questions.json",
            raw / "v2_mscoco_val2014_annotations.json", raw / "dataset_coco.json", "--out", "vqa", "--workers", "0")
    run_cli(root, "pretrain", "--shards", "w", "--tokenizer", "tok", "--config", "albef-tiny", "--init-only",
            "--workers", "0", "--eval-split", "", "--out", "random", "--set", "model.vision.image_size=32")
    return root


def _finetune_and_evaluate(root, task, start, lr="6e-05"):
    name = f"{task}-{start}"
    out = run_cli(root, "finetune", task, "--checkpoint", start, "--data", task, "--out", name, "--eval-split", "",
                  "--steps", STEPS[task], "--workers", "0").output
    assert f"lr {lr}" in out and "fusion layers at 10x the lr" in out  # albef-tiny's recipe lr, fusion lr
    run_cli(root, "evaluate", task, "--checkpoint", name, "--data", task, "--split", "val", "--out", name,
            "--workers", "0")
    return json.loads((root / "results" / name / "metrics.json").read_text())


@pytest.mark.slow
def test_pretraining_transfers_to_ve(starts):
    pre, rand = (_finetune_and_evaluate(starts, "ve", s) for s in ("q", "random"))
    assert pre["examples"] == rand["examples"] >= 400
    # measured 0.790 vs 0.669 and, in another run, 0.794 vs 0.717 (majority 0.333)
    assert pre["accuracy"] >= rand["accuracy"] + 0.03, (pre["accuracy"], rand["accuracy"])
    assert pre["accuracy"] >= pre["baseline"]["accuracy"] + 0.3
    # the random start has not yet learned to tell contradictions; the pre-trained one has
    # (recall 0.54 vs 0.01, 0.56 vs 0.19)
    contra = [m["per_class"]["contradiction"]["recall"] for m in (pre, rand)]
    assert contra[0] >= contra[1] + 0.2, contra


@pytest.mark.slow
def test_pretraining_transfers_to_vqa(starts):
    pre, rand = (_finetune_and_evaluate(starts, "vqa", s) for s in ("q", "random"))
    assert pre["scored"] == rand["scored"] >= 250
    # measured 0.501 vs 0.347 overall, 'other' 0.39 vs 0.08 (most frequent answer: 0.16)
    assert pre["accuracy"] >= rand["accuracy"] + 0.07, (pre["accuracy"], rand["accuracy"])
    other = [m["per_answer_type"]["other"]["accuracy"] for m in (pre, rand)]
    assert other[0] >= other[1] + 0.15, other
    assert pre["accuracy"] >= pre["baseline"]["accuracy"] + 0.2


# -- grounding and NLVR2 against their trivial baselines ---------------------------------------------
#
# Measured on this world after 80 fine-tune steps from `q`: grounding (at the recipe's 48 px) 0.372
# on 360 val expressions against a random proposal 0.298 and the largest 0.336 (150 steps: 0.353; zero-shot
# from `q`: 0.303); NLVR2 0.569 on 160 val pairs against the majority class 0.500. Both are small
# margins at this size (the demo-size figures are in docs/finetune.md): the bounds assert the gain
# over the random proposal / the majority class, not over the largest proposal.


@pytest.fixture(scope="module")
def pair_tasks(trained):
    root = trained.parent.parent
    raw = root / "raw" / "w"
    run_cli(root, "ingest", "refcoco", raw / "refcoco+/refs(unc).p", raw / "refcoco+/instances.json",
            raw / "refcoco+/dets.json", "--images", raw, "--out", "grounding", "--workers", "0")
    run_cli(root, "ingest", "nlvr2", *(raw / f"nlvr2_{n}.json" for n in ("train", "dev", "test")), "--out", "nlvr2",
            "--workers", "0")
    return root


@pytest.mark.slow
def test_grounding_beats_a_random_proposal(pair_tasks):
    m = _finetune_and_evaluate(pair_tasks, "grounding", "q", lr="3e-05")
    assert m["scored"] >= 300
    assert m["accuracy"] >= m["baseline"]["random"]["accuracy"] + 0.03, m["accuracy"]


@pytest.mark.slow
def test_nlvr2_beats_the_majority_class(pair_tasks):
    m = _finetune_and_evaluate(pair_tasks, "nlvr2", "q")
    assert m["examples"] >= 150
    assert m["accuracy"] >= m["baseline"]["accuracy"] + 0.03, m["accuracy"]


@pytest.mark.slow
def test_retrieval_finetune_is_well_above_chance(trained):
    root = trained.parent.parent
    out = run_cli(root, "finetune", "retrieval", "--checkpoint", "q", "--data", "w", "--out", "q-ret", "--steps", "60",
                  "--eval-split", "", "--workers", "0").output
    assert "fusion layers at 10x the lr" in out
    run_cli(root, "evaluate", "retrieval", "--checkpoint", "q-ret", "--data", "w", "--split", "test", "--k-test", "16",
            "--out", "q-ret", "--workers", "0")
    m = json.loads((root / "results" / "q-ret" / "metrics.json").read_text())
    assert m["images"] == 80
    chance_mean = sum(min(100.0, k * m["chance_r1"]) for k in (1, 5, 10)) / 3
    # measured 25.4 (ITC) and 27.3 (ITM-reranked) against a chance mean of 6.7; zero-shot ~23
    assert m["itc"]["r_mean"] >= 2.0 * chance_mean and m["headline"]["r_mean"] >= 2.0 * chance_mean, m
