"""Import an official ALBEF checkpoint (the salesforce/ALBEF ``.pth`` files) into a vlpipe model.

The official model keeps its text and fusion layers in one BERT (``text_encoder.bert.encoder.layer.N``;
the layers from ``fusion_layer`` on carry ``crossattention.*``) and its image encoder under
``visual_encoder.*`` with timm names. vlpipe splits the BERT into ``text_encoder`` and
``fusion_encoder`` with the same per-layer names, so the conversion is a rename:

=====================================================  ==================================================
official key                                           vlpipe key
=====================================================  ==================================================
``visual_encoder.<timm name>``                          ``visual_encoder.<timm name>`` (pos_embed resized)
``text_encoder[.bert].embeddings.*``                    ``text_encoder.embeddings.*``
``text_encoder[.bert].encoder.layer.i.*`` (i < F)       ``text_encoder.layer.i.*``
``text_encoder[.bert].encoder.layer.i.*`` (i >= F)      ``fusion_encoder.layer.{i-F}.*``
``text_encoder.cls.predictions.*``                      ``mlm_head.*`` (``decoder.bias`` -> ``bias``)
``vision_proj`` / ``text_proj`` / ``itm_head`` / ``temp``  the same names
``*_m`` (momentum copies of the above)                  ``*_m``
``image_queue`` / ``text_queue`` / ``queue_ptr``        the same names
``idx_queue`` [1, Q]                                    ``idx_queue`` [Q], ids reset to -1
=====================================================  ==================================================

(F = the first layer with cross-attention.) The text renames are
:func:`vlpipe.models.albef.bert_key_to_vlpipe`, the ones ``--init-text`` uses for BERT folders;
position embeddings are resized with :func:`vlpipe.models.vision.interpolate_pos_embed`.

The model's sizes are read from the tensors' shapes (widths, depths, layer split, vocabulary,
position table, embed dim, queue size, image size) on top of a base config; attention heads and
LayerNorm epsilons are not stored in weights and come from the base config. The library never
prints: :func:`import_albef` returns the model, the config and an :class:`ImportReport`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlpipe.artifacts import sha256_file
from vlpipe.config import Config, adopt_tokenizer, apply_override, load_config, to_dict, validate
from vlpipe.errors import InputError, VlpipeError
from vlpipe.models.albef import _NOT_WEIGHTS, ALBEF, bert_key_to_vlpipe
from vlpipe.models.vision import interpolate_pos_embed

#: Buffers that are training state, not weights: a checkpoint without them keeps the fresh values.
QUEUE_KEYS = ("image_queue", "text_queue", "idx_queue", "queue_ptr")
#: Top-level modules that map by their own name (``X.*`` -> ``X.*``), with momentum copies ``X_m``.
SAME_NAME = ("vision_proj", "text_proj", "itm_head")
#: Wrappers an ALBEF / DeiT / Lightning checkpoint nests its state dict under.
WRAPPERS = ("model", "state_dict", "module")

_LAYER = re.compile(r"^text_encoder\.(?:bert\.)?encoder\.layer\.(\d+)\.(.*)$")
_BLOCK = re.compile(r"^visual_encoder\.blocks\.(\d+)\.")


@dataclass
class ImportReport:
    """What an import did. Names in ``missing`` are vlpipe's; the other lists hold checkpoint keys."""

    source: str
    sha256: str
    wrapper: str | None = None  # the key the state dict was nested under ('model'), None = bare
    tensors: int = 0  # tensors in the checkpoint's state dict
    loaded: int = 0  # model tensors that received a value from the checkpoint
    missing: list[str] = field(default_factory=list)  # model tensors left at their initial value
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys with no counterpart here
    reshaped: list[str] = field(default_factory=list)  # checkpoint keys resized on the way in
    ignored: list[str] = field(default_factory=list)  # non-weight buffers (position_ids, ...)
    inferred: dict[str, Any] = field(default_factory=dict)  # config fields read from shapes
    overridden: list[str] = field(default_factory=list)  # --set assignments applied after inference
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def counts(self) -> dict[str, int]:
        return {"tensors": self.tensors, "loaded": self.loaded, "missing": len(self.missing),
                "unexpected": len(self.unexpected), "reshaped": len(self.reshaped), "ignored": len(self.ignored)}


@dataclass
class ImportResult:
    model: ALBEF
    config: Config
    report: ImportReport
    tokenizer_dir: Path | None = None


# ==================================================================================================
# Reading the file
# ==================================================================================================


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= path.stat().st_size


def _resave_hint(path: Path) -> str:
    return (f"only if you trust the file, re-save its weights: python -c \"import torch; "
            f"c = torch.load('{path}', map_location='cpu', weights_only=False); "
            f"torch.save(c.get('model', c), '{path.with_suffix('')}-weights.pth')\" and import that file")


def read_albef_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict of an official ALBEF ``.pth`` file and the wrapper key it was found under.

    Loaded with ``torch.load(weights_only=True)``: no code in the file can run. A file that needs
    full unpickling, is no PyTorch file, is a safetensors file or a folder, holds no dict of tensors,
    or lacks the ``visual_encoder.`` / ``text_encoder.`` keys of ALBEF raises a one-line
    :class:`~vlpipe.errors.InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found", "pass the official ALBEF .pth file")
    if path.is_dir():
        if (path / "manifest.json").exists() or (path / "model.safetensors").exists():
            raise InputError(path, "is a vlpipe checkpoint folder, which needs no import",
                             "pass it to --checkpoint of other stages directly")
        raise InputError(path, "is a folder, not a checkpoint file", "pass the official ALBEF .pth file")
    if _is_safetensors(path):
        raise InputError(path, "is a safetensors file (vlpipe checkpoints are safetensors and need no import)",
                         "`vlpipe import albef` reads the official ALBEF .pth files")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        msg = str(e)
        if "Weights only load failed" in msg:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what = f" ({found.group(1)})" if found else ""
            raise InputError(path, f"holds Python objects beyond tensors{what}, so it cannot be loaded with "
                                   "weights_only=True (no code from a checkpoint is run)", _resave_hint(path)) from None
        first = msg.strip().splitlines()[0][:120] if msg.strip() else ""
        raise InputError(path, f"is not a PyTorch checkpoint ({type(e).__name__}: {first})",
                         "pass the official ALBEF .pth file") from None
    wrapper = None
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj, wrapper = obj[key], key
            break
    if not isinstance(obj, dict):
        raise InputError(path, f"holds a {type(obj).__name__}, not a state dict", "pass the official ALBEF .pth file")
    bad = next((k for k, v in obj.items() if not torch.is_tensor(v)), None)
    if bad is not None:
        raise InputError(path, f"is not a dict of tensors ({bad!r} is a {type(obj[bad]).__name__})",
                         "pass a checkpoint whose 'model' entry is the ALBEF state dict")
    sd = {str(k): v for k, v in obj.items()}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DDP
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not any(k.startswith("visual_encoder.") for k in sd):
        raise InputError(path, f"has no visual_encoder.* keys, so it is not an ALBEF checkpoint ({_kind_hint(sd)})")
    if not any(k.startswith("text_encoder.") for k in sd):
        raise InputError(path, f"has no text_encoder.* keys, so it is not an ALBEF checkpoint ({_kind_hint(sd)})")
    return sd, wrapper


def _kind_hint(sd: dict[str, torch.Tensor]) -> str:
    keys = list(sd)
    if not keys:
        return "the state dict is empty"
    if any(k.startswith(("bert.", "encoder.layer.", "embeddings.")) for k in keys):
        return "it looks like a BERT state dict: use `vlpipe pretrain --init-text` with a Hugging Face folder"
    if "pos_embed" in sd or any(k.startswith("blocks.") for k in keys):
        return "it looks like a bare ViT: use `vlpipe pretrain --init-image`"
    return "first keys: " + ", ".join(keys[:3])


# ==================================================================================================
# Config from shapes
# ==================================================================================================


def _text_prefix(sd: dict[str, torch.Tensor]) -> str:
    """``text_encoder.bert.`` (pre-training, BertForMaskedLM) or ``text_encoder.`` (fine-tuned, BertModel)."""
    return "text_encoder.bert." if any(k.startswith("text_encoder.bert.") for k in sd) else "text_encoder."


def _need(sd: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in sd:
        raise InputError(path, f"lacks {key}, so its model sizes cannot be read", "is it an ALBEF checkpoint?")
    return sd[key]


def infer_fields(sd: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> dict[str, Any]:
    """Config fields (dotted keys) that the tensor shapes of an official state dict determine."""
    path = Path(path)
    out: dict[str, Any] = {}
    proj = _need(sd, "visual_encoder.patch_embed.proj.weight", path)  # [Wv, 3, p, p]
    pos = _need(sd, "visual_encoder.pos_embed", path)  # [1, 1 + g*g, Wv]
    width, patch = int(proj.shape[0]), int(proj.shape[-1])
    grid = math.isqrt(int(pos.shape[1]) - 1)
    if grid * grid != int(pos.shape[1]) - 1:
        raise InputError(path, f"visual_encoder.pos_embed has {pos.shape[1] - 1} patch positions, not a square grid")
    blocks = {int(m.group(1)) for k in sd if (m := _BLOCK.match(k))}
    if not blocks:
        raise InputError(path, "has no visual_encoder.blocks.*", "is it an ALBEF checkpoint?")
    out["model.vision.width"] = width
    out["model.vision.patch_size"] = patch
    out["model.vision.stem"] = "patch"  # official ViTs patchify with one convolution
    out["model.vision.image_size"] = grid * patch
    out["model.vision.depth"] = max(blocks) + 1
    fc1 = sd.get("visual_encoder.blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        out["model.vision.mlp_ratio"] = float(fc1.shape[0]) / width

    tp = _text_prefix(sd)
    words = _need(sd, tp + "embeddings.word_embeddings.weight", path)  # [V, Wt]
    out["model.text.vocab_size"], out["model.text.width"] = int(words.shape[0]), int(words.shape[1])
    positions = sd.get(tp + "embeddings.position_embeddings.weight")
    if positions is not None:
        out["model.text.max_len"] = int(positions.shape[0])
    layers: dict[int, set[str]] = {}
    for k in sd:
        if (m := _LAYER.match(k)):
            layers.setdefault(int(m.group(1)), set()).add(m.group(2).split(".", 1)[0])
    if not layers:
        raise InputError(path, f"has no {tp}encoder.layer.* keys", "is it an ALBEF checkpoint?")
    cross = sorted(i for i, parts in layers.items() if "crossattention" in parts)
    if not cross:
        raise InputError(path, "no text layer has crossattention.* weights, so there is no fusion encoder",
                         "is it an ALBEF checkpoint?")
    total = max(layers) + 1
    out["model.text.text_layers"] = cross[0]
    out["model.text.fusion_layers"] = total - cross[0]
    inter = sd.get(f"{tp}encoder.layer.0.intermediate.dense.weight")
    if inter is not None:
        out["model.text.intermediate"] = int(inter.shape[0])

    for key in ("vision_proj.weight", "text_proj.weight"):
        if key in sd:
            out["model.embed_dim"] = int(sd[key].shape[0])
            break
    if "image_queue" in sd and sd["image_queue"].dim() == 2:
        out["model.queue_size"] = int(sd["image_queue"].shape[1])
    decoder = sd.get("text_encoder.cls.predictions.decoder.weight")
    if decoder is not None:
        out["model.tie_word_embeddings"] = bool(decoder.shape == words.shape and torch.equal(decoder, words))
    return out


def _set_field(cfg: Config, dotted: str, value: Any) -> None:
    obj = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, leaf, value)


def _heads(width: int, base_width: int, base_heads: int) -> tuple[int, str]:
    """Heads for a width: the base's when the width is the base's, else 64-wide heads (BERT, ViT)."""
    if width == base_width and width % base_heads == 0:
        return base_heads, "from --config"
    if width % 64 == 0:
        return width // 64, "assumed 64-wide heads"
    if width % base_heads == 0:
        return base_heads, "from --config"
    raise VlpipeError(f"cannot choose attention heads for width {width}: set them with --set")


def resolve_import_config(
    sd: dict[str, torch.Tensor],
    base: str | Path = "albef-base",
    overrides: list[str] | tuple[str, ...] = (),
    tokenizer=None,
    path: str | Path = "checkpoint",
) -> tuple[Config, dict[str, Any], list[str]]:
    """The base config with the fields read from the shapes, then the ``--set`` overrides (they win),
    then the tokenizer's special-token ids. Returns (config, inferred fields, notes)."""
    cfg = load_config(base, [])
    inferred = infer_fields(sd, path)
    notes: list[str] = []
    base_v, base_t = cfg.model.vision, cfg.model.text
    heads = {}
    for section, b in (("vision", base_v), ("text", base_t)):
        n, how = _heads(inferred[f"model.{section}.width"], b.width, b.heads)
        heads[f"model.{section}.heads"] = n
        notes.append(f"model.{section}.heads = {n} ({how}; heads are not stored in weights, "
                     f"--set model.{section}.heads=N if the source used others)")
    for key, value in {**inferred, **heads}.items():
        _set_field(cfg, key, value)
    # official ALBEF's ITC reads the text [CLS], whatever the base preset chose (albef-tiny: mean)
    _set_field(cfg, "model.text.pool", "cls")
    user_keys = set()
    for o in overrides:
        apply_override(cfg, o)
        user_keys.add(o.partition("=")[0].strip())
    if tokenizer is not None:
        vocab = cfg.model.text.vocab_size
        if len(tokenizer) != vocab:
            raise InputError(path, f"its vocabulary has {vocab} tokens but --tokenizer has {len(tokenizer)}",
                             "pass the tokenizer the checkpoint was trained with (bert-base-uncased for the "
                             "official ALBEF)")
        cfg.model.text = adopt_tokenizer(cfg.model.text, tokenizer)
    try:
        validate(cfg)
    except VlpipeError as e:
        raise VlpipeError(f"{path}: the config read from the checkpoint is not usable: {e}") from None
    return cfg, {k: v for k, v in inferred.items() if k not in user_keys}, notes


# ==================================================================================================
# Key map
# ==================================================================================================


def _split_momentum(key: str) -> tuple[str, str, str]:
    """'text_encoder_m.bert.x' -> ('text_encoder', '_m', 'bert.x')."""
    top, _, rest = key.partition(".")
    if top.endswith("_m"):
        return top[:-2], "_m", rest
    return top, "", rest


def official_to_vlpipe(key: str, text_layers: int, fusion_layers: int) -> str | None:
    """The vlpipe name of one official ALBEF key; None = no counterpart (a head vlpipe lacks)."""
    top, m, rest = _split_momentum(key)
    if top == "visual_encoder":
        return f"visual_encoder{m}.{rest}"
    if top == "text_encoder":
        name = bert_key_to_vlpipe(rest, text_layers, fusion_layers)
        if name is None:
            return None
        module, _, tail = name.partition(".")
        return f"{module}{m}.{tail}"
    if top in SAME_NAME and rest:
        return f"{top}{m}.{rest}"
    if not m and not rest and (top == "temp" or top in QUEUE_KEYS):
        return top
    return None


def _is_non_weight(key: str) -> bool:
    return key.endswith(_NOT_WEIGHTS)


def _momentum_modules(model: ALBEF) -> list[str]:
    return [name for name, _ in model.named_children() if name.endswith("_m")]


def convert_state_dict(
    sd: dict[str, torch.Tensor], model: ALBEF, report: ImportReport, path: str | Path = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The official tensors under vlpipe names, fitted to ``model``; fills the report's
    unexpected / reshaped / ignored / notes. A shape the config cannot explain is an error."""
    cfg = model.cfg
    t = cfg.text
    own = model.state_dict()
    grid = cfg.vision.image_size // cfg.vision.patch_size
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    queue_size = sd["image_queue"].shape[-1] if "image_queue" in sd else None
    drop_queues = queue_size is not None and queue_size != cfg.queue_size
    if drop_queues:
        report.notes.append(f"queues not imported: the checkpoint's hold {queue_size} features, "
                            f"model.queue_size is {cfg.queue_size}; they start fresh")
    for key, value in sd.items():
        if _is_non_weight(key):
            report.ignored.append(key)
            continue
        name = official_to_vlpipe(key, t.text_layers, t.fusion_layers)
        if name is None or name not in own:
            report.unexpected.append(key)
            continue
        if name in QUEUE_KEYS and drop_queues:
            report.ignored.append(key)
            continue
        want = own[name].shape
        if name == "idx_queue":
            if value.numel() != want.numel():
                raise VlpipeError(f"{path}: idx_queue holds {value.numel()} ids, the queue {want.numel()}")
            value = torch.full(want, -1, dtype=own[name].dtype)
            report.reshaped.append(key)
            report.notes.append("idx_queue: the queued image ids index the source run's dataset; reset to -1 "
                                "(queued features count as negatives only)")
        elif name.endswith(".pos_embed") and value.shape != want:
            value = interpolate_pos_embed(value, grid, num_prefix=1)
            report.reshaped.append(key)
        elif name.endswith("position_embeddings.weight") and value.shape[0] > want[0]:
            value = value[: want[0]]
            report.reshaped.append(key)
        if value.shape != want:
            raise VlpipeError(
                f"{path}: {key} has shape {tuple(value.shape)} but the model wants {tuple(want)} for {name}: "
                "the checkpoint does not fit the config (check --config/--set)"
            )
        if name in out:  # cls.predictions.bias and cls.predictions.decoder.bias are one tensor
            if not torch.equal(out[name], value):
                report.notes.append(f"{key} differs from {source[name]}; kept {source[name]}")
            continue
        out[name] = value.to(own[name].dtype)
        source[name] = key
    if cfg.tie_word_embeddings:
        for a, b in model.tied_keys():
            if a in out and b in out and not torch.equal(out[a], out[b]):
                raise VlpipeError(f"{path}: the MLM decoder ({source[a]}) differs from the word embeddings "
                                  f"({source[b]}), but model.tie_word_embeddings is true: drop that --set")
    return out


# ==================================================================================================
# The import
# ==================================================================================================


def import_albef(
    path: str | Path,
    config: str | Path = "albef-base",
    overrides: list[str] | tuple[str, ...] = (),
    tokenizer_dir: str | Path | None = None,
    strict: bool = True,
) -> ImportResult:
    """Read an official ALBEF checkpoint into a vlpipe :class:`ALBEF` (weights, momentum copies, queues).

    ``config`` (preset or YAML) is the base for what the shapes do not say; ``overrides`` are
    ``--set`` assignments applied after the inferred sizes; ``tokenizer_dir`` (a HF folder) gives the
    special-token ids and must have the checkpoint's vocabulary size. A momentum module that the
    file lacks entirely is copied from its online module; queue buffers the file lacks keep their
    fresh values. ``strict``: any other model tensor left without a value is an error naming the
    file and the first keys; otherwise those keys are reported in ``report.missing``.
    """
    path = Path(path)
    sd, wrapper = read_albef_checkpoint(path)
    tokenizer = None
    if tokenizer_dir is not None:
        from vlpipe.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
    cfg, inferred, notes = resolve_import_config(sd, config, overrides, tokenizer, path)
    report = ImportReport(source=str(path), sha256=sha256_file(path), wrapper=wrapper, tensors=len(sd),
                          inferred=inferred, overridden=list(overrides), notes=notes)
    if "cls_head.0.weight" in sd and cfg.model.text.fusion_layers == 2 * cfg.model.text.text_layers:
        report.notes.append("this looks like an NLVR2 checkpoint: its fusion layers take the two images in "
                            "turn; vlpipe runs them as one stack over one image")
    model = ALBEF(cfg.model)
    converted = convert_state_dict(sd, model, report, path)

    own = model.state_dict()
    direct = set(converted)
    loaded = set(direct)
    for a, b in model.tied_keys():
        if a in loaded or b in loaded:
            loaded |= {a, b}
    synced: set[str] = set()
    for mom in _momentum_modules(model):
        keys = [k for k in own if k.startswith(mom + ".")]
        if any(k in direct for k in keys):
            continue
        online = mom[:-2]
        for k in keys:
            if k not in loaded:
                src = online + k[len(mom):]
                converted[k] = converted.get(src, own[src]).clone()
                synced.add(k)
        report.notes.append(f"{mom}: not in the checkpoint, copied from {online}")
    absent_queues = [k for k in QUEUE_KEYS if k not in loaded]
    if absent_queues and set(absent_queues) != {"idx_queue"}:
        report.notes.append(f"{', '.join(absent_queues)}: not imported, fresh values kept")
    report.missing = [k for k in own if k not in loaded and k not in synced and k not in QUEUE_KEYS]
    if strict and report.missing:
        heads = ""
        if all(k.startswith("mlm_head") for k in report.missing):
            heads = " (retrieval fine-tuned checkpoints have no MLM head)"
        elif all(k.startswith(("mlm_head", "itm_head", "vision_proj", "text_proj")) for k in report.missing):
            heads = " (checkpoints fine-tuned for VQA, VE or NLVR2 lack these heads)"
        raise InputError(
            path, f"{len(report.missing)} model tensors have no value in the checkpoint: "
                  f"{', '.join(report.missing[:5])}{' ...' if len(report.missing) > 5 else ''}{heads}",
            "pass --no-strict to import anyway and keep them at their initial values, or check --config/--set",
        )
    model.load_state_dict(converted, strict=False)
    report.loaded = len(loaded & set(own))
    report.unexpected.sort()
    return ImportResult(model=model.eval(), config=cfg, report=report,
                        tokenizer_dir=Path(tokenizer_dir) if tokenizer_dir is not None else None)


def write_checkpoint(folder: Path, result: ImportResult) -> None:
    """The files of a vlpipe checkpoint (as ``vlpipe pretrain`` writes them) into ``folder``:
    ``model.safetensors``, ``config.json`` and, when a tokenizer was given, ``tokenizer/``."""
    from vlpipe.train.checkpoint import TOKENIZER_DIR, copy_tokenizer, save_weights, write_config

    folder = Path(folder)
    save_weights(result.model, folder)
    r = result.report
    meta: dict[str, Any] = {
        "format": "vlpipe-albef",
        "task": "import",
        "step": 0,
        "image_size": result.config.model.vision.image_size,
        "config": to_dict(result.config),
        "inputs": {"source": r.source, "sha256": r.sha256, "source_format": "salesforce/ALBEF",
                   "tokenizer": str(result.tokenizer_dir) if result.tokenizer_dir else None},
    }
    if result.tokenizer_dir is not None:
        meta["tokenizer"] = TOKENIZER_DIR
        copy_tokenizer(result.tokenizer_dir, folder)
    write_config(folder, meta)
