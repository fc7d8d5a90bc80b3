"""VQA as answer generation (ALBEF, sec. 5): fused question states + an answer decoder.

The pre-trained image encoder, text encoder and fusion encoder turn (image, question) into fused
question states [B, Lq, W]. An **answer decoder** generates the answer from them: BERT embeddings,
then ``decoder_layers`` layers of

    causal self-attention over the answer tokens -> cross-attention to the question states -> FFN

(the fusion layer's structure with a causal mask; :class:`~vlpipe.models.fusion.FusionLayer`
itself), then an LM head. As in ALBEF, the decoder starts as a copy of the pre-trained model: its
embeddings from the text encoder's, layer ``i`` from fusion layer ``i``, the LM head from the MLM
head (tied to the decoder's own word embeddings when the model ties them). Cross-attention reads
question states (text width) where the fusion layer read image tokens (image width): when the two
widths differ those key/value projections start fresh (:func:`vqa_state_from_albef` says so).

Answers are tokenized as the tokenizer does any text, ``[CLS] answer [SEP] [PAD]...``: ``[CLS]``
is the start token and ``[SEP]`` the end token the decoder must also predict.

Training (conditional LM loss, ALBEF's recipe): each question is repeated once per distinct
answer; the loss of an answer is the summed token cross-entropy of its tokens after ``[CLS]``,
multiplied by the answer's weight (VQA v2: its share of the human answers); the batch loss is the
weighted sum divided by the number of questions (:func:`sequence_nll`, :func:`weighted_answer_loss`).

Inference (:meth:`VQAModel.rank_answers`, ALBEF's ``rank_answer``): every candidate answer's first
token is scored with one decoder step from ``[CLS]``; the ``k`` candidates with the most probable
first token are then scored by their full log-likelihood and returned best first. (ALBEF adds the
first token's log-probability a second time to the full-sequence log-likelihood; vlpipe ranks by
the log-likelihood itself.) The VQA accuracy metric lives in :mod:`vlpipe.metrics.vqa`.

Momentum distillation (ALBEF's VQA.yaml ``distill: True``): built with ``distill=True`` (the ``vqa``
task passes ``model.distill``), the model also holds frozen EMA copies ``visual_encoder_m``,
``text_encoder_m``, ``fusion_encoder_m`` and ``answer_decoder_m``, saved with the weights. A
training call ``forward(..., alpha=a, update_momentum=u)`` does the EMA step (``model.momentum``;
when ``u``), runs the momentum decoder on the momentum model's question states, and distils the
decoder's token distributions: each answer's loss is ``(1 - alpha)`` times its summed token NLL
plus ``alpha`` times its summed token soft cross-entropy against the momentum decoder's softmax
(ALBEF's ``soft_labels``), then weighted as above. All inside ``forward``, so it runs under
DistributedDataParallel; :meth:`VQAModel.rank_answers` uses the online model only.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vlpipe.config import Config, ModelConfig, TextConfig, validate
from vlpipe.errors import VlpipeError
from vlpipe.models.fusion import FusionEncoder, FusionLayer
from vlpipe.models.heads import MLMHead
from vlpipe.models.text import TextEncoder, bert_config, init_bert_weights, padding_mask
from vlpipe.models.transfer import backbone_keys, fill_tied_keys, load_mapped
from vlpipe.models.vision import LoadReport, VisionEncoder
from vlpipe.objectives.distill import distill_mix, soft_cross_entropy
from vlpipe.objectives.momentum import (MomentumCopies,
                                        add_momentum_copies, fill_momentum_keys, without_momentum_keys)


@dataclass
class VQAConfig:
    """Settings of the VQA model on top of a :class:`~vlpipe.config.ModelConfig`."""

    decoder_layers: int = 0  # 0 = model.text.fusion_layers (ALBEF: 6, the fusion depth); extra layers start fresh
    k_test: int = 128  # candidates kept after the first-token step of rank_answers (ALBEF k_test)
    max_answer_len: int = 10  # tokens per answer incl. [CLS] and [SEP] (longer answers are truncated)

    def layers_for(self, text: TextConfig) -> int:
        return self.decoder_layers or text.fusion_layers

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VQAConfig:
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise VlpipeError(f"unknown VQA setting(s) {', '.join(unknown)}: valid are "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        out = cls(**data)
        if out.decoder_layers < 0 or out.k_test < 1 or out.max_answer_len < 3:
            raise VlpipeError("VQA settings: decoder_layers >= 0, k_test >= 1 and max_answer_len >= 3 are required")
        return out


# --------------------------------------------------------------------------------------------------
# Pure loss functions
# --------------------------------------------------------------------------------------------------


class Targets(NamedTuple):
    """Next-token targets of a batch of answers: position ``t`` predicts token ``t + 1``."""

    valid: torch.Tensor  # [A, L-1] bool: token t+1 is a real token (not padding)
    tokens: torch.Tensor  # [M] the target ids of the valid positions, row-major
    seq: torch.Tensor  # [M] the answer (row) each target belongs to


def next_token_targets(ids: torch.Tensor, mask: torch.Tensor) -> Targets:
    """Targets of ``[CLS] a1 .. an [SEP] [PAD]..`` rows: a1 .. an and [SEP] of each row."""
    valid = mask[:, 1:].bool()
    rows = torch.arange(ids.shape[0], device=ids.device)[:, None].expand_as(valid)
    return Targets(valid, ids[:, 1:][valid], rows[valid])


def sequence_nll(logits: torch.Tensor, tokens: torch.Tensor, seq: torch.Tensor, n_seq: int) -> torch.Tensor:
    """Summed token negative log-likelihood per sequence.

    ``logits`` [M, V] at the M target positions, ``tokens`` [M] their target ids, ``seq`` [M] the
    sequence each belongs to (0..n_seq-1). Returns [n_seq] (float32): ``-log p(answer | question)``.
    """
    nll = F.cross_entropy(logits.float(), tokens, reduction="none")
    return torch.zeros(n_seq, device=logits.device, dtype=nll.dtype).index_add(0, seq, nll)


def sequence_soft_ce(logits: torch.Tensor, soft: torch.Tensor, seq: torch.Tensor, n_seq: int) -> torch.Tensor:
    """Summed token soft cross-entropy per sequence: ``logits`` [M, V] at the M target positions,
    ``soft`` [M, V] target probabilities there (a momentum decoder's), ``seq`` [M] as in
    :func:`sequence_nll`. Returns [n_seq] (float32)."""
    ce = soft_cross_entropy(logits, soft)
    return torch.zeros(n_seq, device=logits.device, dtype=ce.dtype).index_add(0, seq, ce)


def distilled_answer_nll(logits: torch.Tensor, tokens: torch.Tensor, seq: torch.Tensor, n_seq: int,
                         soft: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """[n_seq] per-answer loss: :func:`sequence_nll`; with ``soft`` [M, V] and ``alpha > 0``, ALBEF's
    ``(1 - alpha) * nll + alpha * summed token soft-CE`` (its decoder's ``soft_labels``)."""
    nll = sequence_nll(logits, tokens, seq, n_seq)
    if soft is None or alpha <= 0:
        return nll
    return distill_mix(nll, sequence_soft_ce(logits, soft, seq, n_seq), alpha)


def weighted_answer_loss(nll: torch.Tensor, weights: torch.Tensor, n_questions: int) -> torch.Tensor:
    """ALBEF's VQA loss: ``sum_a weight_a * nll_a / n_questions`` (answers of all questions flattened)."""
    return (weights.to(nll.dtype) * nll).sum() / max(int(n_questions), 1)


# --------------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------------


def causal_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] padding mask -> [B, 1, L, L] bool: query i may attend key j <= i that is a real token."""
    length = mask.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return lower[None, None] & mask.bool()[:, None, None, :]


class AnswerDecoder(nn.Module):
    """``forward(ids [A, L], mask [A, L], context [A, Lq, W], context_mask [A, Lq]) -> hidden [A, L, W]``;
    ``lm_head(hidden) -> logits``. Parameter names: ``embeddings.*`` (BERT), ``layer.{i}.*`` (fusion
    layer names), ``lm_head.*`` (the MLM head's)."""

    def __init__(self, text: TextConfig, layers: int, tie_word_embeddings: bool = True):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertEmbeddings

        self.max_len = text.max_len
        self.embeddings = BertEmbeddings(bert_config(text))
        self.layer = nn.ModuleList([FusionLayer(text, image_width=text.width) for _ in range(layers)])
        self.lm_head = MLMHead(text.width, text.vocab_size, text.layer_norm_eps)
        init_bert_weights(self)
        self.tied = tie_word_embeddings
        if tie_word_embeddings:
            self.lm_head.tie_to(self.embeddings.word_embeddings)

    def forward(self, ids, mask, context, context_mask) -> torch.Tensor:
        if ids.shape[1] > self.max_len:
            raise VlpipeError(f"answers of {ids.shape[1]} tokens are longer than model.text.max_len {self.max_len}")
        h = self.embeddings(input_ids=ids)
        self_mask = causal_mask(mask)
        context_key_mask = padding_mask(context_mask)
        for layer in self.layer:
            h = layer(h, self_mask, context, context_key_mask)
        return h

    def logits(self, ids, mask, context, context_mask) -> torch.Tensor:
        """[A, L, V] next-token logits at every position (small batches / tests; training and
        ranking compute them only where there is a target)."""
        return self.lm_head(self(ids, mask, context, context_mask))

    def target_logits(self, ids, mask, context, context_mask) -> tuple[torch.Tensor, Targets]:
        """Next-token logits [M, V] at the M target positions of ``[CLS] answer [SEP]`` rows, and the
        targets (:func:`next_token_targets`)."""
        hidden = self(ids, mask, context, context_mask)
        t = next_token_targets(ids, mask)
        return self.lm_head(hidden[:, :-1][t.valid]), t

    def answer_nll(self, ids, mask, context, context_mask) -> torch.Tensor:
        """[A] ``-log p(answer)`` of each ``[CLS] answer [SEP]`` row given its context row."""
        logits, t = self.target_logits(ids, mask, context, context_mask)
        return sequence_nll(logits, t.tokens, t.seq, ids.shape[0])


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class RankedAnswers(NamedTuple):
    indices: torch.Tensor  # [B, k] candidate indices, best first
    log_likelihood: torch.Tensor  # [B, k] log p(candidate | image, question) (float32)
    first_token_logprob: torch.Tensor  # [B, k] log p(first token) that selected them


class VQAModel(MomentumCopies, nn.Module):
    """Image encoder + text encoder + fusion encoder (ALBEF names) + ``answer_decoder`` (+ their
    momentum copies ``*_m`` with ``distill``)."""

    MOMENTUM = ("visual_encoder", "text_encoder", "fusion_encoder", "answer_decoder")

    def __init__(self, cfg: ModelConfig, vqa: VQAConfig | None = None, distill: bool = False):
        super().__init__()
        validate(Config(model=cfg))
        self.cfg = copy.deepcopy(cfg)
        self.vqa_cfg = copy.deepcopy(vqa) if vqa is not None else VQAConfig()
        v, t = cfg.vision, cfg.text
        if t.fusion_layers < 1:
            raise VlpipeError("the VQA model needs model.text.fusion_layers >= 1")
        self.visual_encoder = VisionEncoder(v)
        self.text_encoder = TextEncoder(t)
        self.fusion_encoder = FusionEncoder(t, image_width=v.width)
        self.answer_decoder = AnswerDecoder(t, self.vqa_cfg.layers_for(t), cfg.tie_word_embeddings)
        if distill:
            add_momentum_copies(self, self.MOMENTUM)
        self.register_load_state_dict_pre_hook(fill_tied_keys)
        if distill:  # after the tied keys are filled in
            self.register_load_state_dict_pre_hook(fill_momentum_keys(self.MOMENTUM))

    def tied_keys(self) -> list[tuple[str, str]]:
        if not self.answer_decoder.tied:
            return []
        decoders = ["answer_decoder"] + (["answer_decoder_m"] if hasattr(self, "answer_decoder_m") else [])
        return [(f"{d}.lm_head.decoder.weight", f"{d}.embeddings.word_embeddings.weight") for d in decoders]

    # ---------------------------------------------------------------- building from ALBEF

    @classmethod
    def from_albef(cls, albef: nn.Module | dict[str, torch.Tensor], cfg: ModelConfig | None = None,
                   vqa: VQAConfig | None = None, distill: bool = False) -> tuple[VQAModel, LoadReport]:
        """A VQA model initialised from a pre-trained ALBEF (a model, or its state dict with ``cfg``).
        With ``distill`` the momentum copies are set to the loaded online weights (not listed in
        ``missing``)."""
        state = albef.state_dict() if isinstance(albef, nn.Module) else albef
        if cfg is None:
            if not hasattr(albef, "cfg"):
                raise VlpipeError("VQAModel.from_albef: pass cfg with a state dict")
            cfg = albef.cfg
        model = cls(cfg, vqa, distill)
        mapped, _fresh = vqa_state_from_albef(state, cfg.text, model.vqa_cfg.layers_for(cfg.text), cfg.vision.width)
        return model, without_momentum_keys(model, load_mapped(model, mapped))

    # ---------------------------------------------------------------- forward

    def encode_question(self, images: torch.Tensor, question_ids: torch.Tensor, question_mask: torch.Tensor) -> torch.Tensor:
        """Fused question states [B, Lq, W] (the decoder's cross-attention context)."""
        image_tokens = self.visual_encoder(images)
        text_tokens = self.text_encoder(question_ids, question_mask)
        return self.fusion_encoder(text_tokens, question_mask, image_tokens)

    def forward(self, images, question_ids, question_mask, answer_ids, answer_mask, answer_weights,
                answers_per_question, alpha: float | None = None, update_momentum: bool = True) -> dict[str, torch.Tensor]:
        """``{"loss"}``: the weighted conditional LM loss.

        images [B, 3, H, W]; question_ids / question_mask [B, Lq]; answer_ids / answer_mask [A, La]
        (the answers of question 0, then of question 1, ...; ``[CLS] answer [SEP]``);
        answer_weights [A]; answers_per_question [B] long, summing to A. ``alpha`` (a training
        call of a model with momentum copies, in training mode): the EMA step first (when
        ``update_momentum``), then the token-level distillation of the module doc with weight
        ``alpha``. Without ``alpha``, without momentum copies or in eval mode: the plain loss.
        """
        states = self.encode_question(images, question_ids, question_mask)
        n = answers_per_question.to(states.device)
        if int(n.sum()) != answer_ids.shape[0]:
            raise VlpipeError(f"answers_per_question sums to {int(n.sum())}, but {answer_ids.shape[0]} answers were given")
        rows = torch.repeat_interleave(torch.arange(len(n), device=states.device), n)
        logits, t = self.answer_decoder.target_logits(answer_ids, answer_mask, states[rows], question_mask[rows])
        soft, training_call, alpha = None, alpha is not None, float(alpha or 0.0)
        if training_call and self.momentum_pairs() and self.training:
            with torch.no_grad():
                if update_momentum:
                    self.momentum_update()
                if alpha > 0:
                    states_m = self.fusion_encoder_m(self.text_encoder_m(question_ids, question_mask), question_mask,
                                                     self.visual_encoder_m(images))
                    logits_m, _ = self.answer_decoder_m.target_logits(answer_ids, answer_mask, states_m[rows],
                                                                      question_mask[rows])
                    soft = F.softmax(logits_m.float(), dim=-1)
        nll = distilled_answer_nll(logits, t.tokens, t.seq, answer_ids.shape[0], soft, alpha)
        return {"loss": weighted_answer_loss(nll, answer_weights.to(nll.device), len(n))}

    @torch.no_grad()
    def rank_answers(self, images, question_ids, question_mask, answer_ids, answer_mask, k: int | None = None,
                     chunk: int = 256) -> RankedAnswers:
        """The ``k`` most likely of C candidate answers for each question (ALBEF's two-step ranking).

        ``answer_ids`` / ``answer_mask`` [C, La]: every candidate as ``[CLS] answer [SEP]``
        (:func:`tokenize_answers`). ``k`` defaults to the config's ``k_test`` (capped at C).
        ``chunk``: candidate sequences per decoder pass of the second step (bounds memory).
        """
        states = self.encode_question(images, question_ids, question_mask)
        return rank_answers(self.answer_decoder, states, question_mask, answer_ids, answer_mask,
                            k or self.vqa_cfg.k_test, chunk)


@torch.no_grad()
def rank_answers(decoder: AnswerDecoder, states: torch.Tensor, states_mask: torch.Tensor, answer_ids: torch.Tensor,
                 answer_mask: torch.Tensor, k: int, chunk: int = 256) -> RankedAnswers:
    """Two-step ranking of candidate answers given question states [B, Lq, W] (see the module doc)."""
    b, c = states.shape[0], answer_ids.shape[0]
    if c == 0:
        raise VlpipeError("rank_answers: no candidate answers")
    if answer_ids.shape[1] < 2 or not bool((answer_ids[:, 0] == answer_ids[0, 0]).all()):
        raise VlpipeError("candidate answers must all start with the same [CLS] token (use tokenize_answers)")
    k = max(1, min(int(k), c))
    answer_ids, answer_mask = answer_ids.to(states.device), answer_mask.to(states.device)
    # step 1: one decoder step from [CLS]; log-probability of every candidate's first token
    start = answer_ids[:1, :1].expand(b, 1)
    hidden = decoder(start, torch.ones_like(start), states, states_mask)
    first = F.log_softmax(decoder.lm_head(hidden[:, 0]).float(), dim=-1)[:, answer_ids[:, 1]]  # [B, C]
    top_first, top_idx = first.topk(k, dim=1)
    # step 2: full log-likelihood of the k survivors of each question
    flat = top_idx.reshape(-1)
    rows = torch.arange(b, device=states.device).repeat_interleave(k)
    ll = torch.empty(b * k, device=states.device)
    for s in range(0, b * k, chunk):
        sl = slice(s, s + chunk)
        ids, mask = answer_ids[flat[sl]], answer_mask[flat[sl]]
        ll[sl] = -decoder.answer_nll(ids, mask, states[rows[sl]], states_mask[rows[sl]])
    ll = ll.view(b, k)
    order = ll.argsort(dim=1, descending=True)
    return RankedAnswers(top_idx.gather(1, order), ll.gather(1, order), top_first.gather(1, order))


# --------------------------------------------------------------------------------------------------
# Weights from ALBEF, answers as tokens
# --------------------------------------------------------------------------------------------------

_FUSION_LAYER = re.compile(r"^fusion_encoder\.layer\.(\d+)\.(.*)$")


def vqa_state_from_albef(albef_state: dict[str, torch.Tensor], text: TextConfig, decoder_layers: int,
                         image_width: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The key map ALBEF -> VQA model. Returns (renamed tensors, decoder keys left fresh).

    ``visual_encoder.*``, ``text_encoder.*``, ``fusion_encoder.*`` keep their names; and copies:
    ``text_encoder.embeddings.*`` -> ``answer_decoder.embeddings.*``, ``fusion_encoder.layer.i.*``
    -> ``answer_decoder.layer.i.*`` (i < decoder_layers), ``mlm_head.*`` -> ``answer_decoder.lm_head.*``.
    Cross-attention key/value weights are copied only when the image width equals the text width.
    """
    out = backbone_keys(albef_state, ("visual_encoder.", "text_encoder.", "fusion_encoder."))
    fresh: list[str] = []
    for key, value in albef_state.items():
        if key.startswith("text_encoder.embeddings."):
            out["answer_decoder.embeddings." + key[len("text_encoder.embeddings."):]] = value.clone()
        elif key.startswith("mlm_head."):
            out["answer_decoder.lm_head." + key[len("mlm_head."):]] = value.clone()
        elif m := _FUSION_LAYER.match(key):
            i, rest = int(m.group(1)), m.group(2)
            if i >= decoder_layers:
                continue
            name = f"answer_decoder.layer.{i}.{rest}"
            if rest.startswith(("crossattention.self.key.", "crossattention.self.value.")) and image_width != text.width:
                fresh.append(name)
                continue
            out[name] = value.clone()
    for i in range(text.fusion_layers, decoder_layers):
        fresh.append(f"answer_decoder.layer.{i}.*")
    return out, fresh


def tokenize_answers(tokenizer, answers: list[str], max_len: int = 10, device: str | torch.device = "cpu"):
    """``[CLS] answer [SEP]`` ids and mask [A, L] (padded to the longest, truncated to ``max_len``)."""
    enc = tokenizer(list(answers), padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)
