"""Typed config: presets, dotted overrides with type checks, YAML files, dict/JSON round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from vlpipe.config import (
    PRESETS,
    Config,
    adopt_tokenizer,
    all_keys,
    apply_override,
    from_dict,
    load_config,
    preset,
    save_yaml,
    to_dict,
)
from vlpipe.errors import InputError, VlpipeError


def test_base_preset_is_the_paper():
    c = load_config("albef-base")
    m, v, t, tr = c.model, c.model.vision, c.model.text, c.train
    assert (v.image_size, v.patch_size, v.width, v.depth, v.heads) == (256, 16, 768, 12, 12)
    assert (t.width, t.heads, t.vocab_size, t.text_layers, t.fusion_layers) == (768, 12, 30522, 6, 6)
    assert (m.embed_dim, m.temp, m.queue_size, m.momentum, m.alpha, m.mlm_prob) == (256, 0.07, 65536, 0.995, 0.4, 0.15)
    assert (tr.lr, tr.weight_decay, tr.batch_size) == (1e-4, 0.02, 64)
    assert c == Config()  # the dataclass defaults are the paper


def test_presets_validate_and_are_copies():
    for name in PRESETS:
        assert load_config(name) == PRESETS[name]
    a = preset("albef-tiny")
    a.model.queue_size = 7
    assert PRESETS["albef-tiny"].model.queue_size != 7
    tiny = PRESETS["albef-tiny"].model
    assert (tiny.vision.image_size, tiny.vision.patch_size, tiny.vision.depth, tiny.vision.width) == (64, 8, 4, 128)
    assert (tiny.text.text_layers, tiny.text.fusion_layers, tiny.text.width) == (4, 2, 128)


def test_overrides_are_parsed_and_type_checked():
    c = load_config("albef-tiny", [
        "model.queue_size=4096",
        "train.lr=1e-4",  # YAML reads this as a string; still a float
        "model.itc=false",
        "model.vision.image_size=96",
        "model.text.special_token_ids=[0, 1, 2]",
        "train.precision=bf16",
        "model.alpha=1",  # int accepted for a float
    ])
    assert c.model.queue_size == 4096 and isinstance(c.model.queue_size, int)
    assert c.train.lr == 1e-4 and isinstance(c.train.lr, float)
    assert c.model.itc is False
    assert c.model.vision.image_size == 96
    assert c.model.text.special_token_ids == (0, 1, 2)
    assert c.train.precision == "bf16"
    assert c.model.alpha == 1.0 and isinstance(c.model.alpha, float)


@pytest.mark.parametrize("override, fragment", [
    ("model.queue_sz=4096", "queue_size"),  # lists the valid keys
    ("model.vision.nope=1", "image_size"),
    ("modle.queue_size=1", "model, train"),
    ("model.queue_size=many", "'many' is not int"),
    ("model.queue_size=1.5", "not int"),
    ("model.itc=2", "not bool"),
    ("train.lr=fast", "not float"),
    ("model.queue_size", "key=value"),
    ("model.queue_size.x=1", "is a value"),
    ("train.precision=fp8", "precision"),
    ("model.vision.width=130", "divisible"),
])
def test_bad_overrides_are_one_line_errors(override, fragment):
    with pytest.raises(VlpipeError) as e:
        load_config("albef-tiny", [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset_or_missing_file():
    with pytest.raises(VlpipeError, match="albef-tiny"):
        load_config("albef-huge")


def test_yaml_round_trip_and_partial_files(tmp_path):
    c = load_config("albef-small", ["model.queue_size=1000", "train.seed=7"])
    path = tmp_path / "run.yaml"
    save_yaml(c, path)
    assert load_config(str(path)) == c

    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"preset": "albef-tiny", "model": {"vision": {"image_size": 96}}, "train": {"lr": "2e-4"}}))
    p = load_config(partial, ["train.epochs=3"])
    expect = load_config("albef-tiny", ["model.vision.image_size=96", "train.lr=2e-4", "train.epochs=3"])
    assert p == expect

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"vison": {"image_size": 96}}}))
    with pytest.raises(InputError, match="unknown config key 'model.vison'.*vision"):
        load_config(bad)
    (tmp_path / "broken.yaml").write_text("model: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_dict_json_round_trip():
    for name in PRESETS:
        c = load_config(name, ["model.text.special_token_ids=[5, 6]"])
        d = json.loads(json.dumps(to_dict(c)))
        assert from_dict(d) == c
    with pytest.raises(VlpipeError, match="unknown config key 'extra'"):
        from_dict({"extra": 1})
    assert from_dict({"model": {"queue_size": 12}}, base=preset("albef-tiny")).model.queue_size == 12


def test_all_keys_and_apply_override():
    keys = all_keys()
    assert "model.vision.image_size" in keys and "train.grad_accum" in keys and "model" not in keys
    c = apply_override(preset("albef-tiny"), "model.vision={image_size: 32}")
    assert c.model.vision.image_size == 32 and c.model.vision.width == 128


def test_adopt_tokenizer():
    class Tok:
        pad_token_id, mask_token_id, all_special_ids = 0, 4, [3, 2, 0, 4, 1]

        def __len__(self):
            return 500

    t = adopt_tokenizer(preset("albef-base").model.text, Tok())
    assert (t.vocab_size, t.pad_token_id, t.mask_token_id, t.special_token_ids) == (500, 0, 4, (0, 1, 2, 3, 4))
