"""Typed run configuration: model and training settings, the presets, YAML files and overrides.

A run's configuration is a :class:`Config` (``model`` + ``train``). It comes from a preset name or a
YAML file, then ``section.field=value`` overrides, each checked against the dataclass field types::

    cfg = load_config("albef-tiny", ["model.queue_size=4096", "train.lr=3e-4"])

Checkpoints store :func:`to_dict` as JSON and rebuild it with :func:`from_dict`.

The dataclass defaults ARE the paper's ALBEF (``albef-base``); every preset lives in :data:`PRESETS`
below, with the paper's numbers and each deliberate deviation written next to them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpipe.errors import InputError, VlpipeError

# --------------------------------------------------------------------------------------------------
# The dataclasses. Defaults = ALBEF as published (ViT-B/16 at 256 px + BERT-base split 6 / 6).
# --------------------------------------------------------------------------------------------------


@dataclass
class VisionConfig:
    """ViT image encoder (timm ``VisionTransformer``, class token, no classifier head)."""

    image_size: int = 256  # pixels, square; pre-training 256, fine-tuning 384 (pos_embed interpolated)
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.0  # stochastic depth rate (timm drop_path_rate)
    stem: str = "patch"  # "patch" (one patchify conv: ViT, DeiT, ALBEF) | "conv" (3x3 stride-2 convs) | "cnn" (VGG-style stages)
    stem_norm: str = "group"  # normalisation in the conv/cnn stems: "group" (GroupNorm) | "batch" (BatchNorm)


@dataclass
class TextConfig:
    """BERT-style text encoder (first ``text_layers``) + fusion encoder (next ``fusion_layers``).

    ``max_len`` is the most tokens one text may have (the position table size); captions are
    truncated to it. Token ids must match the tokenizer: use :func:`adopt_tokenizer`.
    """

    vocab_size: int = 30522
    width: int = 768
    text_layers: int = 6  # BERT layers 0-5: text only
    fusion_layers: int = 6  # BERT layers 6-11: + cross-attention to the image
    heads: int = 12
    intermediate: int = 3072
    max_len: int = 512
    dropout: float = 0.1  # hidden-state dropout, as BERT
    attention_dropout: float = 0.1  # attention-probability dropout, as BERT (> 0 stops CPU flash attention)
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    mask_token_id: int = 103  # bert-base-uncased [MASK]
    special_token_ids: tuple[int, ...] = (0, 100, 101, 102, 103)  # never masked by MLM
    # std of the normal init of fresh text/fusion weights (BERT: 0.02, tuned for width 768). At width
    # 128 a post-LN layer initialised so barely moves its input, and every caption's [CLS] starts
    # equal (cosine 0.9999); 0.05 measured better from scratch (see docs/retrieval.md notes)
    init_std: float = 0.02
    pool: str = "cls"  # ITC text feature: "cls" (ALBEF) | "mean" (masked mean of the token states)


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256  # ITC projection size
    temp: float = 0.07  # initial learnable temperature (clamped to temp_min..0.5)
    temp_min: float = 0.001  # the paper's lower clamp; small models trained from scratch collapse below ~0.01
    queue_size: int = 65536  # momentum features kept for ITC
    momentum: float = 0.995  # EMA of the momentum encoders
    alpha: float = 0.4  # momentum-distillation weight
    mlm_prob: float = 0.15
    itc: bool = True  # objectives on/off (ablations)
    itm: bool = True
    mlm: bool = True
    distill: bool = True  # momentum distillation: ITC and MLM targets; VE, NLVR2 and VQA fine-tuning (alpha used only if on)
    itc_weight: float = 1.0
    itm_weight: float = 1.0
    mlm_weight: float = 1.0
    tie_word_embeddings: bool = True  # MLM decoder shares the word-embedding matrix, as BERT
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower


@dataclass
class TrainConfig:
    lr: float = 1e-4  # peak learning rate (AdamW)
    min_lr: float = 1e-5  # end of the cosine decay
    weight_decay: float = 0.02
    warmup_steps: int = 1000  # optimizer steps of linear warm-up
    epochs: int = 30
    steps: int = 0  # optimizer steps; 0 = run ``epochs`` epochs
    batch_size: int = 64  # PER DEVICE (global batch = batch_size x devices x grad_accum)
    grad_accum: int = 1
    clip_grad: float = 0.0  # max grad norm; 0 = no clipping
    fusion_lr_scale: float = 1.0  # lr multiplier of the fusion layers: fusion encoder, ITM head, VQA's answer decoder
    text_lr_scale: float = 1.0  # lr multiplier of the text encoder (word embeddings included)
    # train.fusion_lr_scale of every fine-tune of a checkpoint of this config (`vlpipe finetune`, unless --set)
    finetune_fusion_lr_scale: float = 1.0
    crop_min_scale: float = 0.5  # random-resized-crop keeps this much of the image area at least (1 = no crop)
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    seed: int = 42


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------------
# Presets: the ONE place with named recipes.
# --------------------------------------------------------------------------------------------------

# Token ids of a tokenizer trained by `vlpipe tokenizer train` ([PAD] [UNK] [CLS] [SEP] [MASK] = 0..4,
# default vocabulary 8000). A run that uses another tokenizer adopts its ids (adopt_tokenizer).
_VLPIPE_TOKENS = dict(vocab_size=8000, pad_token_id=0, mask_token_id=4, special_token_ids=(0, 1, 2, 3, 4))

PRESETS: dict[str, Config] = {
    # Trains on 2 CPU cores in minutes (synthetic data, smoke runs, tests).
    "albef-tiny": Config(
        model=ModelConfig(
            # conv stem: measured on the 5k world, 500 steps, zero-shot mean recall 5.9 vs 5.1 with the
            # patchify stem (a supervised probe shows a from-scratch ViT this small learns backgrounds
            # within ~100 steps but the 13-17 px objects only slowly either way).
            vision=VisionConfig(image_size=64, patch_size=8, width=128, depth=4, heads=4, drop_path=0.0, stem="conv"),
            # no dropout: a smoke-test model, and attention dropout would force the slow CPU attention.
            # init_std 0.05 + mean pooling: BERT's 0.02 at width 128 starts every caption's [CLS] equal
            # and the text features collapse onto the background words; measured on `make demo`'s
            # world, 500 steps, 2 seeds: zero-shot ITC mean recall 6.90 / 7.03 vs 5.73 / 5.17 with
            # (0.02, cls), ITM-reranked 7.85 / 7.16 vs 6.13 / 6.25 (docs/retrieval.md)
            text=TextConfig(width=128, text_layers=4, fusion_layers=2, heads=4, intermediate=512,
                            max_len=40, dropout=0.0, attention_dropout=0.0, init_std=0.05, pool="mean",
                            **_VLPIPE_TOKENS),
            embed_dim=128,
            # Measured on the 5k synthetic world, 500 steps from scratch: with the paper's clamp the
            # temperature fell to ~0.006 and image features collapsed (mean cosine 0.98); temp_min
            # 0.03 and a 512 queue (fresher negatives) gave zero-shot mean recall 5.1 vs 3.8.
            queue_size=512,
            temp_min=0.03,
        ),
        # min_lr 2e-4 (the cosine ends at 2/3 of the peak, not 1/10): a minutes-long run is far from
        # converged and a full decay wastes its last steps; measured on `make demo`'s world, 500 steps:
        # zero-shot ITC mean recall 9.19 vs 7.01 with min_lr 3e-5 (700 steps: 16.3; docs/retrieval.md)
        # finetune_fusion_lr_scale 10: 500 steps leave the fusion layers far less trained than the towers,
        # and a fine-tune at the paper's uniform lr ratio never learns to compare text with image there;
        # measured on `make demo`'s world, 300 fine-tune steps, 2 seeds: VE 0.842 / 0.833 from
        # pre-training vs 0.777 / 0.772 from random init (0.773 vs 0.763 at scale 1); VQA 0.582 / 0.596
        # vs 0.556 / 0.566 (0.555 vs 0.552 at scale 1); docs/finetune.md
        train=TrainConfig(lr=3e-4, min_lr=2e-4, warmup_steps=100, epochs=10, batch_size=32, clip_grad=5.0,
                          finetune_fusion_lr_scale=10.0),
    ),
    # One GPU, a few hours: ViT-S/16 at 192 px + a MiniLM-sized text tower (6 text + 3 fusion, 384 wide).
    "albef-small": Config(
        model=ModelConfig(
            vision=VisionConfig(image_size=192, patch_size=16, width=384, depth=12, heads=6, drop_path=0.1),
            text=TextConfig(width=384, text_layers=6, fusion_layers=3, heads=12, intermediate=1536, max_len=64),
            embed_dim=256,
            queue_size=16384,
        ),
        train=TrainConfig(lr=2e-4, min_lr=2e-5, warmup_steps=500, epochs=20, batch_size=96, clip_grad=5.0),
    ),
    # The paper (Li et al. 2021, sec. 3.5): ViT-B/16 at 256 px, BERT-base with layers 0-5 text-only and
    # 6-11 fusion, embed 256, temp 0.07, queue 65536, momentum 0.995, alpha 0.4, MLM 15%; AdamW lr 1e-4
    # warmed up over the first 1000 iterations then cosine to 1e-5, weight decay 0.02, 30 epochs,
    # batch 512 = 64 per GPU x 8 GPUs. Deviations of vlpipe, all recipes: in-batch and queued pairs
    # that share an image id are all ITC positives and never ITM negatives (the paper treats only the
    # diagonal as positive during pre-training).
    "albef-base": Config(),
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise VlpipeError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)} or a YAML file path")
    return copy.deepcopy(PRESETS[name])


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking
# --------------------------------------------------------------------------------------------------


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _type_name(tp) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if typing.get_origin(tp) is tuple:
        return "a list of " + typing.get_args(tp)[0].__name__
    return getattr(tp, "__name__", str(tp))


def _coerce(tp, value: Any, where: str, current: Any = None) -> Any:
    """``value`` converted to type ``tp``; raises VlpipeError naming ``where`` when it does not fit."""
    bad = VlpipeError(f"{where}: {value!r} is not {_type_name(tp)}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner, value, where, current)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return copy.deepcopy(value)
        if not isinstance(value, dict):
            raise bad
        return _merge(copy.deepcopy(current) if current is not None else tp(), value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if isinstance(value, str):
            value = [v for v in value.strip("[]() ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(inner, v, where) for v in value)
    raise VlpipeError(f"{where}: unsupported field type {tp!r}")  # a bug in this module, not the user's


def _merge(obj, data: dict, where: str):
    """Set the keys of ``data`` on the dataclass ``obj`` (recursively); unknown keys are errors."""
    if not isinstance(data, dict):
        raise VlpipeError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _hints(type(obj))
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            raise VlpipeError(f"unknown config key {path!r}: valid keys here are {', '.join(_field_names(type(obj)))}")
        setattr(obj, key, _coerce(hints[key], value, path, getattr(obj, key)))
    return obj


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain JSON-able nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """Build a Config from a nested dict (missing keys take ``base``'s values or the defaults)."""
    cfg = _merge(copy.deepcopy(base) if base is not None else Config(), data, "")
    validate(cfg)
    return cfg


def all_keys(cfg: Config | None = None) -> list[str]:
    """Every dotted leaf key, e.g. ``model.vision.image_size``."""
    out: list[str] = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            tp = _hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, prefix + f.name + ".")
            else:
                out.append(prefix + f.name)

    walk(Config, "")
    return out


def apply_override(cfg: Config, assignment: str) -> Config:
    """Apply one ``section.field=value`` assignment in place (value parsed as YAML, then type-checked)."""
    import yaml

    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise VlpipeError(f"override {assignment!r}: write it as key=value, e.g. model.queue_size=4096")
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        hints = _hints(type(obj))
        where = ".".join(parts[: i + 1])
        if part not in hints:
            scope = ".".join(parts[:i]) or "the top level"
            valid = ", ".join(_field_names(type(obj)))
            raise VlpipeError(f"unknown config key {where!r}: valid keys under {scope} are {valid}")
        if i == len(parts) - 1:
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                value = raw.strip()
            setattr(obj, part, _coerce(hints[part], value, where, getattr(obj, part)))
        else:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise VlpipeError(f"unknown config key {key!r}: {where} is a value, not a section")
    return cfg


def read_yaml_mapping(path: Path, expected: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; one-line InputError naming the file otherwise."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a mapping with {expected}")
    return data


def load_config(preset_or_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A preset name or a YAML file (optionally naming its base with ``preset: NAME``), then overrides.

    YAML files have the nested structure of :class:`Config` (``model: {vision: {...}, ...}``,
    ``train: {...}``); keys absent from the file keep the base's values; unknown keys are errors,
    except a top-level ``reproduce:`` section (the recipes of ``vlpipe reproduce``), which is ignored.
    """
    name = str(preset_or_path) if preset_or_path is not None else "albef-base"
    if name in PRESETS:
        cfg = preset(name)
    else:
        path = Path(name)
        if not path.is_file():
            raise VlpipeError(f"config {name!r}: neither a preset ({', '.join(PRESETS)}) nor an existing YAML file")
        data = read_yaml_mapping(path, "model: and train: sections")
        # `reproduce:` holds what `vlpipe reproduce` needs beyond the config (vlpipe/recipes/*.yaml)
        data.pop("reproduce", None)
        base = preset(str(data.pop("preset"))) if "preset" in data else Config()
        try:
            cfg = _merge(base, data, "")
        except VlpipeError as e:
            raise InputError(path, str(e)) from None
    for o in overrides:
        apply_override(cfg, o)
    validate(cfg)
    return cfg


def save_yaml(cfg: Config, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Consistency checks and helpers
# --------------------------------------------------------------------------------------------------


def validate(cfg: Config) -> Config:
    """Raise a one-line VlpipeError for settings that cannot build or train a model."""
    v, t, m, tr = cfg.model.vision, cfg.model.text, cfg.model, cfg.train

    def need(ok: bool, msg: str):
        if not ok:
            raise VlpipeError(f"invalid config: {msg}")

    need(v.image_size > 0 and v.patch_size > 0 and v.image_size % v.patch_size == 0,
         f"model.vision.image_size {v.image_size} must be a positive multiple of patch_size {v.patch_size}")
    need(v.depth > 0 and v.heads > 0 and v.width % v.heads == 0,
         f"model.vision.width {v.width} must be divisible by heads {v.heads}")
    need(0.0 <= v.drop_path < 1.0, "model.vision.drop_path must be in [0, 1)")
    need(t.heads > 0 and t.width % t.heads == 0, f"model.text.width {t.width} must be divisible by heads {t.heads}")
    need(t.text_layers >= 0 and t.fusion_layers >= 0, "model.text layer counts must be >= 0")
    need(t.vocab_size > 0 and t.max_len > 1 and t.intermediate > 0, "model.text sizes must be positive")
    need(0 <= t.mask_token_id < t.vocab_size and 0 <= t.pad_token_id < t.vocab_size,
         f"model.text token ids must be below vocab_size {t.vocab_size}")
    need(0.0 <= t.dropout < 1.0 and 0.0 <= t.attention_dropout < 1.0, "model.text dropouts must be in [0, 1)")
    need(t.init_std > 0, "model.text.init_std must be > 0")
    need(t.pool in ("cls", "mean"), f"model.text.pool {t.pool!r}: use cls or mean")
    need(m.embed_dim > 0 and m.queue_size > 0, "model.embed_dim and model.queue_size must be positive")
    need(0.0 < m.temp <= 0.5, "model.temp must be in (0, 0.5]")
    need(0.0 <= m.momentum < 1.0, "model.momentum must be in [0, 1)")
    need(0.0 <= m.alpha <= 1.0, "model.alpha must be in [0, 1]")
    need(0.0 < m.mlm_prob < 1.0, "model.mlm_prob must be in (0, 1)")
    need(m.itc or m.itm or m.mlm, "at least one of model.itc, model.itm, model.mlm must be true")
    need(t.fusion_layers > 0 or not (m.itm or m.mlm), "model.itm and model.mlm need model.text.fusion_layers >= 1")
    need(tr.lr > 0 and tr.min_lr >= 0 and tr.weight_decay >= 0, "train.lr must be > 0, min_lr and weight_decay >= 0")
    need(tr.batch_size > 0 and tr.grad_accum > 0, "train.batch_size and train.grad_accum must be positive")
    need(tr.epochs > 0 or tr.steps > 0, "train.epochs or train.steps must be positive")
    need(tr.warmup_steps >= 0 and tr.clip_grad >= 0, "train.warmup_steps and train.clip_grad must be >= 0")
    need(tr.fusion_lr_scale > 0 and tr.text_lr_scale > 0 and tr.finetune_fusion_lr_scale > 0,
         "train.fusion_lr_scale, train.text_lr_scale and train.finetune_fusion_lr_scale must be > 0")
    need(tr.precision in ("auto", "bf16", "fp32"), f"train.precision {tr.precision!r}: use auto, bf16 or fp32")
    return cfg


def adopt_tokenizer(text: TextConfig, tokenizer) -> TextConfig:
    """A copy of ``text`` with the vocabulary size and special-token ids of a HF tokenizer."""
    out = copy.deepcopy(text)
    out.vocab_size = len(tokenizer)
    out.pad_token_id = int(tokenizer.pad_token_id)
    out.mask_token_id = int(tokenizer.mask_token_id)
    out.special_token_ids = tuple(sorted(int(i) for i in tokenizer.all_special_ids))
    return out

