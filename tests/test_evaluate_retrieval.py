"""`vlpipe evaluate retrieval`: the ALBEF k_test protocol end to end on the tiny checkpoint."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import run_cli
from vlpipe.data.shards import list_shards
from vlpipe.metrics.retrieval import recall_at_k
from vlpipe.retrieval import rerank as rerank_lib
from vlpipe.retrieval.embed import embed_images, embed_texts, load_eval_set
from vlpipe.stages.cli import app
from vlpipe.train.pretrain import load_checkpoint

METRICS = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")



def _metrics(root, name):
    return json.loads((root / "results" / name / "metrics.json").read_text())


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint):
    root = tiny_checkpoint.parents[1]
    r = run_cli(root, "evaluate", "retrieval", "--checkpoint", "ck", "--data", "w", "--split", "test",
                "--k-test", "3", "--device", "cpu")
    return root, r.stdout


def test_artifact_files_and_ranges(evaluated):
    root, out = evaluated
    folder = root / "results" / "ck-retrieval-test"
    assert (folder / "metrics.json").is_file() and (folder / "metrics.parquet").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "results"
    assert {(i["kind"], i["name"]) for i in manifest["inputs"]} == {("checkpoint", "ck"), ("dataset", "w")}
    m = _metrics(root, "ck-retrieval-test")
    assert m["images"] == 4 and m["texts"] == 20 and m["rerank_score"] == "itm"
    for block in (m["itc"], m["rerank"]["itm"], m["rerank"]["itm+itc"], m["rerank"]["itm+itc/temp"], m["headline"]):
        assert set(METRICS) <= set(block)
        assert all(0.0 <= block[k] <= 100.0 for k in METRICS)
    assert m["headline"] == m["rerank"]["itm"]
    rows = pq.read_table(folder / "metrics.parquet").to_pylist()
    assert len(rows) == 4 * len(METRICS)
    assert {r["scoring"] for r in rows} == {"itc", "rerank:itm", "rerank:itm+itc", "rerank:itm+itc/temp"}
    assert {r["scoring"] for r in rows if r["headline"]} == {"rerank:itm"}
    for label in ("ITC", "rerank itm", "rerank itm+itc/temp", "TR@1", "IR@10", "mean"):
        assert label in out


def test_itc_numbers_equal_recall_of_the_itc_matrix(evaluated, tiny_checkpoint):
    root, _ = evaluated
    model, cfg, tok = load_checkpoint(tiny_checkpoint)
    es = load_eval_set(list_shards(root / "datasets" / "w"), "test")
    img = embed_images(model, es.image_bytes, es.image_paths, cfg.model.vision.image_size, 64)
    txt = embed_texts(model, tok, es.captions, 64, max_len=cfg.model.text.max_len)
    direct = recall_at_k(img @ txt.T, es.text_to_image)
    got = _metrics(root, "ck-retrieval-test")["itc"]
    for k in METRICS:
        assert got[k] == pytest.approx(direct[k], abs=1e-3), k


def test_k_test_larger_than_the_split_is_clamped(evaluated):
    root, _ = evaluated
    r = run_cli(root, "evaluate", "retrieval", "--checkpoint", "ck", "--data", "w", "--k-test", "500",
                "--max-images", "3", "--out", "ev-clamp", "--device", "cpu")
    m = _metrics(root, "ev-clamp")
    assert m["images"] == 3 and m["texts"] == 15
    assert (m["k_test_i2t"], m["k_test_t2i"]) == (15, 3)
    assert m["itm_pairs"] == 3 * 15  # every pair reranked once, though both directions use it
    assert "clamped" in r.stdout
    # reranking every candidate leaves no ITC fallback: R@10 covers all 3 images
    assert m["rerank"]["itm"]["ir_r10"] == 100.0


def test_existing_results_need_overwrite(evaluated):
    root, _ = evaluated
    args = ["--root", str(root), "evaluate", "retrieval", "--checkpoint", "ck", "--data", "w", "--k-test", "3",
            "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output


def test_itm_that_agrees_with_ground_truth_gives_perfect_rerank(evaluated, monkeypatch):
    """Replace the ITM head's verdict by the truth: every protocol path must then reach R@1 = 100."""
    root, _ = evaluated
    es = load_eval_set(list_shards(root / "datasets" / "w"), "test")
    truth = torch.as_tensor(es.text_to_image)

    def oracle(self, image_idx, text_idx):
        self.pairs_scored += len(image_idx)
        return (truth[torch.as_tensor(text_idx)] == torch.as_tensor(image_idx)).float() * 10.0 - 5.0

    monkeypatch.setattr(rerank_lib.PairScorer, "__call__", oracle)
    run_cli(root, "evaluate", "retrieval", "--checkpoint", "ck", "--data", "w", "--k-test", "20",
            "--out", "ev-oracle", "--device", "cpu")
    m = _metrics(root, "ev-oracle")
    for mode in ("itm", "itm+itc"):
        assert m["rerank"][mode]["tr_r1"] == 100.0 and m["rerank"][mode]["ir_r1"] == 100.0
        assert m["rerank"][mode]["r_mean"] == 100.0


def test_perfect_itm_library_level():
    """Same check without a model: 3 images x 2 captions, ITC ranks everything wrong."""
    t2i = torch.tensor([0, 0, 1, 1, 2, 2])
    sim = -(t2i[None, :] == torch.arange(3)[:, None]).float()  # true pairs score lowest
    both = rerank_lib.rerank_both_directions(sim, 6, lambda i, t: (t2i[t] == i).float(), temp=1.0)
    itc, rr = rerank_lib.retrieval_metrics(sim, t2i.numpy(), both)
    assert itc["tr_r1"] == 0.0 and itc["ir_r1"] == 0.0
    assert rr["itm"]["tr_r1"] == 100.0 and rr["itm"]["ir_r1"] == 100.0
