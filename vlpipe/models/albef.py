"""ALBEF: a ViT image encoder, a BERT text encoder, a cross-attending fusion encoder, trained with
image-text contrastive (ITC), image-text matching (ITM, hard negatives) and masked-LM (MLM) losses
and momentum distillation.

Momentum copies (``*_m``, no gradients) of the encoders, projections and MLM head give the ITC
targets, fill the feature queues, and give MLM soft targets. Queued features carry their image id
(``idx_queue``) so every queued feature of the same image counts as a positive.

Distributed training: the model never calls ``torch.distributed``. :meth:`ALBEF.set_gather`
installs an all-gather (with gradients for token states, without for ids and momentum features);
the default is the identity, i.e. a single process. With a gather, ITC compares against every
rank's momentum features, the queue receives every rank's features, and ITM negatives are drawn
from the whole world batch (text states are padded to a common length first).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vlpipe.config import Config, ModelConfig, TextConfig, validate
from vlpipe.errors import InputError, VlpipeError
from vlpipe.models.fusion import FusionEncoder
from vlpipe.models.heads import MLMHead, itm_head, projection
from vlpipe.models.text import TextEncoder
from vlpipe.models.vision import LoadReport, VisionEncoder, load_vision_weights
from vlpipe.objectives.itc import itc_loss, positive_mask
from vlpipe.objectives.itm import itm_loss, sample_hard_negatives
from vlpipe.objectives.mlm import mask_tokens, mlm_loss
from vlpipe.objectives.momentum import MomentumCopies, enqueue

Gather = Callable[[torch.Tensor], torch.Tensor]


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


def _fill_tied_keys(module: "ALBEF", state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: safetensors' ``save_model`` stores a shared tensor under one of
    its names only, so accept a state dict holding either name of a tied pair."""
    for a, b in module.tied_keys():
        a, b = prefix + a, prefix + b
        if a in state_dict and b not in state_dict:
            state_dict[b] = state_dict[a]
        elif b in state_dict and a not in state_dict:
            state_dict[a] = state_dict[b]


class ALBEF(MomentumCopies, nn.Module):
    TEMP_MAX = 0.5
    #: the submodules with a momentum (EMA) copy ``<name>_m``: momentum features, queues, soft targets
    MOMENTUM = ("visual_encoder", "text_encoder", "fusion_encoder", "vision_proj", "text_proj", "mlm_head")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        validate(Config(model=cfg))
        self.cfg = copy.deepcopy(cfg)
        v, t = cfg.vision, cfg.text
        self.visual_encoder = VisionEncoder(v)
        self.text_encoder = TextEncoder(t)
        self.fusion_encoder = FusionEncoder(t, image_width=v.width)
        self.vision_proj = projection(v.width, cfg.embed_dim)
        self.text_proj = projection(t.width, cfg.embed_dim)
        self.itm_head = itm_head(t.width)
        self.mlm_head = MLMHead(t.width, t.vocab_size, t.layer_norm_eps)
        if cfg.tie_word_embeddings:
            self.mlm_head.tie_to(self.text_encoder.embeddings.word_embeddings)
        self.temp = nn.Parameter(torch.tensor(float(cfg.temp)))

        # Momentum copies: deep-copied together so the tied MLM decoder stays tied in the copy.
        (self.visual_encoder_m, self.text_encoder_m, self.fusion_encoder_m, self.vision_proj_m,
         self.text_proj_m, self.mlm_head_m) = copy.deepcopy(
            [self.visual_encoder, self.text_encoder, self.fusion_encoder, self.vision_proj, self.text_proj, self.mlm_head]
        )
        for _, m in self.momentum_pairs():
            m.requires_grad_(False)

        q, e = cfg.queue_size, cfg.embed_dim
        self.register_buffer("image_queue", F.normalize(torch.randn(e, q), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(e, q), dim=0))
        self.register_buffer("idx_queue", torch.full((q,), -1, dtype=torch.long))  # -1 = no image yet
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

        self._gather: Gather = _identity
        self._gather_nograd: Gather = _identity
        self.register_load_state_dict_pre_hook(_fill_tied_keys)
        self._freeze_unused()
        if cfg.grad_checkpointing:
            self.set_grad_checkpointing(True)

    # ---------------------------------------------------------------- setup helpers

    def _freeze_unused(self) -> None:
        """Parameters no enabled objective trains get requires_grad False, so the optimizer skips
        them and DDP needs no find_unused_parameters. Nothing is removed: checkpoint keys are the
        same for every ablation."""
        c = self.cfg
        if not c.itc:  # ITM reads the projections and temp only to rank negatives (no gradient)
            self.vision_proj.requires_grad_(False)
            self.text_proj.requires_grad_(False)
            self.temp.requires_grad_(False)
        if not c.itm:
            self.itm_head.requires_grad_(False)
        if not (c.itm or c.mlm):
            self.fusion_encoder.requires_grad_(False)
        if not c.mlm:
            self.mlm_head.transform.requires_grad_(False)
            self.mlm_head.bias.requires_grad_(False)
            if not c.tie_word_embeddings:
                self.mlm_head.decoder.requires_grad_(False)

    def tied_keys(self) -> list[tuple[str, str]]:
        """State-dict names that hold one shared tensor (MLM decoder = word embeddings)."""
        if not self.cfg.tie_word_embeddings:
            return []
        return [(f"mlm_head{m}.decoder.weight", f"text_encoder{m}.embeddings.word_embeddings.weight") for m in ("", "_m")]

    def set_gather(self, with_grad: Gather | None = None, no_grad: Gather | None = None) -> None:
        """Install all-gather functions (concatenate along dim 0 over ranks). ``with_grad`` must pass
        gradients back to each rank's part; ``no_grad`` defaults to ``with_grad``. None = identity."""
        self._gather = with_grad or _identity
        self._gather_nograd = no_grad or with_grad or _identity

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual_encoder.set_grad_checkpointing(enable)
        self.text_encoder.set_grad_checkpointing(enable)
        self.fusion_encoder.set_grad_checkpointing(enable)

    def compile_encoders(self, backend: str = "inductor") -> None:
        """``torch.compile`` the six encoders (online and momentum) in place, shapes dynamic.

        Only the encoders: the training forward around them samples masks and negatives and updates
        the queue, Python work that graph capture cannot follow (compiling the whole forward fails on
        ``torch.rand`` of a dynamic shape). In place (``nn.Module.compile``), so state-dict keys do
        not change and checkpoints load with or without it.
        """
        for module in (self.visual_encoder, self.text_encoder, self.fusion_encoder,
                       self.visual_encoder_m, self.text_encoder_m, self.fusion_encoder_m):
            module.compile(backend=backend, dynamic=True)

    def load_vision_weights(self, state_dict: dict[str, torch.Tensor], prefix: str | None = None, strict: bool = False) -> LoadReport:
        """timm-named ViT weights into the image encoder (pos_embed interpolated), then the momentum copy."""
        report = load_vision_weights(self.visual_encoder, state_dict, prefix=prefix, strict=strict)
        self.sync_momentum()
        return report

    def _temp_range(self) -> tuple[float, float]:
        return self.cfg.temp_min, self.TEMP_MAX

    def itc_temperature(self) -> float:
        """The temperature ITC logits divide by: the learned ``temp`` within the range ``forward``
        clamps it to (rerank scores that add the ITC logit use it)."""
        return float(self.temp.detach().clamp(*self._temp_range()))

    # ---------------------------------------------------------------- encoders

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens [B, 1+N, Wv], L2-normalised ITC feature [B, embed_dim])."""
        tokens = self.visual_encoder(images)
        return tokens, F.normalize(self.vision_proj(tokens[:, 0]), dim=-1)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens [B, L, Wt], L2-normalised ITC feature [B, embed_dim])."""
        tokens = self.text_encoder(ids, mask)
        return tokens, F.normalize(self.text_proj(self._text_pool(tokens, mask)), dim=-1)

    def _text_pool(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The text state the ITC projection reads: [CLS] (ALBEF) or the masked token mean."""
        if self.cfg.text.pool == "mean":
            m = mask.unsqueeze(-1).to(tokens.dtype)
            return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
        return tokens[:, 0]

    def fuse(self, text_tokens, text_mask, image_tokens, image_mask=None) -> torch.Tensor:
        """Fused token states [B, L, Wt] of each (text, image) row pair."""
        return self.fusion_encoder(text_tokens, text_mask, image_tokens, image_mask)

    def itm_logits(self, text_tokens, text_mask, image_tokens, image_mask=None) -> torch.Tensor:
        """[B, 2] match logits (column 1 = match) from the fused [CLS]."""
        return self.itm_head(self.fuse(text_tokens, text_mask, image_tokens, image_mask)[:, 0])

    @torch.no_grad()
    def _momentum_image(self, images):
        tokens = self.visual_encoder_m(images)
        return tokens, F.normalize(self.vision_proj_m(tokens[:, 0]), dim=-1)

    @torch.no_grad()
    def _momentum_text(self, ids, mask):
        tokens = self.text_encoder_m(ids, mask)
        return tokens, F.normalize(self.text_proj_m(self._text_pool(tokens, mask)), dim=-1)

    # ---------------------------------------------------------------- queue

    @torch.no_grad()
    def dequeue_and_enqueue(self, image_feat_m: torch.Tensor, text_feat_m: torch.Tensor, image_ids: torch.Tensor) -> None:
        """Append (every rank's) momentum features and their image ids to the ring-buffer queues."""
        img = self._gather_nograd(image_feat_m.detach())
        txt = self._gather_nograd(text_feat_m.detach())
        ids = self._gather_nograd(image_ids)
        ptr = self.queue_ptr[0].clone()
        enqueue(self.image_queue, ptr, img)
        enqueue(self.text_queue, ptr, txt)
        self.queue_ptr[0] = enqueue(self.idx_queue, ptr, ids)

    # ---------------------------------------------------------------- training forward

    def _gather_text(self, tokens: torch.Tensor, mask: torch.Tensor):
        """Every rank's text states and masks, padded to one length (identity without a gather)."""
        if self._gather is _identity:
            return tokens, mask
        length = int(self._gather_nograd(torch.tensor([tokens.shape[1]], device=tokens.device)).max())
        tokens, mask = _pad_to(tokens, mask, length)
        return self._gather(tokens), self._gather_nograd(mask)

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image_ids: torch.Tensor,
        alpha: float | None = None,
        update_momentum: bool = True,
        generator: torch.Generator | None = None,
        text_keys: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of the enabled objectives: ``{"loss": weighted sum, "loss_itc", "loss_itm", "loss_mlm"}``.

        images [B, 3, H, W]; text_ids / text_mask [B, L] (mask 1 = real token); image_ids [B] long,
        >= 0, equal for captions of the same image. ``alpha``: distillation weight (None = config;
        ramp it up in the first epoch if wanted; 0 when ``distill`` is off). ``update_momentum``:
        do the EMA step first, as ALBEF does each iteration (pass False on the inner micro-batches
        of gradient accumulation). ``generator``: RNG for MLM masking and negative sampling.
        ``text_keys`` [B] long (optional, :func:`~vlpipe.data.loader.text_key`): pairs whose texts
        share a key are positives too, in ITC (within the gathered batch) and as ITM negatives
        (never drawn); grounding passes them, as its short expressions recur across images.
        """
        c = self.cfg
        alpha = (c.alpha if alpha is None else float(alpha)) if c.distill else 0.0
        with torch.no_grad():
            self.temp.clamp_(*self._temp_range())
        temp = self.temp

        image_tokens, image_feat = self.encode_image(images)
        text_tokens, text_feat = self.encode_text(text_ids, text_mask)
        losses: dict[str, torch.Tensor] = {}

        need_momentum_image = c.itc or (c.mlm and alpha > 0)
        keys_w = None if text_keys is None else self._gather_nograd(text_keys)  # the gathered batch's
        with torch.no_grad():
            if update_momentum:
                self.momentum_update()
            if need_momentum_image:
                image_tokens_m, image_feat_m = self._momentum_image(images)

        if c.itc:
            with torch.no_grad():
                _, text_feat_m = self._momentum_text(text_ids, text_mask)
                ids_all = torch.cat([self._gather_nograd(image_ids), self.idx_queue])
                image_feat_all = torch.cat([self._gather_nograd(image_feat_m).float(), self.image_queue.t()])
                text_feat_all = torch.cat([self._gather_nograd(text_feat_m).float(), self.text_queue.t()])
                pos = positive_mask(image_ids, ids_all, text_keys, keys_w)
                soft = None
                if alpha > 0:
                    soft = (image_feat_m.float() @ text_feat_all.t() / temp, text_feat_m.float() @ image_feat_all.t() / temp)
            losses["loss_itc"] = itc_loss(image_feat, text_feat, image_feat_all, text_feat_all, temp, pos, pos, soft, alpha)
            self.dequeue_and_enqueue(image_feat_m, text_feat_m, image_ids)

        if c.itm:
            losses["loss_itm"] = self._itm(image_tokens, image_feat, text_tokens, text_mask, text_feat, image_ids, generator,
                                           text_keys, keys_w)

        if c.mlm:
            losses["loss_mlm"] = self._mlm(
                text_ids, text_mask, image_tokens, image_tokens_m if alpha > 0 else None, alpha, generator
            )

        weights = {"loss_itc": c.itc_weight, "loss_itm": c.itm_weight, "loss_mlm": c.mlm_weight}
        losses["loss"] = sum(weights[k] * v for k, v in losses.items())
        return losses

    def _itm(self, image_tokens, image_feat, text_tokens, text_mask, text_feat, image_ids, generator, text_keys=None,
             text_keys_w=None):
        b = image_tokens.shape[0]
        with torch.no_grad():
            ids_w = self._gather_nograd(image_ids)
            sim_i2t = image_feat.float() @ self._gather_nograd(text_feat.detach()).float().t() / self.temp
            sim_t2i = text_feat.float() @ self._gather_nograd(image_feat.detach()).float().t() / self.temp
            neg = sample_hard_negatives(sim_i2t, sim_t2i, image_ids, ids_w, generator, text_keys, text_keys_w)
        image_tokens_w = self._gather(image_tokens)
        text_tokens_w, text_mask_w = self._gather_text(text_tokens, text_mask)
        text_tokens_p, text_mask_p = _pad_to(text_tokens, text_mask, text_tokens_w.shape[1])
        # rows: B positives | B (text i, negative image) | B (image i, negative text)
        texts = torch.cat([text_tokens_p, text_tokens_p, text_tokens_w[neg.text_for_image]])
        masks = torch.cat([text_mask_p, text_mask_p, text_mask_w[neg.text_for_image]])
        imgs = torch.cat([image_tokens, image_tokens_w[neg.image_for_text], image_tokens])
        logits = self.itm_logits(texts, masks, imgs)
        labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)]).to(logits.device)
        weight = torch.cat([torch.ones_like(neg.text_ok), neg.text_ok, neg.image_ok])
        return itm_loss(logits, labels, weight)

    def _mlm(self, text_ids, text_mask, image_tokens, image_tokens_m, alpha, generator):
        t = self.cfg.text
        masked, labels = mask_tokens(
            text_ids, text_mask, t.vocab_size, t.mask_token_id, t.special_token_ids, self.cfg.mlm_prob, generator
        )
        chosen = labels != -100
        hidden = self.fuse(self.text_encoder(masked, text_mask), text_mask, image_tokens)
        logits = self.mlm_head(hidden[chosen])
        soft = None
        if image_tokens_m is not None:
            with torch.no_grad():
                hidden_m = self.fusion_encoder_m(self.text_encoder_m(masked, text_mask), text_mask, image_tokens_m)
                soft = F.softmax(self.mlm_head_m(hidden_m[chosen]).float(), dim=-1)
        return mlm_loss(logits, labels[chosen], soft, alpha)


def _pad_to(tokens: torch.Tensor, mask: torch.Tensor, length: int):
    extra = length - tokens.shape[1]
    if extra <= 0:
        return tokens, mask
    return F.pad(tokens, (0, 0, 0, extra)), F.pad(mask, (0, extra))


def build_model(cfg: ModelConfig | Config) -> ALBEF:
    return ALBEF(cfg.model if isinstance(cfg, Config) else cfg)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of a module (a shared tensor counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ==================================================================================================
# Hugging Face BERT folders
# ==================================================================================================


def _read_hf_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(folder, "no config.json", "pass a local Hugging Face BERT folder")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("model_type", "bert") != "bert":
        raise InputError(folder, f"model_type is {cfg.get('model_type')!r}, not 'bert'")
    return cfg


def _special_ids(folder: Path) -> dict[str, int]:
    names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab: dict[str, int] = {}
    if (folder / "vocab.txt").is_file():
        with open(folder / "vocab.txt", encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    elif (folder / "tokenizer.json").is_file():
        vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    missing = [n for n in names if n not in vocab]
    if missing:
        raise InputError(folder, f"tokenizer lacks {', '.join(missing)}", "use a BERT WordPiece vocabulary")
    return {n: int(vocab[n]) for n in names}


def text_config_from_hf(
    folder: str | Path, fusion_layers: int, text_layers: int | None = None, max_len: int | None = None,
    pool: str = "cls", init_std: float | None = None,
) -> TextConfig:
    """A TextConfig with the sizes and special-token ids of a local HF BERT folder.

    ``pool`` (the ITC text feature, see :class:`TextConfig`) and ``init_std`` (spread of the
    weights that start from scratch, e.g. fusion layers past the folder's depth) are the caller's
    choices, not the folder's; ``init_std`` defaults to the folder's ``initializer_range``.

    The folder's layers are split: ``text_layers`` (default: all but ``fusion_layers``) text-only,
    then ``fusion_layers`` fusion layers (layers past the folder's depth start from scratch).
    ``max_len`` defaults to the folder's position table (a shorter one is sliced at load).
    """
    folder = Path(folder)
    hf = _read_hf_config(folder)
    n = int(hf["num_hidden_layers"])
    if text_layers is None:
        text_layers = n - fusion_layers
    if text_layers < 0:
        raise VlpipeError(f"{folder}: BERT has {n} layers, fewer than fusion_layers {fusion_layers}")
    ids = _special_ids(folder)
    return TextConfig(
        vocab_size=int(hf["vocab_size"]),
        width=int(hf["hidden_size"]),
        text_layers=text_layers,
        fusion_layers=fusion_layers,
        heads=int(hf["num_attention_heads"]),
        intermediate=int(hf["intermediate_size"]),
        max_len=int(max_len or hf.get("max_position_embeddings", 512)),
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        pad_token_id=ids["[PAD]"],
        mask_token_id=ids["[MASK]"],
        special_token_ids=tuple(sorted(ids.values())),
        pool=pool,
        init_std=float(init_std if init_std is not None else hf.get("initializer_range", 0.02)),
    )


def read_bert_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (or ``pytorch_model.bin``, loaded with weights_only)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise InputError(folder, "no model.safetensors or pytorch_model.bin", "pass a local Hugging Face BERT folder")


# Non-weight tensors some BERT files carry; there is nothing to load them into.
_NOT_WEIGHTS = ("embeddings.position_ids", "embeddings.token_type_ids")


def bert_key_to_vlpipe(key: str, text_layers: int, fusion_layers: int) -> str | None:
    """Map one HF BERT key (``bert.`` prefix optional) to this model's name; None = no counterpart.

    ``encoder.layer.i`` -> ``text_encoder.layer.i`` (i < text_layers) or
    ``fusion_encoder.layer.{i - text_layers}``; ``embeddings.*`` -> ``text_encoder.embeddings.*``;
    ``cls.predictions.*`` -> ``mlm_head.*``. Old ``LayerNorm.gamma/beta`` names are accepted.
    """
    if key.startswith("bert."):
        key = key[len("bert."):]
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if key.startswith("embeddings."):
        return None if key in _NOT_WEIGHTS else "text_encoder." + key
    if key.startswith("encoder.layer."):
        idx_str, rest = key[len("encoder.layer."):].split(".", 1)
        i = int(idx_str)
        if i < text_layers:
            return f"text_encoder.layer.{i}.{rest}"
        if i < text_layers + fusion_layers:
            return f"fusion_encoder.layer.{i - text_layers}.{rest}"
        return None
    if key.startswith("cls.predictions."):
        rest = key[len("cls.predictions."):]
        return "mlm_head.bias" if rest == "decoder.bias" else "mlm_head." + rest
    return None


def load_text_weights(model: ALBEF, folder: str | Path, strict: bool = False) -> LoadReport:
    """Load a local HF BERT folder into the text encoder, the fusion layers (self-attention and FFN
    from BERT layers ``text_layers``.., cross-attention keeps its initialisation) and the MLM head;
    then copy into the momentum encoders.

    The model's text width, heads, FFN size and vocabulary must equal the folder's (build it with
    :func:`text_config_from_hf` to adopt them). A longer position table in the file is sliced to
    ``max_len`` (reported in ``reshaped``). Returns the keys of text_encoder / fusion_encoder /
    mlm_head left unloaded (``missing``), the file's keys not used (``unexpected``, e.g. the pooler)
    and ``reshaped``. ``strict``: also refuse when a text-encoder weight would stay missing.
    """
    folder = Path(folder)
    hf = _read_hf_config(folder)
    t = model.cfg.text
    want = {"hidden_size": t.width, "vocab_size": t.vocab_size, "num_attention_heads": t.heads,
            "intermediate_size": t.intermediate}
    diff = [f"{k} {hf.get(k)} vs {v}" for k, v in want.items() if hf.get(k) != v]
    if diff:
        raise VlpipeError(
            f"{folder}: BERT does not fit model.text ({'; '.join(diff)} in the folder vs the model); "
            "build the model with text_config_from_hf(folder, fusion_layers) to adopt the folder's sizes"
        )
    own = model.state_dict()
    sd = read_bert_state_dict(folder)
    to_load: dict[str, torch.Tensor] = {}
    unexpected, reshaped = [], []
    for key, value in sd.items():
        name = bert_key_to_vlpipe(key, t.text_layers, t.fusion_layers)
        if name is None:
            if not any(key.endswith(n) for n in _NOT_WEIGHTS):
                unexpected.append(key)
            continue
        if name not in own:
            unexpected.append(key)
            continue
        if name.endswith("position_embeddings.weight") and value.shape[0] > own[name].shape[0]:
            value = value[: own[name].shape[0]]
            reshaped.append(key)
        if value.shape != own[name].shape:
            raise VlpipeError(
                f"{folder}: {key} has shape {tuple(value.shape)}, model wants {tuple(own[name].shape)} ({name})"
            )
        to_load[name] = value
    if model.cfg.tie_word_embeddings and "text_encoder.embeddings.word_embeddings.weight" in to_load:
        to_load.pop("mlm_head.decoder.weight", None)  # the same tensor: the embeddings' value wins
        tied = ["mlm_head.decoder.weight"]
    else:
        tied = []
    online = ("text_encoder.", "fusion_encoder.", "mlm_head.")
    missing = [k for k in own if k.startswith(online) and k not in to_load and k not in tied]
    if strict and any(k.startswith("text_encoder.") for k in missing):
        raise VlpipeError(f"{folder}: text encoder weights missing: {[k for k in missing if k.startswith('text_encoder.')][:5]}")
    model.load_state_dict(to_load, strict=False)
    model.sync_momentum()
    return LoadReport(missing, sorted(unexpected), reshaped)
