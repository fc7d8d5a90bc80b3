"""ITM reranking of ITC candidates, and the ALBEF retrieval evaluation protocol (k_test).

ALBEF retrieves in two steps: the unimodal ITC features rank every item cheaply, then the fusion
encoder's image-text matching (ITM) head rescores only the top-k candidates of each query. This
module holds that second step, as pure functions of tensors and a model:

- **The ITM score** of an (image, text) pair is the *log-odds of a match* computed from the ITM
  head's two logits, ``logit[match] - logit[no match]`` (= ``log p / (1 - p)`` with ``p`` the
  softmax match probability). It ranks exactly as the probability the paper calls ``p_itm`` does,
  but does not saturate at 1.0 in float32 (no ties between confident candidates). Convert it with
  :func:`match_probability` for display.
- **The rerank score** (:func:`combine`) is ``itm`` (the paper's choice: the ITM score alone; the
  default), ``itm+itc`` (ITM log-odds plus the ITC cosine similarity, as LAVIS ranks) or
  ``itm+itc/temp`` (ITM log-odds plus the ITC *logit*, cosine / the model's learned temperature:
  the sum of two log-scores, so neither drowns the other; a weak ITM head cannot undo a good ITC
  order, since a cosine gap of 0.1 at temperature 0.03 weighs 3.3 units of log-odds). All come
  out of the same ITM forward passes, so an evaluation reports every one at the cost of one.
- **Batching across queries**: the (query, candidate) pairs of many queries are flattened and sent
  through the fusion encoder ``batch_size`` pairs at a time, so a query with K candidates costs
  K / batch_size forward passes, not K (nor one per query).
- **Non-candidates** of a query keep their ITC order but score below every reranked candidate
  (:meth:`Reranked.full_matrix`), so recall@k never depends on how ties were broken.

No printing here: progress goes through :class:`vlpipe.progress.Progress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vlpipe.errors import VlpipeError
from vlpipe.metrics.retrieval import recall_at_k
from vlpipe.progress import NullProgress, Progress

#: Rerank score definitions: ``itm`` = ITM log-odds alone (ALBEF paper), ``itm+itc`` = plus the ITC
#: cosine similarity (LAVIS), ``itm+itc/temp`` = plus the ITC logit (cosine / temperature).
RERANK_SCORES = ("itm", "itm+itc", "itm+itc/temp")
#: the modes that read the ITC similarity (a candidates table needs an ``itc`` column for them)
USES_ITC = ("itm+itc", "itm+itc/temp")
DEFAULT_RERANK_SCORE = "itm"

#: (image indices [N], text indices [N]) -> ITM scores [N] (float32, CPU).
PairScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------


def itm_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, 2] ITM logits (column 1 = match) -> [B] log-odds of a match."""
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


def match_probability(itm: torch.Tensor | float) -> torch.Tensor | float:
    """ITM log-odds -> softmax match probability ``p_itm`` in [0, 1]."""
    if isinstance(itm, torch.Tensor):
        return torch.sigmoid(itm)
    return float(torch.sigmoid(torch.tensor(float(itm), dtype=torch.float64)))


def check_mode(mode: str) -> str:
    if mode not in RERANK_SCORES:
        raise VlpipeError(f"--rerank-score {mode!r}: use one of {', '.join(RERANK_SCORES)}")
    return mode


def combine(itm: torch.Tensor, itc: torch.Tensor, mode: str = DEFAULT_RERANK_SCORE,
            temp: float | None = None) -> torch.Tensor:
    """The score reranked candidates are ordered by: ``itm`` (paper), ``itm + itc`` (LAVIS) or
    ``itm + itc / temp`` (``temp``: the model's ITC temperature, ``ALBEF.itc_temperature()``)."""
    check_mode(mode)
    itm = torch.as_tensor(itm, dtype=torch.float32)
    if mode == "itm":
        return itm.clone()
    itc = torch.as_tensor(itc, dtype=torch.float32)
    if mode == "itm+itc":
        return itm + itc
    if temp is None or not temp > 0:
        raise VlpipeError(f"--rerank-score {mode}: needs the model's ITC temperature (got {temp!r})")
    return itm + itc / float(temp)


@torch.no_grad()
def itm_scores(model, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
               batch_size: int = 128) -> torch.Tensor:
    """ITM log-odds of row-aligned pairs: image_tokens [N, P, Wv] (ViT output), text_tokens [N, L, Wt]
    (text-encoder output, not ids: a text is encoded once however many images it meets),
    text_mask [N, L]. Returns [N] float32 on the CPU."""
    n = image_tokens.shape[0]
    out = []
    for s in range(0, n, batch_size):
        mask = text_mask[s:s + batch_size]
        length = max(1, int(mask.sum(dim=1).max()))  # trim padding every row of the batch has
        logits = model.itm_logits(text_tokens[s:s + batch_size, :length], mask[:, :length],
                                  image_tokens[s:s + batch_size])
        out.append(itm_from_logits(logits).cpu())
    return torch.cat(out) if out else torch.zeros(0)


class PairScorer:
    """Scores (image row, text row) pairs against banks of encoded images and texts.

    ``image_tokens`` [NI, P, Wv] and ``text_tokens`` [NT, L, Wt] / ``text_mask`` [NT, L] are encoder
    outputs on the model's device; calling the scorer with index tensors gathers just the rows of
    each batch, so no [pairs, P, Wv] copy is ever built.
    """

    def __init__(self, model, image_tokens: torch.Tensor, text_tokens: torch.Tensor,
                 text_mask: torch.Tensor, batch_size: int = 128):
        self.model = model
        self.image_tokens = image_tokens
        self.text_tokens = text_tokens
        self.text_mask = text_mask
        self.batch_size = batch_size
        self.pairs_scored = 0

    @torch.no_grad()
    def __call__(self, image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        dev = self.image_tokens.device
        image_idx = torch.as_tensor(image_idx, dtype=torch.long)
        text_idx = torch.as_tensor(text_idx, dtype=torch.long)
        out = []
        for s in range(0, len(image_idx), self.batch_size):
            ii = image_idx[s:s + self.batch_size].to(dev)
            ti = text_idx[s:s + self.batch_size].to(self.text_tokens.device)
            out.append(itm_scores(self.model, self.image_tokens[ii], self.text_tokens[ti], self.text_mask[ti],
                                  batch_size=self.batch_size))
        self.pairs_scored += len(image_idx)
        return torch.cat(out) if out else torch.zeros(0)


# --------------------------------------------------------------------------------------------------
# Top-K rerank
# --------------------------------------------------------------------------------------------------


@dataclass
class Reranked:
    """The top-K candidates of Q queries in ITC order, with their ITC and ITM scores."""

    candidates: torch.Tensor  # [Q, K] long: item index of each candidate (ITC order)
    itc: torch.Tensor  # [Q, K] float: ITC similarity
    itm: torch.Tensor  # [Q, K] float: ITM log-odds
    temp: float | None = None  # the model's ITC temperature (for ``itm+itc/temp``)

    def scores(self, mode: str = DEFAULT_RERANK_SCORE) -> torch.Tensor:
        return combine(self.itm, self.itc, mode, self.temp)

    def order(self, mode: str = DEFAULT_RERANK_SCORE) -> torch.Tensor:
        """[Q, K] positions into ``candidates`` sorted by the rerank score, best first (stable: equal
        scores keep their ITC order)."""
        return torch.sort(self.scores(mode), dim=1, descending=True, stable=True).indices

    def full_matrix(self, sim: torch.Tensor, mode: str = DEFAULT_RERANK_SCORE) -> torch.Tensor:
        """[Q, N] scores over all items: candidates get their rerank score; every other item keeps its
        ITC order but scores below the query's lowest reranked candidate."""
        sim = torch.as_tensor(sim, dtype=torch.float32)
        scores = self.scores(mode)
        if scores.shape[1] == 0:
            return sim.clone()
        low = scores.min(dim=1, keepdim=True).values
        top = sim.max(dim=1, keepdim=True).values
        out = low - 1.0 - (top - sim)  # <= low - 1 everywhere, ITC order preserved
        out.scatter_(1, self.candidates, scores)
        return out


def topk_candidates(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``min(k, N)`` highest-ITC items: (indices [Q, k], similarities [Q, k])."""
    sim = torch.as_tensor(sim, dtype=torch.float32)
    k = max(0, min(int(k), sim.shape[1]))
    vals, idx = torch.topk(sim, k, dim=1, largest=True, sorted=True)
    return idx, vals


def score_flat_pairs(image_idx: torch.Tensor, text_idx: torch.Tensor, score_fn: PairScoreFn,
                     batch_size: int, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """ITM scores of N pairs, ``batch_size`` pairs per call to ``score_fn``, whatever query each
    pair belongs to. ``on_batch(end)`` is told how many pairs are done after each batch."""
    n = len(image_idx)
    out = torch.empty(n, dtype=torch.float32)
    for s in range(0, n, max(1, batch_size)):
        e = min(n, s + batch_size)
        out[s:e] = score_fn(image_idx[s:e], text_idx[s:e]).float().cpu()
        if on_batch:
            on_batch(e)
    return out


def rerank_candidates(candidates: torch.Tensor, itc: torch.Tensor, score_fn: PairScoreFn,
                      queries_are: str, batch_size: int = 128,
                      on_queries: Callable[[int], None] | None = None, temp: float | None = None) -> Reranked:
    """ITM-score every (query, candidate) pair of ``candidates`` [Q, K], batched across queries.

    ``queries_are``: ``"text"`` (query q is text row q, candidates are image rows) or ``"image"``
    (query q is image row q, candidates are text rows). ``on_queries(n)`` reports queries finished.
    ``temp``: the model's ITC temperature, kept for the ``itm+itc/temp`` score.
    """
    if queries_are not in ("text", "image"):
        raise ValueError(f"queries_are must be 'text' or 'image', not {queries_are!r}")
    candidates = torch.as_tensor(candidates, dtype=torch.long)
    q, k = candidates.shape
    qi = torch.arange(q).repeat_interleave(k)
    ci = candidates.reshape(-1)
    img, txt = (ci, qi) if queries_are == "text" else (qi, ci)
    done = [0]

    def report(end: int) -> None:
        finished = end // k if k else q
        if on_queries and finished > done[0]:
            on_queries(finished - done[0])
            done[0] = finished

    flat = score_flat_pairs(img, txt, score_fn, batch_size, report)
    if on_queries and done[0] < q:
        on_queries(q - done[0])
    return Reranked(candidates, torch.as_tensor(itc, dtype=torch.float32), flat.view(q, k), temp)


# --------------------------------------------------------------------------------------------------
# The ALBEF evaluation protocol
# --------------------------------------------------------------------------------------------------


@dataclass
class BothDirections:
    """Top-k_test reranks of every image query (TR, i2t) and every text query (IR, t2i)."""

    i2t: Reranked  # candidates are text indices
    t2i: Reranked  # candidates are image indices
    itm_pairs: int  # distinct (image, text) pairs sent through the ITM head


def rerank_both_directions(sim_i2t: torch.Tensor, k_test: int, score_fn: PairScoreFn, batch_size: int = 128,
                           progress: Progress | None = None, task: str = "rerank",
                           temp: float | None = None) -> BothDirections:
    """The k_test protocol on an [images, texts] ITC matrix.

    Each image query takes its top ``min(k_test, texts)`` texts and each text query its top
    ``min(k_test, images)`` images. A pair that is a candidate in both directions is scored once.
    Pairs go through ``score_fn(image_idx, text_idx)`` in batches that span queries; progress counts
    queries (images first, then texts). ``temp``: the model's ITC temperature (``itm+itc/temp``).
    """
    progress = progress or NullProgress()
    sim = torch.as_tensor(sim_i2t, dtype=torch.float32)
    n_img, n_txt = sim.shape
    c_i2t, s_i2t = topk_candidates(sim, k_test)
    c_t2i, s_t2i = topk_candidates(sim.T, k_test)
    ki, kt = c_i2t.shape[1], c_t2i.shape[1]
    # every pair as one int64 key image * n_txt + text, i2t pairs first, then t2i
    keys = torch.cat([
        (torch.arange(n_img)[:, None] * n_txt + c_i2t).reshape(-1),
        (c_t2i * n_txt + torch.arange(n_txt)[:, None]).reshape(-1),
    ])
    uniq, inverse = torch.unique(keys, return_inverse=True)
    # score distinct pairs in the order they first appear, so queries finish in order
    first = torch.full((len(uniq),), len(keys), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys)), reduce="amin")
    order = torch.argsort(first)
    pos = first[order]  # positions in ``keys`` of the pairs to score, increasing
    todo = uniq[order]
    n_i2t = n_img * ki

    total = n_img + n_txt
    progress.start(task, total=total, unit="queries")
    done = [0]

    def report(end: int) -> None:
        if end == 0:
            return
        p = int(pos[end - 1])
        finished = (p + 1) // ki if p < n_i2t else n_img + (p - n_i2t + 1) // kt
        if end == len(pos):
            finished = total
        if finished > done[0]:
            progress.advance(task, finished - done[0])
            done[0] = finished

    scored = score_flat_pairs(todo // n_txt, todo % n_txt, score_fn, batch_size, report)
    if done[0] < total:
        progress.advance(task, total - done[0])
    progress.finish(task)
    per_uniq = torch.empty(len(uniq), dtype=torch.float32)
    per_uniq[order] = scored
    per_key = per_uniq[inverse]
    return BothDirections(
        Reranked(c_i2t, s_i2t, per_key[:n_i2t].view(n_img, ki), temp),
        Reranked(c_t2i, s_t2i, per_key[n_i2t:].view(n_txt, kt), temp),
        itm_pairs=len(uniq),
    )


@dataclass
class EncodedSet:
    """An eval split through the unimodal encoders: token banks for ITM, features for ITC."""

    image_tokens: torch.Tensor  # [I, 1+P, Wv] on the model's device
    image_feat: torch.Tensor  # [I, D] CPU float32, L2-normalised
    text_tokens: torch.Tensor  # [T, L, Wt] on the model's device
    text_mask: torch.Tensor  # [T, L]
    text_feat: torch.Tensor  # [T, D] CPU float32


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], max_len: int, batch_size: int = 128, device: str = "cpu",
                 on_batch: Callable[[int], None] | None = None):
    """Texts -> (tokens [T, L, Wt], mask [T, L], ITC features [T, D] CPU), padded to one length L."""
    enc = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    toks, feats = [], []
    for s in range(0, len(texts), batch_size):
        t, f = model.encode_text(ids[s:s + batch_size], mask[s:s + batch_size])
        toks.append(t)
        feats.append(f.float().cpu())
        if on_batch:
            on_batch(len(t))
    return torch.cat(toks), mask, torch.cat(feats)


@torch.no_grad()
def encode_images(model, images: torch.Tensor | list[torch.Tensor], batch_size: int = 64, device: str = "cpu"):
    """Preprocessed images [N, 3, H, W] -> (tokens [N, 1+P, Wv] on device, ITC features [N, D] CPU)."""
    if isinstance(images, list):
        images = torch.stack(images)
    toks, feats = [], []
    for s in range(0, len(images), batch_size):
        t, f = model.encode_image(images[s:s + batch_size].to(device))
        toks.append(t)
        feats.append(f.float().cpu())
    return torch.cat(toks), torch.cat(feats)


@torch.no_grad()
def encode_eval_set(model, tokenizer, es, image_size: int, max_len: int, batch_size: int = 64,
                    device: str = "cpu", workers: int = 0, progress: Progress | None = None) -> EncodedSet:
    """Every image and caption of an :class:`~vlpipe.retrieval.embed.EvalSet` through the encoders
    (the shared eval image pipeline: resize, no crop)."""
    from vlpipe.retrieval.embed import image_batches

    progress = progress or NullProgress()
    task = "encode"
    progress.start(task, total=len(es) + len(es.captions), unit="items")
    toks, feats = [], []
    for images in image_batches(es.image_bytes, es.image_paths, image_size, batch_size, workers):
        t, f = model.encode_image(images.to(device))
        toks.append(t)
        feats.append(f.float().cpu())
        progress.advance(task, len(images))
    t_tok, t_mask, t_feat = encode_texts(model, tokenizer, es.captions, max_len, max(batch_size, 128), device,
                                         on_batch=lambda n: progress.advance(task, n))
    progress.finish(task)
    return EncodedSet(torch.cat(toks), torch.cat(feats), t_tok, t_mask, t_feat)


@dataclass
class RetrievalEval:
    """Recall of ITC alone and of ITC + top-k ITM rerank under each rerank score definition."""

    itc: dict[str, float]
    rerank: dict[str, dict[str, float]]  # mode -> recall dict
    images: int
    texts: int
    k_i2t: int  # texts reranked per image query (k_test clamped)
    k_t2i: int  # images reranked per text query
    itm_pairs: int
    seconds: dict[str, float] = field(default_factory=dict)


def retrieval_metrics(sim_i2t: torch.Tensor, text_to_image, both: BothDirections,
                      ks: tuple[int, ...] = (1, 5, 10)) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(ITC-only recall, {mode: reranked recall}) with TR and IR scored on their own reranks."""
    sim = torch.as_tensor(sim_i2t, dtype=torch.float32)
    itc = recall_at_k(sim, text_to_image, ks)
    reranked = {
        mode: recall_at_k(both.i2t.full_matrix(sim, mode), text_to_image, ks,
                          sim_t2i=both.t2i.full_matrix(sim.T, mode))
        for mode in RERANK_SCORES
    }
    return itc, reranked


@torch.no_grad()
def evaluate_retrieval(model, tokenizer, es, image_size: int, max_len: int, k_test: int = 128,
                       batch_size: int = 64, device: str = "cpu", workers: int = 0,
                       progress: Progress | None = None) -> RetrievalEval:
    """The ALBEF retrieval protocol on an eval split: ITC for all pairs, ITM on each query's top k_test."""
    if k_test < 1:
        raise VlpipeError(f"--k-test {k_test}: must be at least 1")
    progress = progress or NullProgress()
    model.eval()
    t0 = time.perf_counter()
    enc = encode_eval_set(model, tokenizer, es, image_size, max_len, batch_size, device, workers, progress)
    t1 = time.perf_counter()
    sim = enc.image_feat @ enc.text_feat.T
    scorer = PairScorer(model, enc.image_tokens, enc.text_tokens, enc.text_mask, batch_size=batch_size)
    both = rerank_both_directions(sim, k_test, scorer, batch_size=batch_size, progress=progress,
                                  temp=model.itc_temperature())
    t2 = time.perf_counter()
    itc, reranked = retrieval_metrics(sim, es.text_to_image, both)
    return RetrievalEval(
        itc=itc, rerank=reranked, images=len(es), texts=len(es.captions),
        k_i2t=both.i2t.candidates.shape[1], k_t2i=both.t2i.candidates.shape[1], itm_pairs=both.itm_pairs,
        seconds={"encode_itc": round(t1 - t0, 3), "itm_rerank": round(t2 - t1, 3), "total": round(t2 - t0, 3)},
    )
