"""VQA: the answer decoder starts as the fusion layers, the weighted LM loss by hand, two-step answer
ranking (brute force and after overfitting), and the official VQA accuracy and normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from vlpipe.config import ModelConfig, load_config
from vlpipe.metrics.vqa import (
    accuracy_from_count,
    normalize_answer,
    normalize_punctuation,
    normalize_words,
    vqa_accuracy,
    vqa_soft_score,
)
from vlpipe.models import ALBEF
from vlpipe.models.vqa import (
    VQAConfig,
    VQAModel,
    causal_mask,
    next_token_targets,
    sequence_nll,
    weighted_answer_loss,
)

CLS, SEP, PAD = 2, 3, 0


def tiny(*overrides: str) -> ModelConfig:
    return load_config("albef-tiny", [
        "model.queue_size=64", "model.vision.image_size=32", "model.vision.depth=2", "model.text.text_layers=2",
        "model.text.fusion_layers=2", "model.text.vocab_size=200", *overrides]).model


def answers(*rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens [SEP] rows padded with [PAD]."""
    length = max(len(r) for r in rows) + 2
    ids = torch.full((len(rows), length), PAD)
    for i, r in enumerate(rows):
        ids[i, : len(r) + 2] = torch.tensor([CLS, *r, SEP])
    return ids, (ids != PAD).long()


def questions(b: int, length: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 200, (b, length), generator=g)
    ids[:, 0] = CLS
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1:, -2:] = 0
    ids[mask == 0] = PAD
    images = torch.randn(b, 3, 1, 1, generator=g) + 0.3 * torch.randn(b, 3, 32, 32, generator=g)
    return images, ids, mask


@pytest.fixture(scope="module")
def albef():
    torch.manual_seed(0)
    return ALBEF(tiny()).eval()


def test_decoder_initialised_from_fusion_layers(albef):
    model, report = VQAModel.from_albef(albef)
    assert report.missing == [] and report.unexpected == [] and report.reshaped == []
    own = model.state_dict()
    ref = albef.state_dict()
    for i in range(2):
        for name, value in albef.fusion_encoder.layer[i].state_dict().items():
            assert torch.equal(own[f"answer_decoder.layer.{i}.{name}"], value), name
    for name, value in albef.text_encoder.embeddings.state_dict().items():
        assert torch.equal(own[f"answer_decoder.embeddings.{name}"], value), name
    for name in ("transform.dense.weight", "transform.LayerNorm.bias", "bias", "decoder.weight"):
        assert torch.equal(own[f"answer_decoder.lm_head.{name}"], ref[f"mlm_head.{name}"]), name
    for name in ("visual_encoder.pos_embed", "text_encoder.layer.1.output.dense.weight",
                 "fusion_encoder.layer.1.crossattention.self.value.weight"):
        assert torch.equal(own[name], ref[name])
    dec = model.answer_decoder
    # tied to the decoder's OWN word embeddings; copies, not the fusion encoder's tensors
    assert dec.lm_head.decoder.weight is dec.embeddings.word_embeddings.weight
    assert dec.embeddings.word_embeddings.weight.data_ptr() != model.text_encoder.embeddings.word_embeddings.weight.data_ptr()
    assert dec.layer[0].attention.self.query.weight.data_ptr() != model.fusion_encoder.layer[0].attention.self.query.weight.data_ptr()


def test_deeper_decoder_and_other_image_width_start_fresh_where_nothing_fits():
    torch.manual_seed(0)
    albef = ALBEF(tiny("model.vision.width=64", "model.vision.heads=2"))
    model, report = VQAModel.from_albef(albef, vqa=VQAConfig(decoder_layers=3))
    assert len(model.answer_decoder.layer) == 3
    assert any(k.startswith("answer_decoder.layer.2.") for k in report.missing)
    assert "answer_decoder.layer.0.crossattention.self.key.weight" in report.missing  # reads text width, not 64
    assert "answer_decoder.layer.0.crossattention.self.query.weight" not in report.missing
    assert model.answer_decoder.layer[0].crossattention.self.key.weight.shape == (128, 128)


def test_save_and_load_with_the_tied_lm_head(tmp_path, albef):
    from vlpipe.train.checkpoint import load_weights, save_weights

    model, _ = VQAModel.from_albef(albef)
    model.eval()
    save_weights(model, tmp_path)  # safetensors keeps one name of the tied pair
    fresh = VQAModel(albef.cfg).eval()
    load_weights(fresh, tmp_path, strict=True)
    assert fresh.answer_decoder.lm_head.decoder.weight is fresh.answer_decoder.embeddings.word_embeddings.weight
    images, q_ids, q_mask = questions(2)
    a_ids, a_mask = answers([11, 12], [13])
    with torch.no_grad():
        assert torch.allclose(fresh.encode_question(images, q_ids, q_mask), model.encode_question(images, q_ids, q_mask))
        args = (images, q_ids, q_mask, a_ids, a_mask, torch.ones(2), torch.tensor([1, 1]))
        assert torch.allclose(fresh(*args)["loss"], model(*args)["loss"])


def test_vqa_config_round_trip_and_checks():
    cfg = VQAConfig(decoder_layers=4, k_test=16)
    assert VQAConfig.from_dict(cfg.to_dict()) == cfg
    assert VQAConfig().layers_for(tiny().text) == 2
    with pytest.raises(Exception, match="unknown VQA setting"):
        VQAConfig.from_dict({"layers": 2})


def test_sequence_nll_and_weighted_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    tokens = torch.tensor([0, 2, 2])
    seq = torch.tensor([0, 0, 1])
    nll = sequence_nll(logits, tokens, seq, 2)

    def ce(row, t):
        return -(row[t] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    expect = [ce(rows[0], 0) + ce(rows[1], 2), ce(rows[2], 2)]
    assert torch.allclose(nll, torch.tensor(expect), atol=1e-6)
    loss = weighted_answer_loss(nll, torch.tensor([0.7, 0.3]), n_questions=1)
    assert math.isclose(float(loss), 0.7 * expect[0] + 0.3 * expect[1], rel_tol=1e-6)


def test_targets_and_causal_mask():
    ids, mask = answers([7, 8], [9])
    t = next_token_targets(ids, mask)
    assert t.tokens.tolist() == [7, 8, SEP, 9, SEP] and t.seq.tolist() == [0, 0, 0, 1, 1]
    m = causal_mask(mask)
    assert m.shape == (2, 1, 4, 4)
    assert m[0, 0].tolist() == [[True, False, False, False], [True, True, False, False],
                                [True, True, True, False], [True, True, True, True]]
    assert m[1, 0, 3].tolist() == [True, True, True, False]  # padding is never a key


def test_lm_loss_equals_hand_computed_weighted_cross_entropy(albef):
    model, _ = VQAModel.from_albef(albef)
    model.eval()
    images, q_ids, q_mask = questions(2)
    a_ids, a_mask = answers([11, 12], [13], [14, 15, 16])  # question 0: answer 0; question 1: answers 1, 2
    weights = torch.tensor([1.0, 0.6, 0.4])
    per_q = torch.tensor([1, 2])
    loss = model(images, q_ids, q_mask, a_ids, a_mask, weights, per_q)["loss"]

    with torch.no_grad():
        states = model.encode_question(images, q_ids, q_mask)
        total = 0.0
        for a, q in enumerate([0, 1, 1]):
            length = int(a_mask[a].sum())
            logits = model.answer_decoder.logits(a_ids[a:a + 1, :length], a_mask[a:a + 1, :length],
                                                 states[q:q + 1], q_mask[q:q + 1])[0]
            nll = -sum(torch.log_softmax(logits[t], -1)[a_ids[a, t + 1]] for t in range(length - 1))
            total += float(weights[a]) * float(nll)
    assert math.isclose(loss.item(), total / 2, rel_tol=1e-5)
    loss.backward()
    assert model.answer_decoder.layer[0].crossattention.self.query.weight.grad.abs().sum() > 0
    assert next(model.visual_encoder.patch_embed.parameters()).grad.abs().sum() > 0


def test_padding_and_later_tokens_do_not_change_earlier_predictions(albef):
    model, _ = VQAModel.from_albef(albef)
    model.eval()
    images, q_ids, q_mask = questions(1)
    with torch.no_grad():
        states = model.encode_question(images, q_ids, q_mask)
        a, am = answers([11, 12, 13])
        b = a.clone()
        b[0, 3] = 40  # change the last answer token
        la = model.answer_decoder.logits(a, am, states, q_mask)
        lb = model.answer_decoder.logits(b, am, states, q_mask)
        assert torch.allclose(la[0, :3], lb[0, :3], atol=1e-5) and not torch.allclose(la[0, 3], lb[0, 3])
        short, sm = answers([11])
        padded = torch.cat([short, torch.full((1, 3), PAD)], 1)
        pm = torch.cat([sm, torch.zeros(1, 3, dtype=torch.long)], 1)
        n1 = model.answer_decoder.answer_nll(short, sm, states, q_mask)
        n2 = model.answer_decoder.answer_nll(padded, pm, states, q_mask)
        assert torch.allclose(n1, n2, atol=1e-5)


def test_rank_answers_equals_brute_force_log_likelihood(albef):
    model, _ = VQAModel.from_albef(albef)
    model.eval()
    images, q_ids, q_mask = questions(2, seed=3)
    cand_ids, cand_mask = answers([11], [12, 13], [14], [15, 16, 17], [18], [11, 19])
    with torch.no_grad():
        states = model.encode_question(images, q_ids, q_mask)
        brute = torch.stack([-model.answer_decoder.answer_nll(cand_ids, cand_mask, states[i:i + 1].expand(6, -1, -1),
                                                               q_mask[i:i + 1].expand(6, -1)) for i in range(2)])
    ranked = model.rank_answers(images, q_ids, q_mask, cand_ids, cand_mask, k=6, chunk=4)
    assert ranked.indices.shape == (2, 6)
    assert torch.equal(ranked.indices, brute.argsort(1, descending=True))
    assert torch.allclose(ranked.log_likelihood, brute.sort(1, descending=True).values, atol=1e-4)
    # k < C: the survivors are the k best first tokens; the winner is the most likely of them
    top = model.rank_answers(images, q_ids, q_mask, cand_ids, cand_mask, k=3)
    with torch.no_grad():
        hidden = model.answer_decoder(cand_ids[:1, :1].expand(2, 1), torch.ones(2, 1, dtype=torch.long), states, q_mask)
        first = torch.log_softmax(model.answer_decoder.lm_head(hidden[:, 0]), -1)[:, cand_ids[:, 1]]
    for i in range(2):
        assert set(top.indices[i].tolist()) == set(first[i].topk(3).indices.tolist())
        kept = top.indices[i].tolist()
        assert top.indices[i, 0] == max(kept, key=lambda c: float(brute[i, c]))


def test_rank_answers_finds_the_trained_answer_after_overfitting():
    torch.manual_seed(1)
    model, _ = VQAModel.from_albef(ALBEF(tiny()))
    images, q_ids, q_mask = questions(2, seed=5)
    cand_ids, cand_mask = answers([21], [22], [23, 24], [25], [21, 26])
    # question 0 -> "23 24"; question 1 -> "21 26", whose first token is also candidate 0's: the
    # answers differ per question, so ranking must read the question and image
    gold = torch.tensor([2, 4])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    first_loss = None
    for _ in range(60):
        out = model(images, q_ids, q_mask, cand_ids[gold], cand_mask[gold], torch.ones(2), torch.tensor([1, 1]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first_loss = first_loss if first_loss is not None else out["loss"].item()
    assert out["loss"].item() < 0.1 * first_loss
    model.eval()
    ranked = model.rank_answers(images, q_ids, q_mask, cand_ids, cand_mask, k=3)
    assert ranked.indices[:, 0].tolist() == gold.tolist()
    assert (ranked.log_likelihood[:, 0] > -1.0).all()


# --------------------------------------------------------------------------------------------------
# VQA accuracy and the official normalisation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, normalized", [
    ("Two", "2"),
    ("two dogs.", "2 dogs"),
    ("The cat", "cat"),
    ("a red ball!", "red ball"),
    ("yes ", "yes"),
    ("dont know", "don't know"),
    ("youd've", "you'd've"),
    ("it'dve", "it'd've"),
    ("1,000", "1000"),
    ("3.5", "3.5"),
    ("t-shirt", "t shirt"),
    ("left , right", "left right"),
    ("none", "0"),
    ("Black and White\n", "black and white"),
    ("a.m.", "am"),
])
def test_official_answer_normalisation(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_normalisation_steps():
    assert normalize_punctuation("what?") == "what "
    assert normalize_punctuation("what ?") == "what "  # next to a space: deleted
    assert normalize_punctuation("1,000 (approx)") == "1000 approx"  # digit-comma-digit: all deleted
    assert normalize_words("An Apple and THE ten") == "apple and 10"
    assert normalize_words("cant") == "can't" and normalize_words("wed") == "wed"


def test_vqa_accuracy_is_the_leave_one_out_average():
    humans = ["2"] * 3 + ["3"] * 7
    assert math.isclose(vqa_accuracy("two", humans), 0.9)  # (3 * 2/3 + 7 * 1) / 10
    assert math.isclose(vqa_accuracy("3", humans), 1.0)
    assert vqa_accuracy("4", humans) == 0.0
    for n in range(11):
        humans = ["yes"] * n + ["no"] * (10 - n)
        official = vqa_accuracy("yes", humans)
        assert math.isclose(official, accuracy_from_count(n)), n
        soft = vqa_soft_score("yes", humans)
        assert math.isclose(soft, min(1.0, n / 3))
        # the shorthand agrees at 0 and from 4 matches, and is at most 0.1 higher in between
        if n == 0 or n >= 4:
            assert math.isclose(official, soft)
        else:
            assert 0 < soft - official <= 0.1 + 1e-9
    assert [round(accuracy_from_count(n), 6) for n in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]


def test_human_answers_get_punctuation_only_when_they_disagree():
    # agreeing answers are compared as stored (the official script's asymmetry), disagreeing ones
    # lose their punctuation like the prediction does
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 5 + ["shirt"] * 5) == 1.0
    assert vqa_accuracy("T-Shirt", ["t shirt"] * 10) == 1.0
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])
