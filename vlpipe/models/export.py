"""Export a vlpipe checkpoint for use outside vlpipe.

* :func:`export_hf` writes a folder that other libraries read without vlpipe:

  - ``config.json`` + ``model.safetensors``: the **text tower** (BERT embeddings + the
    ``text_layers`` text-only layers) as a plain Hugging Face ``BertModel``
    (``transformers.BertModel.from_pretrained(folder, add_pooling_layer=False)``; ALBEF has no
    pooler, so without that argument transformers adds a freshly initialised one and warns). Its
    ``last_hidden_state`` equals vlpipe's ``model.text_encoder(ids, mask)``. The fusion layers
    (self-attention + cross-attention to image tokens) are not BERT layers and are not exported
    here, nor are the ITM and MLM heads that sit on them: use the ``safetensors`` export for those.
  - the tokenizer files (when the checkpoint has a tokenizer): ``BertTokenizerFast.from_pretrained(folder)``.
  - ``image_encoder.safetensors`` + ``image_encoder.json``: the **image tower** as timm
    ``VisionTransformer`` weights; the JSON holds the ``timm.create_model`` name and keyword
    arguments that rebuild it and the input normalisation. ``model.forward_features(images)``
    returns vlpipe's image tokens [B, 1 + N, width] (index 0 = [CLS]).
  - ``itc_heads.safetensors``: ``vision_proj.*``, ``text_proj.*`` and ``temp``, so the contrastive
    embeddings are ``normalize(vision_proj(image_tokens[:, 0]))`` and ``normalize(text_proj(p))``
    where ``p`` is the text [CLS] state (``model.text.pool=cls``, ALBEF's) or the attention-masked
    mean of the text states (``pool=mean``); ``vlpipe_export.json`` records which (``itc.text_pool``).
  - ``vlpipe_export.json``: what the folder holds and where it came from.

* :func:`export_safetensors` writes the whole model: ``model.safetensors`` with every state-dict
  key under vlpipe's names (momentum copies and queues included; tied tensors stored under both
  names), the checkpoint's ``config.json``, and ``tokenizer/`` when there is one.

Both write into a temporary sibling folder and rename it into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlpipe.config import Config, VisionConfig, from_dict, to_dict
from vlpipe.errors import InputError, VlpipeError
from vlpipe.models.albef import ALBEF, bert_key_to_vlpipe
from vlpipe.models.text import bert_config

IMAGE_WEIGHTS = "image_encoder.safetensors"
IMAGE_SPEC = "image_encoder.json"
ITC_HEADS = "itc_heads.safetensors"
EXPORT_INFO = "vlpipe_export.json"

# Named timm ViTs by (width, depth, heads): only the name in the JSON; the kwargs decide the shape.
_TIMM_NAMES = {(192, 12, 3): "vit_tiny", (384, 12, 6): "vit_small", (768, 12, 12): "vit_base", (1024, 24, 16): "vit_large"}


@dataclass
class ExportResult:
    folder: Path
    files: list[str] = field(default_factory=list)  # relative paths written
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadedCheckpoint:
    model: ALBEF
    config: Config
    meta: dict[str, Any]  # the checkpoint's config.json
    tokenizer_dir: Path | None


def load_for_export(folder: str | Path) -> LoadedCheckpoint:
    """Model, config and (if present) tokenizer folder of a vlpipe checkpoint folder; unlike
    ``load_checkpoint`` a checkpoint without a tokenizer is fine here."""
    from vlpipe.train.checkpoint import CONFIG, load_weights, read_config

    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise InputError(folder, f"no {CONFIG}", "pass a checkpoint artifact")
    meta = read_config(folder)
    if meta.get("format") != "vlpipe-albef" or "config" not in meta:
        raise InputError(folder / CONFIG, f"format is {meta.get('format')!r}, not 'vlpipe-albef'", "pass a checkpoint artifact")
    cfg = from_dict(meta["config"])
    model = ALBEF(cfg.model)
    load_weights(model, folder)
    tok = folder / meta["tokenizer"] if meta.get("tokenizer") else folder / "tokenizer"
    has_tok = tok.is_dir() and ((tok / "tokenizer.json").exists() or (tok / "vocab.txt").exists())
    return LoadedCheckpoint(model.eval(), cfg, meta, tok if has_tok else None)


# ==================================================================================================
# Writing a folder atomically
# ==================================================================================================


def write_folder(out: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a fresh temporary sibling of ``out``, then rename it to ``out``.

    An existing non-empty ``out`` needs ``overwrite``; a vlpipe artifact folder is never replaced.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise InputError(out, "exists and is not a folder", "choose another --out")
        if (out / "manifest.json").exists():
            raise InputError(out, "is a vlpipe artifact; exports are plain folders", "choose another --out")
        if any(out.iterdir()) and not overwrite:
            raise InputError(out, "exists and is not empty", "pass --overwrite to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trash = None
    if out.exists():
        trash = out.parent / f".{out.name}.trash-{uuid.uuid4().hex[:8]}"
        os.replace(out, trash)
    os.replace(tmp, out)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return out


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file wants separate contiguous tensors: shared storage is cloned."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    save_file(out, str(path), metadata=metadata)


# ==================================================================================================
# Hugging Face BERT (text tower)
# ==================================================================================================


def vlpipe_text_key_to_bert(name: str, text_layers: int) -> str:
    """``text_encoder.embeddings.*`` -> ``embeddings.*``; ``text_encoder.layer.i.*`` -> ``encoder.layer.i.*``
    (a HF ``BertModel``'s names). The inverse of :func:`vlpipe.models.albef.bert_key_to_vlpipe`,
    checked against it."""
    rest = name.removeprefix("text_encoder.")
    key = "encoder." + rest if rest.startswith("layer.") else rest
    if bert_key_to_vlpipe(key, text_layers, 0) != name:
        raise VlpipeError(f"no BERT name for {name}")
    return key


def text_tower_state_dict(model: ALBEF) -> dict[str, torch.Tensor]:
    """The text encoder's tensors under HF ``BertModel`` names."""
    t = model.cfg.text
    return {vlpipe_text_key_to_bert("text_encoder." + k, t.text_layers): v
            for k, v in model.text_encoder.state_dict().items()}


def build_bert(model: ALBEF):
    """A transformers ``BertModel`` (no pooler) holding the text tower's weights."""
    from transformers import BertModel

    bc = bert_config(model.cfg.text, num_layers=model.cfg.text.text_layers)
    bc.architectures = ["BertModel"]
    bert = BertModel(bc, add_pooling_layer=False)
    result = bert.load_state_dict(text_tower_state_dict(model), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or result.unexpected_keys:
        raise VlpipeError(f"text tower does not fit BertModel: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    return bert.eval()


# ==================================================================================================
# timm ViT (image tower)
# ==================================================================================================


def timm_spec(v: VisionConfig) -> dict[str, Any]:
    """``timm.create_model(spec['model_name'], pretrained=False, **spec['kwargs'])`` rebuilds the image
    encoder; ``forward_features`` gives its tokens."""
    from vlpipe.data.transforms import MEAN, STD

    import timm

    name = f"{_TIMM_NAMES.get((v.width, v.depth, v.heads), 'vit_base')}_patch{v.patch_size}_224"
    return {
        "model_name": name if timm.is_model(name) else "vit_base_patch16_224",
        "kwargs": {
            "img_size": v.image_size, "patch_size": v.patch_size, "embed_dim": v.width, "depth": v.depth,
            "num_heads": v.heads, "mlp_ratio": v.mlp_ratio, "qkv_bias": True, "class_token": True,
            "global_pool": "token", "num_classes": 0,
        },
        "note": "model_name only picks timm's VisionTransformer; kwargs set every size",
        "output": "model.forward_features(images) -> tokens [B, 1 + (img_size/patch_size)^2, embed_dim] after "
                  "the final LayerNorm; index 0 is [CLS]",
        "input": {"size": [v.image_size, v.image_size], "mean": list(MEAN), "std": list(STD),
                  "layout": "RGB float in [0, 1], then (x - mean) / std"},
    }


# ==================================================================================================
# The exports
# ==================================================================================================


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name not in ("manifest.json", "config.json", "model.safetensors"):
            shutil.copy2(p, dst / p.name)


# how the text state the ITC head reads is taken from last_hidden_state, per model.text.pool
_TEXT_POOL_EXPR = {
    "cls": "text_hidden[:, 0]",
    "mean": "(text_hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)",
}


def export_hf(ck: LoadedCheckpoint, out: str | Path, overwrite: bool = False, source: str = "") -> ExportResult:
    """Text tower as a HF ``BertModel`` folder, image tower as timm safetensors + JSON, ITC heads.
    See the module docstring for the files."""
    model, cfg = ck.model, ck.config
    t = cfg.model.text
    notes = [
        f"text: BertModel with {t.text_layers} layers (vlpipe's text-only layers); the fusion layers "
        f"({t.fusion_layers}), the ITM head and the MLM head are not exported (use `vlpipe export safetensors`)",
        "load with BertModel.from_pretrained(DIR, add_pooling_layer=False): ALBEF has no pooler",
    ]
    if t.pool != "cls":
        notes.append(f"ITC text feature pools the text states by {t.pool!r} (not [CLS]): see itc.use in "
                     f"{EXPORT_INFO}")
    if ck.tokenizer_dir is None:
        notes.append("the checkpoint has no tokenizer: none written")

    if cfg.model.vision.stem != "patch":
        raise VlpipeError(f"{source or 'checkpoint'}: its image tower uses the {cfg.model.vision.stem!r} stem, which "
                          "plain timm cannot rebuild; use `vlpipe export safetensors`, or pretrain with "
                          "--set model.vision.stem=patch")

    def write(tmp: Path) -> None:
        bert = build_bert(model)
        bert.config.save_pretrained(str(tmp))  # config.json (architectures: BertModel)
        _save_tensors(bert.state_dict(), tmp / "model.safetensors", {"format": "pt"})
        if ck.tokenizer_dir is not None:
            _copy_tokenizer(ck.tokenizer_dir, tmp)
        _save_tensors(model.visual_encoder.state_dict(), tmp / IMAGE_WEIGHTS, {"format": "pt"})
        (tmp / IMAGE_SPEC).write_text(json.dumps(timm_spec(cfg.model.vision), indent=2) + "\n", encoding="utf-8")
        heads = {f"vision_proj.{k}": v for k, v in model.vision_proj.state_dict().items()}
        heads |= {f"text_proj.{k}": v for k, v in model.text_proj.state_dict().items()}
        heads["temp"] = model.temp.detach().reshape(())
        _save_tensors(heads, tmp / ITC_HEADS, {"format": "pt"})
        info = {
            "source_checkpoint": source, "format": "vlpipe-export-hf",
            "text": {"files": ["config.json", "model.safetensors"], "layers": t.text_layers,
                     "load": "transformers.BertModel.from_pretrained(DIR, add_pooling_layer=False)",
                     "tokenizer": ck.tokenizer_dir is not None},
            "image": {"files": [IMAGE_WEIGHTS, IMAGE_SPEC],
                      "load": "timm.create_model(spec['model_name'], pretrained=False, **spec['kwargs']) then "
                              "load_state_dict(safetensors.torch.load_file(image_encoder.safetensors))"},
            "itc": {"file": ITC_HEADS, "text_pool": t.pool,
                    "use": "normalize(vision_proj(image_tokens[:, 0])) . normalize(text_proj("
                           + _TEXT_POOL_EXPR[t.pool] + ")) / temp"},
            "not_exported": ["fusion_encoder (cross-attention layers)", "itm_head", "mlm_head", "momentum copies",
                             "queues"],
            "config": to_dict(cfg),
        }
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    folder = write_folder(out, write, overwrite)
    return ExportResult(folder, _files(folder), notes)


def export_safetensors(ck: LoadedCheckpoint, out: str | Path, overwrite: bool = False, source: str = "") -> ExportResult:
    """The whole state dict under vlpipe names + the checkpoint's config.json (+ tokenizer/)."""
    from vlpipe.train.checkpoint import CONFIG, WEIGHTS

    def write(tmp: Path) -> None:
        _save_tensors(ck.model.state_dict(), tmp / WEIGHTS, {"format": "pt", "source": source})
        meta = dict(ck.meta)
        if ck.tokenizer_dir is not None:
            _copy_tokenizer(ck.tokenizer_dir, tmp / "tokenizer")
            meta["tokenizer"] = "tokenizer"
        else:
            meta.pop("tokenizer", None)
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    folder = write_folder(out, write, overwrite)
    notes = ["every state-dict key under vlpipe's names (tied tensors stored under both names); "
             "rebuild with ALBEF(from_dict(config['config']).model).load_state_dict(load_file(...))"]
    return ExportResult(folder, _files(folder), notes)
