"""Momentum distillation when fine-tuning VE, NLVR2 and VQA (ALBEF's MoD): the mixed loss by hand,
the EMA step inside a training call, distill on vs off, and the momentum copies in a checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpipe.config import load_config
from vlpipe.finetune.spec import LossContext
from vlpipe.finetune.tasks import TASKS
from vlpipe.models.albef import ALBEF
from vlpipe.models.nlvr2 import nlvr2_loss
from vlpipe.models.ve import ve_loss
from vlpipe.models.vqa import distilled_answer_nll, sequence_nll, sequence_soft_ce, weighted_answer_loss
from vlpipe.objectives.distill import distill_mix, distilled_cross_entropy, soft_cross_entropy
from vlpipe.train.checkpoint import load_state_dict, load_weights, save_weights

MOMENTUM = 0.9  # a visible EMA step


def tiny(*overrides: str):
    """A 2+1-layer, 32 px albef-tiny config (no dropout, so two forwards agree exactly)."""
    return load_config("albef-tiny", [
        "model.queue_size=64", "model.vision.image_size=32", "model.vision.depth=2", "model.text.text_layers=2",
        "model.text.fusion_layers=1", "model.text.vocab_size=60", f"model.momentum={MOMENTUM}", *overrides])


def ctx(cfg, steps_per_epoch: int = 4, total: int = 8) -> LossContext:
    return LossContext(cfg, steps_per_epoch, total)


def perturb_online(model: torch.nn.Module, seed: int = 1) -> None:
    """Move the online weights away from the momentum copies (as after some training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for online, _ in model.momentum_pairs():
            for p in online.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_ema_step(model: torch.nn.Module, before: dict[str, torch.Tensor], online: dict[str, torch.Tensor]) -> int:
    """Every momentum tensor is ``m * before + (1 - m) * online`` (the pre-step online weights)."""
    after = model.state_dict()
    checked = 0
    for key, value in after.items():
        top, _, rest = key.partition(".")
        if not top.endswith("_m"):
            continue
        twin = f"{top[:-2]}.{rest}"
        want = (before[key] * MOMENTUM).add(online[twin], alpha=1 - MOMENTUM)
        assert torch.allclose(value, want, rtol=0, atol=1e-7), key
        assert not torch.equal(value, before[key]), key
        checked += 1
    return checked


# -- the pure mix ------------------------------------------------------------------------------------


def test_distilled_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    labels = torch.tensor([0, 2])
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    logp = logits - logits.exp().sum(-1, keepdim=True).log()
    hard = -(logp[0, 0] + logp[1, 2]) / 2
    soft_ce = -(soft * logp).sum(-1)
    assert torch.allclose(soft_cross_entropy(logits, soft), soft_ce)
    want = 0.6 * hard + 0.4 * soft_ce.mean()
    assert torch.allclose(distilled_cross_entropy(logits, labels, soft, 0.4), want)
    assert torch.allclose(ve_loss(logits, labels, soft, 0.4), want)
    assert torch.allclose(distill_mix(torch.tensor(2.0), torch.tensor(1.0), 0.25), torch.tensor(1.75))
    # no soft targets, or alpha 0: exactly the plain cross entropy
    assert torch.equal(distilled_cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    assert torch.equal(ve_loss(logits, labels, soft, 0.0), F.cross_entropy(logits, labels))


# -- VE ----------------------------------------------------------------------------------------------


def ve_batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"images": torch.randn(b, 3, 32, 32, generator=g), "input_ids": torch.randint(5, 60, (b, 7), generator=g),
            "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])[:b]}


def test_ve_model_has_frozen_momentum_copies_only_with_distill():
    cfg = tiny()
    model = TASKS["ve"].build(cfg)
    names = {n for n, _ in model.named_children()}
    assert {"visual_encoder_m", "text_encoder_m", "fusion_encoder_m", "cls_head_m"} <= names
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.split(".")[0].endswith("_m"))
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.split(".")[0].endswith("_m"))
    plain = TASKS["ve"].build(tiny("model.distill=false"))
    assert not any(n.endswith("_m") for n, _ in plain.named_children()) and plain.momentum_pairs() == []
    # the online model is the same either way (same seed -> same weights, same logits)
    torch.manual_seed(0)
    a = TASKS["ve"].build(cfg)
    torch.manual_seed(0)
    b = TASKS["ve"].build(tiny("model.distill=false"))
    x = ve_batch()
    assert torch.equal(a.eval()(x["images"], x["input_ids"], x["attention_mask"]),
                       b.eval()(x["images"], x["input_ids"], x["attention_mask"]))


def one_step(model, task: str, batch: dict, cfg) -> None:
    """One optimizer step of ``task``'s loss; momentum copies get no gradient."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = TASKS[task].loss(model, batch, 0, ctx(cfg))
    opt.zero_grad()
    out["loss"].backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.split(".")[0].endswith("_m"))
    opt.step()


def test_ve_training_step_moves_momentum_by_the_ema_rule():
    torch.manual_seed(0)
    cfg = tiny()
    model = TASKS["ve"].build(cfg).train()
    perturb_online(model)
    before = snapshot(model)
    one_step(model, "ve", ve_batch(), cfg)
    assert assert_ema_step(model, before, before) == sum(1 for k in before if k.split(".")[0].endswith("_m"))
    # an inner micro-batch of gradient accumulation (first_micro False) leaves the momentum alone
    again = snapshot(model)
    TASKS["ve"].loss(model, {**ve_batch(), "first_micro": False}, 1, ctx(cfg))
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_ve_distilled_loss_is_the_mix_and_plain_without_distill():
    torch.manual_seed(0)
    cfg = tiny()
    model = TASKS["ve"].build(cfg).train()
    perturb_online(model)
    x = ve_batch()
    c = ctx(cfg, steps_per_epoch=4)
    # by hand: the EMA step, then the momentum model's softmax as soft targets
    ref = TASKS["ve"].build(cfg)
    ref.load_state_dict(model.state_dict())
    ref.momentum_update()
    with torch.no_grad():
        logits = ref.cls_head(ref.fused_cls(x["images"], x["input_ids"], x["attention_mask"]))
        tokens = ref.fusion_encoder_m(ref.text_encoder_m(x["input_ids"], x["attention_mask"]), x["attention_mask"],
                                      ref.visual_encoder_m(x["images"]))
        soft = F.softmax(ref.cls_head_m(tokens[:, 0]), dim=-1)
    alpha = cfg.model.alpha * 2 / 4  # step 1 of a 4-step first epoch: alpha ramped to half
    plain = F.cross_entropy(logits, x["labels"])
    want = (1 - alpha) * plain + alpha * (-(F.log_softmax(logits, -1) * soft).sum(-1).mean())
    out = TASKS["ve"].loss(model, x, 1, c)
    assert torch.allclose(out["loss"], want, atol=1e-6)
    assert not torch.allclose(out["loss"], plain, atol=1e-4)
    # distill off: no momentum copies, exactly today's cross entropy
    off = tiny("model.distill=false")
    model_off = TASKS["ve"].build(off).train()
    model_off.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.split(".")[0].endswith("_m")})
    out_off = TASKS["ve"].loss(model_off, x, 1, ctx(off))
    assert torch.equal(out_off["loss"], F.cross_entropy(model_off(x["images"], x["input_ids"], x["attention_mask"]),
                                                        x["labels"]))
    assert torch.allclose(out_off["loss"], plain, atol=1e-6)
    # eval mode (a validation loss) neither distils nor moves the momentum copies
    model.eval()
    before = snapshot(model)
    out_eval = TASKS["ve"].loss(model, x, 1, c)
    assert torch.equal(out_eval["loss"], ve_loss(model(x["images"], x["input_ids"], x["attention_mask"]), x["labels"]))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_ve_checkpoint_holds_momentum_and_loads_for_evaluation(tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    model = TASKS["ve"].build(cfg).train()
    perturb_online(model)
    TASKS["ve"].loss(model, ve_batch(), 0, ctx(cfg))
    save_weights(model, tmp_path)
    keys = load_state_dict(tmp_path).keys()
    for name in ("visual_encoder_m.pos_embed", "text_encoder_m.embeddings.word_embeddings.weight",
                 "fusion_encoder_m.layer.0.crossattention.self.query.weight", "cls_head_m.2.weight"):
        assert name in keys, name
    back = TASKS["ve"].build(cfg)
    load_weights(back, tmp_path, strict=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
    # a checkpoint without momentum copies (written with distill off) still loads: copies = online
    plain = TASKS["ve"].build(tiny("model.distill=false"))
    save_weights(plain, tmp_path)
    load_weights(back, tmp_path, strict=True)
    assert torch.equal(back.cls_head_m[2].weight, plain.cls_head[2].weight)
    x = ve_batch()
    with torch.no_grad():
        assert torch.equal(back.eval()(x["images"], x["input_ids"], x["attention_mask"]),
                           plain.eval()(x["images"], x["input_ids"], x["attention_mask"]))


# -- NLVR2 -------------------------------------------------------------------------------------------


def nlvr2_batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, 8, dtype=torch.long)
    mask[1::2, -3:] = 0
    return {"images": torch.randn(b, 3, 32, 32, generator=g), "images2": torch.randn(b, 3, 32, 32, generator=g),
            "input_ids": torch.randint(5, 60, (b, 8), generator=g), "attention_mask": mask,
            "labels": torch.tensor([0, 1, 1, 0])[:b]}


def nlvr2_args(x: dict) -> tuple:
    return x["images"], x["images2"], x["input_ids"], x["attention_mask"]


@pytest.fixture(scope="module")
def nlvr2_albef():  # the pre-trained model NLVR2 and VQA start from
    torch.manual_seed(0)
    return ALBEF(tiny().model).eval()


def test_nlvr2_from_albef_syncs_momentum_and_keeps_shared_kv(nlvr2_albef):
    cfg = tiny()
    model, report = TASKS["nlvr2"].from_pretrained(nlvr2_albef, cfg)
    assert {k.split(".")[0] for k in report.missing} == {"cls_head"}  # momentum copies = loaded online weights
    for online, mom in model.momentum_pairs():
        assert all(torch.equal(a, b) for a, b in zip(online.parameters(), mom.parameters()))
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.split(".")[0].endswith("_m"))
    fm = model.fusion_encoder_m
    assert fm.layer[1].crossattention.self.key is fm.layer[0].crossattention.self.key  # still shared in the copy
    assert fm.layer[0].crossattention.self.key is not model.fusion_encoder.layer[0].crossattention.self.key
    plain, _ = TASKS["nlvr2"].from_pretrained(nlvr2_albef, tiny("model.distill=false"))
    assert plain.momentum_pairs() == [] and not hasattr(plain, "cls_head_m")


def test_nlvr2_training_step_moves_momentum_by_the_ema_rule(nlvr2_albef):
    torch.manual_seed(0)
    cfg = tiny()
    model, _ = TASKS["nlvr2"].from_pretrained(nlvr2_albef, cfg)
    model.train()
    perturb_online(model)
    before = snapshot(model)
    one_step(model, "nlvr2", nlvr2_batch(), cfg)
    assert assert_ema_step(model, before, before) > 0
    again = snapshot(model)
    TASKS["nlvr2"].loss(model, {**nlvr2_batch(), "first_micro": False}, 1, ctx(cfg))
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_nlvr2_distilled_loss_is_the_mix_and_plain_without_distill(nlvr2_albef):
    cfg = tiny()
    model, _ = TASKS["nlvr2"].from_pretrained(nlvr2_albef, cfg)
    model.train()
    perturb_online(model)
    x = nlvr2_batch()
    ref = TASKS["nlvr2"].build(cfg)
    ref.load_state_dict(model.state_dict())
    ref.momentum_update()
    with torch.no_grad():
        logits = ref.eval()(*nlvr2_args(x))
        soft = F.softmax(ref.cls_head_m(ref.fusion_encoder_m(
            ref.text_encoder_m(x["input_ids"], x["attention_mask"]), x["attention_mask"],
            *ref.visual_encoder_m(torch.cat([x["images"], x["images2"]])).split(4))[:, 0]), dim=-1)
    alpha = cfg.model.alpha  # step 3 of a 4-step first epoch: the full alpha
    plain = F.cross_entropy(logits, x["labels"])
    want = (1 - alpha) * plain + alpha * (-(F.log_softmax(logits, -1) * soft).sum(-1).mean())
    out = TASKS["nlvr2"].loss(model, x, 3, ctx(cfg))
    assert torch.allclose(out["loss"], want, atol=1e-6)
    assert torch.allclose(nlvr2_loss(logits, x["labels"], soft, alpha), want, atol=1e-6)
    assert not torch.allclose(out["loss"], plain, atol=1e-4)
    off = tiny("model.distill=false")
    model_off = TASKS["nlvr2"].build(off).train()
    model_off.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.split(".")[0].endswith("_m")})
    out_off = TASKS["nlvr2"].loss(model_off, x, 3, ctx(off))
    assert torch.equal(out_off["loss"], F.cross_entropy(model_off(*nlvr2_args(x)).float(), x["labels"]))
    assert torch.allclose(out_off["loss"], plain, atol=1e-6)


def test_nlvr2_checkpoint_holds_momentum(nlvr2_albef, tmp_path):
    cfg = tiny()
    model, _ = TASKS["nlvr2"].from_pretrained(nlvr2_albef, cfg)
    model.train()
    perturb_online(model)
    TASKS["nlvr2"].loss(model, nlvr2_batch(), 0, ctx(cfg))
    save_weights(model, tmp_path)  # shared key/value tensors are stored once, in both towers
    keys = load_state_dict(tmp_path).keys()
    assert {"cls_head_m.2.weight", "visual_encoder_m.pos_embed", "text_encoder_m.embeddings.word_embeddings.weight",
            "fusion_encoder_m.layer.1.crossattention.self.query.weight"} <= keys
    back = TASKS["nlvr2"].build(cfg)
    load_weights(back, tmp_path, strict=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
    assert back.fusion_encoder_m.layer[1].crossattention.self.key is back.fusion_encoder_m.layer[0].crossattention.self.key


# -- VQA ---------------------------------------------------------------------------------------------


def vqa_batch(seed: int = 0) -> dict:
    """3 questions with 2, 1 and 2 answers ([CLS]=2 a.. [SEP]=3, padded with 0)."""
    g = torch.Generator().manual_seed(seed)
    q_mask = torch.ones(3, 6, dtype=torch.long)
    q_mask[1, -2:] = 0
    q_ids = torch.randint(5, 60, (3, 6), generator=g) * q_mask
    q_ids[:, 0] = 2
    a_ids = torch.tensor([[2, 11, 3, 0], [2, 12, 13, 3], [2, 14, 3, 0], [2, 11, 3, 0], [2, 15, 16, 3]])
    return {"images": torch.randn(3, 3, 32, 32, generator=g), "input_ids": q_ids, "attention_mask": q_mask,
            "answer_ids": a_ids, "answer_mask": (a_ids != 0).long(),
            "answer_weights": torch.tensor([0.7, 0.3, 1.0, 0.5, 0.5]), "answers_per_question": torch.tensor([2, 1, 2])}


def test_vqa_token_distillation_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.0, 3.0]])
    tokens, seq = torch.tensor([0, 2, 2]), torch.tensor([0, 0, 1])
    soft = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    logp = F.log_softmax(logits, -1)
    nll = torch.stack([-(logp[0, 0] + logp[1, 2]), -logp[2, 2]])
    sce = torch.stack([-(soft[0] * logp[0]).sum() - (soft[1] * logp[1]).sum(), -(soft[2] * logp[2]).sum()])
    assert torch.allclose(sequence_soft_ce(logits, soft, seq, 2), sce)
    assert torch.allclose(distilled_answer_nll(logits, tokens, seq, 2, soft, 0.4), 0.6 * nll + 0.4 * sce)
    assert torch.equal(distilled_answer_nll(logits, tokens, seq, 2), sequence_nll(logits, tokens, seq, 2))
    assert torch.equal(distilled_answer_nll(logits, tokens, seq, 2, soft, 0.0), sequence_nll(logits, tokens, seq, 2))


def test_vqa_training_step_moves_momentum_and_distils_the_decoder(nlvr2_albef, tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    model, report = TASKS["vqa"].from_pretrained(nlvr2_albef, cfg)
    assert report.missing == []  # the momentum copies are the loaded online weights
    assert {"visual_encoder_m", "text_encoder_m", "fusion_encoder_m", "answer_decoder_m"} <= {
        n for n, _ in model.named_children()}
    dm = model.answer_decoder_m
    assert dm.lm_head.decoder.weight is dm.embeddings.word_embeddings.weight  # tied within the copy
    assert dm.lm_head.decoder.weight is not model.answer_decoder.lm_head.decoder.weight
    model.train()
    perturb_online(model)
    x = vqa_batch()
    args = (x["images"], x["input_ids"], x["attention_mask"], x["answer_ids"], x["answer_mask"], x["answer_weights"],
            x["answers_per_question"])
    # by hand: EMA step, momentum decoder on the momentum question states, token-level soft targets
    ref = TASKS["vqa"].build(cfg).train()
    ref.load_state_dict(model.state_dict())
    ref.momentum_update()
    with torch.no_grad():
        rows = torch.tensor([0, 0, 1, 2, 2])
        states = ref.encode_question(*args[:3])
        logits, t = ref.answer_decoder.target_logits(x["answer_ids"], x["answer_mask"], states[rows],
                                                     x["attention_mask"][rows])
        states_m = ref.fusion_encoder_m(ref.text_encoder_m(x["input_ids"], x["attention_mask"]), x["attention_mask"],
                                        ref.visual_encoder_m(x["images"]))
        logits_m, _ = ref.answer_decoder_m.target_logits(x["answer_ids"], x["answer_mask"], states_m[rows],
                                                         x["attention_mask"][rows])
        soft = F.softmax(logits_m, -1)
        nll = sequence_nll(logits, t.tokens, t.seq, 5)
        sce = sequence_soft_ce(logits, soft, t.seq, 5)
    alpha = cfg.model.alpha / 4  # step 0 of a 4-step first epoch
    plain = weighted_answer_loss(nll, x["answer_weights"], 3)
    want = weighted_answer_loss((1 - alpha) * nll + alpha * sce, x["answer_weights"], 3)
    before = snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = TASKS["vqa"].loss(model, x, 0, ctx(cfg))
    assert torch.allclose(out["loss"], want, atol=1e-5)
    assert not torch.allclose(out["loss"], plain, atol=1e-4)
    assert torch.allclose(model(*args)["loss"], plain, atol=1e-5)  # a plain call: online model only, no EMA
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert assert_ema_step(model, before, before) > 0
    # distill off: no copies, the plain loss
    off = tiny("model.distill=false")
    model_off = TASKS["vqa"].build(off).train()
    model_off.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.split(".")[0].endswith("_m")})
    assert not any(n.endswith("_m") for n, _ in model_off.named_children())
    out_off = TASKS["vqa"].loss(model_off, x, 0, ctx(off))
    assert torch.equal(out_off["loss"], model_off(*args)["loss"])
    assert torch.allclose(out_off["loss"], plain, atol=1e-5)
    # the checkpoint holds the copies (the tied LM head stored once) and loads back exactly
    save_weights(model, tmp_path)
    keys = load_state_dict(tmp_path).keys()
    assert {"answer_decoder_m.layer.0.crossattention.self.key.weight", "visual_encoder_m.pos_embed",
            "fusion_encoder_m.layer.0.output.dense.weight"} <= keys
    back = TASKS["vqa"].build(cfg)
    load_weights(back, tmp_path, strict=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
    assert back.answer_decoder_m.lm_head.decoder.weight is back.answer_decoder_m.embeddings.word_embeddings.weight
