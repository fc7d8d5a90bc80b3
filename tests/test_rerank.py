"""ITM rerank: the score definition, combine modes, batching across queries, non-candidates below."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import run_cli
from vlpipe.errors import VlpipeError
from vlpipe.progress import RecordingProgress
from vlpipe.retrieval.rerank import (
    RERANK_SCORES,
    PairScorer,
    Reranked,
    combine,
    itm_scores,
    match_probability,
    rerank_both_directions,
    rerank_candidates,
    topk_candidates,
)

CAPTIONS = ["a dog", "two red circles above a car on snow", "a puppy on the sand next to a big blue umbrella",
            "three dogs on the grass", "a cat"]



@pytest.fixture(scope="module")
def banks(tiny_checkpoint):
    """The tiny model with 6 encoded images and 5 encoded captions of different lengths."""
    from vlpipe.retrieval.rerank import encode_images, encode_texts
    from vlpipe.train.pretrain import load_checkpoint

    model, cfg, tok = load_checkpoint(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    size = cfg.model.vision.image_size
    i_tok, i_feat = encode_images(model, torch.randn(6, 3, size, size, generator=g))
    t_tok, t_mask, t_feat = encode_texts(model, tok, CAPTIONS, cfg.model.text.max_len)
    return model, i_tok, i_feat, t_tok, t_mask, t_feat


def test_itm_score_is_match_log_odds_of_unpadded_pair(banks):
    model, i_tok, _, t_tok, t_mask, _ = banks
    for j in range(len(CAPTIONS)):
        n = int(t_mask[j].sum())  # the caption alone, no padding
        logits = model.itm_logits(t_tok[j:j + 1, :n], t_mask[j:j + 1, :n], i_tok[2:3])
        got = itm_scores(model, i_tok[2:3], t_tok[j:j + 1], t_mask[j:j + 1])
        assert got.item() == pytest.approx((logits[0, 1] - logits[0, 0]).item(), abs=1e-5)
        # ranks as the softmax probability of the match class (index 1)
        assert match_probability(got).item() == pytest.approx(logits.softmax(-1)[0, 1].item(), abs=1e-5)


def test_batched_across_queries_equals_one_query_at_a_time(banks):
    model, i_tok, _, t_tok, t_mask, _ = banks
    scorer = PairScorer(model, i_tok, t_tok, t_mask, batch_size=7)  # batches straddle queries
    g = torch.Generator().manual_seed(1)
    cand = torch.stack([torch.randperm(6, generator=g)[:4] for _ in range(len(CAPTIONS))])  # text queries
    itc = torch.rand(cand.shape, generator=g)
    done = []
    together = rerank_candidates(cand, itc, scorer, "text", batch_size=7, on_queries=done.append)
    assert sum(done) == len(CAPTIONS)
    for q in range(len(CAPTIONS)):
        alone_scorer = PairScorer(model, i_tok, t_tok[q:q + 1], t_mask[q:q + 1], batch_size=1)
        alone = rerank_candidates(cand[q:q + 1], itc[q:q + 1], alone_scorer, "text", batch_size=1)
        torch.testing.assert_close(together.itm[q], alone.itm[0], atol=1e-5, rtol=1e-5)
    # image queries over text candidates use the same pairs the other way round
    by_image = rerank_candidates(torch.tensor([[0, 3], [4, 1]]), torch.zeros(2, 2), scorer, "image", batch_size=3)
    direct = scorer(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 3, 4, 1]))
    torch.testing.assert_close(by_image.itm.reshape(-1), direct)


def test_combine_modes():
    itm, itc = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.1, 0.9, 0.3])
    assert RERANK_SCORES == ("itm", "itm+itc", "itm+itc/temp")
    torch.testing.assert_close(combine(itm, itc, "itm"), itm)
    torch.testing.assert_close(combine(itm, itc, "itm+itc"), itm + itc)
    torch.testing.assert_close(combine(itm, itc, "itm+itc/temp", 0.05), itm + itc * 20.0)
    with pytest.raises(VlpipeError, match="temperature"):
        combine(itm, itc, "itm+itc/temp")  # the logit needs the model's temperature
    out = combine(itm, itc)  # the paper's ITM-only score is the default
    out[0] = 99.0
    assert itm[0] == 2.0  # a copy, never the caller's tensor
    with pytest.raises(VlpipeError, match="itm\\+itc"):
        combine(itm, itc, "itc+itm")
    r = Reranked(torch.tensor([[2, 0, 1]]), itc[None], itm[None], temp=0.05)
    assert r.order("itm").tolist() == [[0, 2, 1]]
    assert r.order("itm+itc").tolist() == [[0, 2, 1]]
    # as logits the ITC gaps (0.8 cosine = 16 at temperature 0.05) outweigh the ITM log-odds
    assert r.order("itm+itc/temp").tolist() == [[1, 2, 0]]


def test_itc_temperature_is_the_clamped_learned_value(tiny_checkpoint):
    from vlpipe.train.pretrain import load_checkpoint

    model = load_checkpoint(tiny_checkpoint)[0]  # its own copy: the module's banks stay untouched
    with torch.no_grad():
        model.temp.fill_(0.05)
    assert model.itc_temperature() == pytest.approx(0.05)
    with torch.no_grad():
        model.temp.fill_(1e-6)  # below the clamp: training would have used temp_min
    assert model.itc_temperature() == pytest.approx(model.cfg.temp_min)


def test_non_candidates_stay_below_candidates_in_itc_order():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
                        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    cand, itc = topk_candidates(sim, 2)
    assert cand.tolist() == [[0, 1], [5, 4]]
    r = Reranked(cand, itc, torch.tensor([[-50.0, -60.0], [-70.0, -80.0]]), temp=0.07)  # very low ITM scores
    for mode in RERANK_SCORES:
        full = r.full_matrix(sim, mode)
        for q in range(2):
            is_cand = torch.zeros(6, dtype=torch.bool)
            is_cand[cand[q]] = True
            assert full[q][is_cand].min() > full[q][~is_cand].max()
            rest = full[q][~is_cand]
            # the rest keep their ITC order
            assert torch.equal(torch.argsort(rest, descending=True), torch.argsort(sim[q][~is_cand], descending=True))
        torch.testing.assert_close(full.gather(1, cand), r.scores(mode))
    assert topk_candidates(sim, 100)[0].shape == (2, 6)  # k clamped to the items there are


def test_both_directions_score_each_pair_once():
    g = torch.Generator().manual_seed(3)
    sim = torch.rand(5, 12, generator=g)
    calls = []

    def fn(img, txt):
        calls.append(len(img))
        return (img * 100 + txt).float()  # identifies the pair

    progress = RecordingProgress()
    both = rerank_both_directions(sim, 4, fn, batch_size=5, progress=progress)
    assert progress.counts["rerank"] == 5 + 12 and progress.finished == ["rerank"]
    pairs_i2t = {(i, int(t)) for i in range(5) for t in both.i2t.candidates[i]}
    pairs_t2i = {(int(i), t) for t in range(12) for i in both.t2i.candidates[t]}
    assert both.itm_pairs == len(pairs_i2t | pairs_t2i) == sum(calls)
    assert max(calls) <= 5
    expect_i2t = torch.arange(5)[:, None] * 100 + both.i2t.candidates
    expect_t2i = both.t2i.candidates * 100 + torch.arange(12)[:, None]
    torch.testing.assert_close(both.i2t.itm, expect_i2t.float())
    torch.testing.assert_close(both.t2i.itm, expect_t2i.float())


def test_rerank_stage_over_a_candidates_table(tiny_checkpoint, tmp_path):
    root = tiny_checkpoint.parents[1]
    rows = [{"query": q, "image_id": f"coco_{i}", "itc": 0.1 * i} for q in ("a dog", "a red car") for i in (1, 2, 3)]
    f = tmp_path / "cands.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    run_cli(root, "rerank", "--candidates", f, "--checkpoint", "ck", "--data", "w", "--out", "rr-t",
            "--rerank-score", "itm+itc", "--device", "cpu")
    t = pq.read_table(root / "results" / "rr-t" / "results.parquet").to_pylist()
    assert len(t) == 6 and {r["query"] for r in t} == {"a dog", "a red car"}
    for q in ("a dog", "a red car"):
        mine = [r for r in t if r["query"] == q]
        assert [r["rank"] for r in mine] == [1, 2, 3]
        assert [r["score"] for r in mine] == sorted((r["score"] for r in mine), reverse=True)
        for r in mine:
            assert r["score"] == pytest.approx(r["itm"] + r["itc"], abs=1e-5)
        assert sorted(r["itc_rank"] for r in mine) == [1, 2, 3]
