"""The objectives as pure functions: ITC against a hand-written reference, queue ring buffer, EMA,
hard-negative sampling never picking a same-image pair, BERT masking statistics, MLM/ITM losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlpipe.objectives import (
    ema_update,
    enqueue,
    itc_loss,
    itm_loss,
    mask_tokens,
    mlm_loss,
    positive_mask,
    sample_hard_negatives,
)
from vlpipe.objectives.momentum import copy_params



def _unit(n, d, g):
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def _reference_itc(img, txt, img_all, txt_all, ids, ids_all, temp, img_m=None, txt_m=None, alpha=0.0):
    """ITC written out loop by loop, in float64."""
    b, k = img.shape[0], img_all.shape[0]
    total = 0.0
    for q, q_m, cands in ((img, img_m, txt_all), (txt, txt_m, img_all)):
        for i in range(b):
            logits = [float(q[i] @ cands[j]) / temp for j in range(k)]
            mx = max(logits)
            log_z = mx + math.log(sum(math.exp(x - mx) for x in logits))
            pos = [j for j in range(k) if ids[i] == ids_all[j]]
            target = [(1.0 / len(pos) if j in pos else 0.0) for j in range(k)]
            if alpha > 0:
                sm = [float(q_m[i] @ cands[j]) / temp for j in range(k)]
                mm = max(sm)
                z = sum(math.exp(x - mm) for x in sm)
                target = [alpha * math.exp(sm[j] - mm) / z + (1 - alpha) * target[j] for j in range(k)]
            total += -sum(target[j] * (logits[j] - log_z) for j in range(k)) / b
    return total / 2


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_itc_matches_reference_with_shared_image_ids(alpha):
    g = torch.Generator().manual_seed(0)
    b, q, d, temp = 6, 7, 16, 0.07
    ids = torch.tensor([0, 0, 1, 2, 2, 2])  # several captions of one image in the batch
    queue_ids = torch.tensor([1, 5, 0, 6, 7, 2, 8])  # and queued features of batch images
    img, txt = _unit(b, d, g), _unit(b, d, g)
    img_m, txt_m = _unit(b, d, g), _unit(b, d, g)
    img_all = torch.cat([img_m, _unit(q, d, g)])
    txt_all = torch.cat([txt_m, _unit(q, d, g)])
    ids_all = torch.cat([ids, queue_ids])
    pos = positive_mask(ids, ids_all)
    assert pos.shape == (b, b + q) and pos[0, 1] and pos[2, b] and not pos[0, 2]
    soft = (img_m @ txt_all.t() / temp, txt_m @ img_all.t() / temp) if alpha else None
    got = itc_loss(img, txt, img_all, txt_all, torch.tensor(temp), pos, pos, soft, alpha)
    want = _reference_itc(img.double(), txt.double(), img_all.double(), txt_all.double(),
                          ids.tolist(), ids_all.tolist(), temp, img_m.double(), txt_m.double(), alpha)
    assert got.item() == pytest.approx(want, rel=1e-4)


def test_itc_gradients_reach_features_and_temperature():
    g = torch.Generator().manual_seed(1)
    img = _unit(4, 8, g).requires_grad_()
    txt = _unit(4, 8, g).requires_grad_()
    temp = torch.tensor(0.1, requires_grad=True)
    ids = torch.arange(4)
    loss = itc_loss(img, txt, img.detach(), txt.detach(), temp, positive_mask(ids, ids))
    loss.backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0 and temp.grad != 0


def test_enqueue_wraps_around():
    q = torch.zeros(3, 10)  # [embed_dim, queue_size] like ALBEF
    ids = torch.full((10,), -1)
    ptr, seen = 0, []
    for step in range(5):
        keys = torch.arange(4 * step, 4 * step + 4).float()[:, None].expand(4, 3)  # [n, D] rows
        seen.append(ptr)
        enqueue(q, ptr, keys)
        ptr = enqueue(ids, ptr, torch.arange(4 * step, 4 * step + 4))
    assert seen == [0, 4, 8, 2, 6] and ptr == 0
    # 20 items written into 10 slots: slot s holds item 10 + s
    assert q[0].tolist() == [float(10 + s) for s in range(10)]
    assert torch.equal(q[0], q[2])
    assert ids.tolist() == list(range(10, 20))


def test_enqueue_tensor_pointer_and_oversized_batch():
    q = torch.zeros(5)
    ptr = enqueue(q, torch.tensor([3]), torch.arange(12).float())  # 12 > 5: the newest 5 are kept
    assert torch.is_tensor(ptr) and int(ptr) == (3 + 12) % 5
    # the kept items 7..11 end just before the returned pointer
    assert [q[(int(ptr) - 5 + i) % 5].item() for i in range(5)] == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_ema_update_and_tied_parameters_once():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 3))
    online[1].weight = nn.Parameter(online[0].weight.t().contiguous())
    shared = nn.Linear(3, 3)
    mom_main, mom_shared = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 3)), nn.Linear(3, 3)
    mom_main[1].weight = nn.Parameter(mom_main[0].weight.t().contiguous())
    before = [p.clone() for p in list(mom_main.parameters()) + list(mom_shared.parameters())]
    pairs = [(online, mom_main), (shared, mom_shared)]
    ema_update(pairs, 0.9)
    after = list(mom_main.parameters()) + list(mom_shared.parameters())
    src = list(online.parameters()) + list(shared.parameters())
    for b, a, p in zip(before, after, src):
        assert torch.allclose(a, 0.9 * b + 0.1 * p, atol=1e-6)
    # a tensor shared by two modules of a pair is updated once, not twice
    tie_online = [nn.Linear(2, 2), nn.Linear(2, 2)]
    tie_online[1].weight = tie_online[0].weight
    tie_mom = [nn.Linear(2, 2), nn.Linear(2, 2)]
    tie_mom[1].weight = tie_mom[0].weight
    w0 = tie_mom[0].weight.clone()
    ema_update([(tie_online[0], tie_mom[0]), (tie_online[1], tie_mom[1])], 0.5)
    assert torch.allclose(tie_mom[0].weight, 0.5 * w0 + 0.5 * tie_online[0].weight)
    copy_params(pairs)
    assert all(torch.equal(a, p) for a, p in zip(list(mom_main.parameters()) + list(mom_shared.parameters()), src))


def test_hard_negatives_never_same_image():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        b = int(torch.randint(2, 9, (1,), generator=g))
        ids = torch.randint(0, max(2, b // 2), (b,), generator=g)  # many repeated images
        if ids.unique().numel() == 1:
            ids[0] = ids[0] + 1
        sim_i2t = torch.randn(b, b, generator=g) * 5
        sim_i2t.diagonal().add_(10)  # the positive is the most similar: the tempting wrong pick
        sim_t2i = sim_i2t.t().contiguous()
        neg = sample_hard_negatives(sim_i2t, sim_t2i, ids, generator=g)
        assert neg.image_ok.all() and neg.text_ok.all()
        assert (ids[neg.text_for_image] != ids).all()
        assert (ids[neg.image_for_text] != ids).all()


def test_hard_negatives_world_candidates_and_proportional():
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([0, 1])
    ids_all = torch.tensor([0, 1, 2, 3, 0, 1])  # the batch of 2 ranks (+ repeats of our images)
    sim = torch.tensor([[9.0, 0.0, 3.0, 0.0, 9.0, 0.0], [0.0, 9.0, 0.0, 0.0, 0.0, 9.0]])
    reps = 1000  # many draws in one call: each row of the repeated batch is an independent draw
    neg = sample_hard_negatives(sim.repeat(reps, 1), sim.repeat(reps, 1), ids.repeat(reps), ids_all, generator=g)
    counts = torch.stack([torch.bincount(neg.text_for_image[r::2], minlength=6) for r in (0, 1)]).float()
    assert counts[0, 0] == counts[0, 4] == 0 and counts[1, 1] == counts[1, 5] == 0
    # row 0: softmax over columns 1,2,3,5 with logits 0,3,0,0 -> column 2 has p = e^3/(e^3+3) ~ 0.87
    assert 0.82 < counts[0, 2] / reps < 0.92


def test_same_text_of_another_image_is_a_positive_and_never_an_itm_negative():
    ids = torch.tensor([0, 1, 2, 3])
    keys = torch.tensor([7, 8, 7, 9])  # rows 0 and 2: the same expression of two images
    pos = positive_mask(ids, torch.cat([ids, torch.tensor([2, 5])]), keys, keys)  # + 2 queued columns
    assert pos[0, 2] and pos[2, 0] and not pos[0, 1] and not pos[1, 3]
    assert pos[2, 4] and not pos[0, 4]  # queued columns: by image id only (they carry no text key)
    g = torch.Generator().manual_seed(0)
    sim = torch.zeros(4, 4)
    sim[0, 2] = sim[2, 0] = 20.0  # the same-text pair is by far the most similar candidate
    for _ in range(50):
        neg = sample_hard_negatives(sim, sim, ids, generator=g, text_keys=keys)
        assert neg.text_for_image[0] != 2 and neg.image_for_text[0] != 2 and neg.image_for_text[2] != 0
    plain = sample_hard_negatives(sim, sim, ids, generator=g)  # without keys it is the pick
    assert plain.image_for_text[0] == 2


def test_hard_negatives_degenerate_batch_is_flagged():
    ids = torch.tensor([4, 4, 4])
    neg = sample_hard_negatives(torch.randn(3, 3), torch.randn(3, 3), ids)
    assert not neg.image_ok.any() and not neg.text_ok.any()
    assert neg.text_for_image.shape == (3,)
    mixed = sample_hard_negatives(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([4, 4, 5]))
    assert mixed.image_ok.all()


def test_itm_loss_weights_drop_pairs():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 5.0]])
    labels = torch.tensor([1, 0, 0])
    full = itm_loss(logits, labels)
    assert full.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    dropped = itm_loss(logits, labels, torch.tensor([True, True, False]))
    assert dropped.item() == pytest.approx(F.cross_entropy(logits[:2], labels[:2]).item())


SPECIAL = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _caption_batch(b=512, length=32, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, length), generator=g)
    lens = torch.randint(4, length + 1, (b,), generator=g)
    mask = (torch.arange(length)[None] < lens[:, None]).long()
    ids[:, 0] = 2
    ids[torch.arange(b), lens - 1] = 3
    ids[mask == 0] = 0
    ids[:, 5] = torch.where(mask[:, 5] == 1, torch.tensor(1), ids[:, 5])  # some [UNK]
    return ids, mask


def test_mask_tokens_statistics_and_specials():
    ids, mask = _caption_batch()
    g = torch.Generator().manual_seed(1)
    masked, labels = mask_tokens(ids, mask, 1000, 4, SPECIAL, prob=0.15, generator=g)
    chosen = labels != -100
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not (chosen & special).any() and not (chosen & (mask == 0)).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    candidates = (mask == 1) & ~special
    rate = chosen.sum().item() / candidates.sum().item()
    assert 0.14 < rate < 0.16
    n = chosen.sum().item()
    as_mask = (masked[chosen] == 4).sum().item() / n
    kept = (masked[chosen] == ids[chosen]).sum().item() / n
    replaced = 1 - as_mask - kept
    assert 0.77 < as_mask < 0.83 and 0.08 < kept < 0.12 and 0.08 < replaced < 0.12
    randoms = masked[chosen & (masked != 4) & (masked != ids)]
    assert not torch.isin(randoms, torch.tensor(SPECIAL)).any()
    again, _ = mask_tokens(ids, mask, 1000, 4, SPECIAL, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, masked)  # the generator makes it reproducible


def test_mlm_loss_with_distillation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=g, requires_grad=True)
    labels = torch.tensor([1, 2, 3, -100, 4])
    soft = F.softmax(torch.randn(5, 11, generator=g), dim=-1)
    keep = labels != -100
    ce = F.cross_entropy(logits[keep], labels[keep])
    distill = -(soft[keep] * F.log_softmax(logits[keep], -1)).sum(-1).mean()
    got = mlm_loss(logits, labels, soft, alpha=0.4)
    assert got.item() == pytest.approx((0.6 * ce + 0.4 * distill).item(), rel=1e-5)
    assert mlm_loss(logits, labels).item() == pytest.approx(ce.item(), rel=1e-6)
    empty = mlm_loss(logits[:0], labels[:0])
    assert empty.item() == 0.0
    got.backward()
    assert logits.grad[3].abs().sum() == 0  # the ignored row takes no gradient
