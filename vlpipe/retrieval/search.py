"""Serving retrieval: open an index with its lineage, encode queries, search FAISS, ITM-rerank the top K.

An index artifact records the embeddings artifact it was built from, whose manifest records the
checkpoint and the dataset (``index -> embeddings -> checkpoint, dataset``). :meth:`Retriever.open`
follows that chain, so only the index is needed: the checkpoint encodes queries with the same model
that embedded the index, and the dataset supplies image bytes when a row has no usable image path.

Text queries search an index of image embeddings (text -> image); image queries search an index of
caption embeddings (image -> text). With ``rerank=K`` the top K hits of each query are rescored by
the ITM head (see :mod:`vlpipe.retrieval.rerank` for the score definitions), the fusion encoder
reading image tokens recomputed for just those candidates: each distinct candidate image (or
caption) is encoded once per call and shared by every query that retrieved it, and the (query,
candidate) pairs of all queries of the call go through the ITM head in common batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from vlpipe.artifacts import Artifact, read_manifest, resolve
from vlpipe.data.transforms import ImageTransform, decode
from vlpipe.errors import ArtifactError, InputError, VlpipeError
from vlpipe.progress import NullProgress, Progress
from vlpipe.retrieval.rerank import (
    DEFAULT_RERANK_SCORE,
    PairScorer,
    USES_ITC,
    check_mode,
    combine,
    encode_images,
    encode_texts,
    match_probability,
    rerank_candidates,
)

DEFAULT_RERANK_K = 16


# --------------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------------


def open_input(ref: dict[str, str], root: Path | str | None, notes: list[str] | None = None) -> Artifact | None:
    """The artifact an input reference names: its recorded path, else its name under ``root``.

    Returns None when it is gone. Appends a note when the artifact found is not the version that was
    used (its content id changed since).
    """
    kind, name = ref.get("kind"), ref.get("name", "?")
    art = None
    path = ref.get("path")
    if path and (Path(path) / "manifest.json").exists():
        art = Artifact(Path(path), read_manifest(path))
    else:
        try:
            art = resolve(name, kind, root)
        except ArtifactError:
            art = None
    if art is None:
        if notes is not None:
            notes.append(f"{kind} {name!r} recorded in the lineage is gone")
        return None
    if notes is not None and ref.get("content_id") and art.manifest.content_id != ref["content_id"]:
        notes.append(f"{kind} {name!r} changed since it was used (content id differs): results may not match")
    return art


def find_in_lineage(art: Artifact, kind: str, root: Path | str | None, notes: list[str] | None = None,
                    max_depth: int = 6) -> Artifact | None:
    """The nearest ancestor of ``art`` of ``kind`` (breadth first over manifest inputs)."""
    frontier, seen = [art], {str(art.path)}
    for _ in range(max_depth):
        nxt = []
        for a in frontier:
            for ref in a.manifest.inputs:
                if ref.get("kind") == kind:
                    found = open_input(ref, root, notes)
                    if found is not None:
                        return found
            for ref in a.manifest.inputs:
                if ref.get("kind") != kind and ref.get("path") not in seen:
                    seen.add(ref.get("path", ""))
                    up = open_input(ref, root)
                    if up is not None:
                        nxt.append(up)
        frontier = nxt
        if not frontier:
            break
    return None


# --------------------------------------------------------------------------------------------------
# Images for the rerank: from their path, else from the dataset's stored bytes
# --------------------------------------------------------------------------------------------------


class ImageSource:
    """Loads images by (image_id, image_path): the file when it exists, else the bytes the dataset
    artifact stored for that image id."""

    def __init__(self, dataset: Artifact | None = None):
        self.dataset = dataset
        self._where: dict[str, tuple[Path, int]] | None = None

    def _lookup(self) -> dict[str, tuple[Path, int]]:
        if self._where is None:
            import pyarrow.parquet as pq

            self._where = {}
            if self.dataset is not None:
                for f in sorted(self.dataset.path.glob("part-*.parquet")):
                    for i, iid in enumerate(pq.read_table(f, columns=["image_id"]).column(0).to_pylist()):
                        self._where.setdefault(iid, (f, i))
        return self._where

    def dataset_bytes(self, image_ids: Sequence[str]) -> dict[str, bytes | None]:
        import pyarrow.dataset as ds

        where = self._lookup()
        by_file: dict[Path, list[tuple[int, str]]] = {}
        for iid in image_ids:
            if iid in where:
                f, row = where[iid]
                by_file.setdefault(f, []).append((row, iid))
        out: dict[str, bytes | None] = {}
        for f, rows in by_file.items():
            t = ds.dataset(str(f), format="parquet").take(pa.array([r for r, _ in rows]), columns=["image"])
            for (_, iid), data in zip(rows, t.column("image").to_pylist()):
                out[iid] = data
        return out

    def load(self, image_ids: Sequence[str], paths: Sequence[str | None]):
        """PIL images, in order. Raises InputError naming the image when neither source has it."""
        need = [iid for iid, p in zip(image_ids, paths) if not (p and Path(p).is_file())]
        stored = self.dataset_bytes(need) if need and self.dataset is not None else {}
        images = []
        for iid, p in zip(image_ids, paths):
            if p and Path(p).is_file():
                images.append(decode(None, p))
            elif stored.get(iid) is not None:
                images.append(decode(stored[iid], None))
            else:
                where = f"path {p} does not exist" if p else "no image path"
                fix = (f"dataset {self.dataset.name} has no bytes for it" if self.dataset is not None
                       else "pass --data DATASET holding the image bytes")
                raise InputError(iid, f"cannot load the image for the rerank: {where}", fix)
        return images


# --------------------------------------------------------------------------------------------------
# The retriever
# --------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    rank: int  # 1-based
    row: int  # row of the index
    id: str
    image_id: str
    caption: str | None
    image_path: str | None
    itc: float
    itm: float | None  # ITM log-odds; None when this hit was not reranked
    score: float  # what the hit was ranked by: the rerank score if reranked, else ITC
    reranked: bool

    @property
    def p_match(self) -> float | None:
        return None if self.itm is None else match_probability(self.itm)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("rank", "id", "image_id", "caption", "image_path", "itc", "itm")}
        d["p_match"] = self.p_match
        d["score"] = self.score
        d["reranked"] = self.reranked
        return d


@dataclass
class Batch:
    """The hits of a call's queries, and the call's latency in milliseconds."""

    queries: list[str]
    hits: list[list[Hit]]
    timing_ms: dict[str, float] = field(default_factory=dict)


class Retriever:
    """An index, its id map, the checkpoint that encodes queries, and where its images live."""

    def __init__(self, index_artifact: Artifact, index, ids: pa.Table, model, cfg, tokenizer, device: str,
                 checkpoint: Artifact, dataset: Artifact | None = None, notes: list[str] | None = None):
        self.artifact = index_artifact
        self.index = index
        self.ids = ids
        self.model = model
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.device = device
        self.checkpoint = checkpoint
        self.dataset = dataset
        self.notes = list(notes or [])
        self.images = ImageSource(dataset)
        self.image_size = cfg.model.vision.image_size
        self.max_len = cfg.model.text.max_len
        self._transform = ImageTransform(self.image_size, train=False)
        cols = {c: ids.column(c).to_pylist() for c in ("id", "image_id", "caption", "image_path")
                if c in ids.column_names}
        missing = {"id", "image_id"} - set(cols)
        if missing:
            raise ArtifactError(f"{index_artifact.path}: ids.parquet lacks {sorted(missing)}; rebuild the index")
        self._id, self._image_id = cols["id"], cols["image_id"]
        self._caption = cols.get("caption") or [None] * len(self._id)
        self._path = cols.get("image_path") or [None] * len(self._id)
        has_caption = sum(c is not None for c in self._caption)
        if has_caption == 0:
            self.modality = "image"
        elif has_caption == len(self._caption):
            self.modality = "text"
        else:
            raise ArtifactError(f"{index_artifact.path}: the index mixes image and text rows; "
                                "build one index per modality")
        if index.d != cfg.model.embed_dim:
            raise VlpipeError(f"index {index_artifact.name} holds {index.d}-d vectors but checkpoint "
                              f"{checkpoint.name} embeds to {cfg.model.embed_dim}: pass the checkpoint that "
                              "embedded the index (--checkpoint)")

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, index: str | Path, root: Path | str | None = None, checkpoint: str | Path | None = None,
             data: str | Path | None = None, device: str = "cpu") -> Retriever:
        """Resolve the index, its lineage (embeddings -> checkpoint, dataset), and load the model."""
        from vlpipe.retrieval.index import load_index
        from vlpipe.train.pretrain import load_checkpoint

        notes: list[str] = []
        idx_art = resolve(index, "index", root)
        lineage_ck = find_in_lineage(idx_art, "checkpoint", root, notes)
        if checkpoint is not None:
            ck = resolve(checkpoint, "checkpoint", root)
            if lineage_ck is not None and lineage_ck.manifest.content_id != ck.manifest.content_id:
                notes.append(f"index {idx_art.name} was embedded by checkpoint {lineage_ck.name}, queries are "
                             f"encoded by {ck.name}: ITC scores compare two different models")
        elif lineage_ck is not None:
            ck = lineage_ck
        else:
            raise ArtifactError(f"{idx_art.name}: the index records no checkpoint in its lineage "
                                "(pass --checkpoint, the one that embedded it)")
        ds = resolve(data, "dataset", root) if data is not None else find_in_lineage(idx_art, "dataset", root, notes)
        faiss_index, ids = load_index(idx_art.path)
        _apply_search_params(faiss_index, idx_art)
        model, cfg, tokenizer = load_checkpoint(ck.path, device)
        return cls(idx_art, faiss_index, ids, model, cfg, tokenizer, device, ck, ds, notes)

    # ---------------------------------------------------------------- steps

    def row(self, r: int) -> dict[str, Any]:
        return {"id": self._id[r], "image_id": self._image_id[r], "caption": self._caption[r],
                "image_path": self._path[r]}

    def search_vectors(self, feats: torch.Tensor | np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-n: (ITC scores [Q, n], index rows [Q, n]; -1 where the index had no more hits)."""
        q = np.ascontiguousarray(np.asarray(feats, dtype=np.float32))
        n = max(1, min(int(n), len(self)))
        return self.index.search(q, n)

    def preprocess(self, images) -> torch.Tensor:
        """PIL images -> [N, 3, S, S] through the shared eval transform (resize, no crop)."""
        return torch.stack([self._transform(im)[0] for im in images])

    def load_query_images(self, paths: Sequence[str | Path]) -> torch.Tensor:
        out = []
        for p in paths:
            if not Path(p).is_file():
                raise InputError(p, "image file not found", "pass a path to an image file")
            try:
                out.append(decode(None, str(p)))
            except Exception as e:  # noqa: BLE001 - PIL raises many types
                raise InputError(p, f"cannot be read as an image ({type(e).__name__})") from None
        return self.preprocess(out)

    # ---------------------------------------------------------------- queries

    @torch.no_grad()
    def search_texts(self, queries: Sequence[str], k: int = 10, rerank: int = DEFAULT_RERANK_K,
                     mode: str = DEFAULT_RERANK_SCORE, batch_size: int = 128) -> Batch:
        """Text -> image: encode, search the top max(k, rerank), ITM-rerank the top ``rerank``, keep k."""
        if self.modality != "image":
            raise VlpipeError(f"index {self.artifact.name} holds caption embeddings: query it with an image "
                              "(--image), or build an index of image embeddings for text queries")
        self._check(k, rerank, mode)
        queries = list(queries)
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        q_tok, q_mask, q_feat = encode_texts(self.model, self.tokenizer, queries, self.max_len, batch_size, self.device)
        timing["encode_ms"] = _ms(t0)
        scores, rows = self._search(q_feat, max(k, rerank), timing)
        reranked = None
        if rerank > 0:
            t0 = time.perf_counter()
            cand = rows[:, :rerank]
            bank_rows, pos = _bank(cand)
            t1 = time.perf_counter()
            pixels = self.preprocess(self.images.load([self._image_id[r] for r in bank_rows],
                                                      [self._path[r] for r in bank_rows]))
            timing["load_ms"] = _ms(t1)  # read + decode + resize
            t1 = time.perf_counter()
            i_tok, _ = encode_images(self.model, pixels, batch_size, self.device)
            timing["image_encode_ms"] = _ms(t1)
            t1 = time.perf_counter()
            scorer = PairScorer(self.model, i_tok, q_tok, q_mask, batch_size)
            reranked = rerank_candidates(pos, scores[:, :rerank], scorer, "text", batch_size,
                                         temp=self.model.itc_temperature())
            timing["itm_ms"] = _ms(t1)
            timing["rerank_ms"] = _ms(t0)
        return self._batch(queries, scores, rows, reranked, rerank, k, mode, timing)

    @torch.no_grad()
    def search_images(self, images: Sequence[str | Path], k: int = 10, rerank: int = DEFAULT_RERANK_K,
                      mode: str = DEFAULT_RERANK_SCORE, batch_size: int = 128) -> Batch:
        """Image -> text over an index of caption embeddings, with ITM rerank of the top captions."""
        if self.modality != "text":
            raise VlpipeError(f"index {self.artifact.name} holds image embeddings: query it with text "
                              "(--query), or build an index of caption embeddings for image queries")
        self._check(k, rerank, mode)
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        i_tok, i_feat = encode_images(self.model, self.load_query_images(images), batch_size, self.device)
        timing["encode_ms"] = _ms(t0)
        scores, rows = self._search(i_feat, max(k, rerank), timing)
        reranked = None
        if rerank > 0:
            t0 = time.perf_counter()
            cand = rows[:, :rerank]
            bank_rows, pos = _bank(cand)
            t_tok, t_mask, _ = encode_texts(self.model, self.tokenizer, [self._caption[r] for r in bank_rows],
                                            self.max_len, batch_size, self.device)
            timing["caption_encode_ms"] = _ms(t0)
            t1 = time.perf_counter()
            scorer = PairScorer(self.model, i_tok, t_tok, t_mask, batch_size)
            reranked = rerank_candidates(pos, scores[:, :rerank], scorer, "image", batch_size,
                                         temp=self.model.itc_temperature())
            timing["itm_ms"] = _ms(t1)
            timing["rerank_ms"] = _ms(t0)
        return self._batch([str(p) for p in images], scores, rows, reranked, rerank, k, mode, timing)

    def _batch(self, queries, scores, rows, reranked, rerank, k, mode, timing) -> Batch:
        hits = self._assemble(scores, rows, reranked, rerank, k, mode)
        timing["total_ms"] = sum(v for key, v in timing.items() if key in ("encode_ms", "search_ms", "rerank_ms"))
        return Batch(queries, hits, timing)

    def search_many(self, queries: Sequence[str], k: int = 10, rerank: int = DEFAULT_RERANK_K,
                    mode: str = DEFAULT_RERANK_SCORE, batch_size: int = 128, queries_per_call: int = 32,
                    progress: Progress | None = None, task: str = "queries") -> Iterator[Batch]:
        """Text queries in calls of ``queries_per_call`` (each call batches its rerank across queries)."""
        progress = progress or NullProgress()
        progress.start(task, total=len(queries), unit="queries")
        for s in range(0, len(queries), queries_per_call):
            b = self.search_texts(queries[s:s + queries_per_call], k, rerank, mode, batch_size)
            progress.advance(task, len(b.queries))
            yield b
        progress.finish(task)

    # ---------------------------------------------------------------- helpers

    def _check(self, k: int, rerank: int, mode: str) -> None:
        if k < 1:
            raise VlpipeError(f"--k {k}: must be at least 1")
        if rerank < 0:
            raise VlpipeError(f"--rerank {rerank}: must be 0 (off) or a number of candidates")
        check_mode(mode)

    def _search(self, feats, n, timing) -> tuple[torch.Tensor, np.ndarray]:
        t0 = time.perf_counter()
        scores, rows = self.search_vectors(feats, n)
        timing["search_ms"] = _ms(t0)
        return torch.from_numpy(np.asarray(scores, dtype=np.float32)), rows

    def _assemble(self, scores: torch.Tensor, rows: np.ndarray, reranked, rerank: int, k: int,
                  mode: str) -> list[list[Hit]]:
        """Reranked candidates by their rerank score, then the rest in ITC order; the first k."""
        out = []
        final = reranked.scores(mode) if reranked is not None else None
        for q in range(rows.shape[0]):
            order: list[tuple[int, float | None, float]] = []  # (position, itm, score)
            n_rr = min(rerank, rows.shape[1]) if reranked is not None else 0
            if n_rr:
                valid = [p for p in range(n_rr) if rows[q, p] >= 0]
                valid.sort(key=lambda p: -float(final[q, p]))  # stable: ties keep ITC order
                order += [(p, float(reranked.itm[q, p]), float(final[q, p])) for p in valid]
            order += [(p, None, float(scores[q, p])) for p in range(n_rr, rows.shape[1]) if rows[q, p] >= 0]
            hits = []
            for rank, (p, itm, score) in enumerate(order[:k], start=1):
                r = int(rows[q, p])
                hits.append(Hit(rank, r, self._id[r], self._image_id[r], self._caption[r], self._path[r],
                                float(scores[q, p]), itm, score, itm is not None))
            out.append(hits)
        return out


def _apply_search_params(index, art: Artifact) -> None:
    """Re-apply the nprobe / efSearch the index build chose (recorded in its manifest stats)."""
    from vlpipe.retrieval.index import Layout, set_search_params

    st = art.manifest.stats or {}
    nprobe, ef = int(st.get("nprobe") or 0), int(st.get("ef_search") or 0)
    if nprobe or ef:
        set_search_params(index, Layout(factory="", reason="", nprobe=nprobe, ef_search=ef))


def _bank(cand: np.ndarray) -> tuple[list[int], torch.Tensor]:
    """Distinct index rows among the candidates [Q, K] and each candidate's position among them
    (-1 rows, i.e. no hit, point at position 0 and are dropped later)."""
    valid = cand[cand >= 0]
    bank_rows, inverse = np.unique(valid, return_inverse=True)
    pos = np.zeros(cand.shape, dtype=np.int64)
    pos[cand >= 0] = inverse.reshape(-1)
    if len(bank_rows) == 0:
        raise VlpipeError("the index returned no candidates to rerank")
    return [int(r) for r in bank_rows], torch.from_numpy(pos)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def batch_rows(batch: Batch, offset: int = 0) -> list[dict[str, Any]]:
    """One flat record per (query, hit) for a results table."""
    rows = []
    for qi, (query, hits) in enumerate(zip(batch.queries, batch.hits)):
        for h in hits:
            rows.append({"query_index": offset + qi, "query": query, **h.to_dict()})
    return rows


RESULTS_SCHEMA = pa.schema([
    pa.field("query_index", pa.int64()),
    pa.field("query", pa.string()),
    pa.field("rank", pa.int32()),
    pa.field("id", pa.string()),
    pa.field("image_id", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("image_path", pa.string()),
    pa.field("itc", pa.float32()),
    pa.field("itm", pa.float32()),
    pa.field("p_match", pa.float32()),
    pa.field("score", pa.float32()),
    pa.field("reranked", pa.bool_()),
])


# --------------------------------------------------------------------------------------------------
# Rerank of a candidates table (the `vlpipe rerank` stage)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def rerank_table(table: pa.Table, model, cfg, tokenizer, images: ImageSource, mode: str = DEFAULT_RERANK_SCORE,
                 batch_size: int = 128, device: str = "cpu", queries_per_call: int = 64,
                 progress: Progress | None = None, task: str = "rerank") -> pa.Table:
    """ITM-rescore a candidates table and rank each query's candidates by the rerank score.

    Input columns: ``query`` (text), ``image_id``; optional ``itc`` (needed for ``itm+itc`` and ``itm+itc/temp``) and
    ``image_path`` (else the bytes come from ``images``' dataset). Every other column is kept.
    Output adds ``itm`` (log-odds), ``p_match``, ``score``, ``rank`` (1-based within the query, by
    score) and, with ``itc``, ``itc_rank``; rows come grouped by query in first-appearance order.
    """
    check_mode(mode)
    progress = progress or NullProgress()
    names = table.column_names
    for need in ("query", "image_id"):
        if need not in names:
            raise InputError("--candidates", f"no {need!r} column (has {', '.join(names)})",
                             "the table needs query, image_id and optionally itc, image_path")
    if mode in USES_ITC and "itc" not in names:
        raise InputError("--candidates", f"--rerank-score {mode} needs an 'itc' column", "or use --rerank-score itm")
    queries = table.column("query").to_pylist()
    image_ids = table.column("image_id").to_pylist()
    paths = table.column("image_path").to_pylist() if "image_path" in names else [None] * len(queries)
    itc = (np.array(table.column("itc").to_numpy(zero_copy_only=False), dtype=np.float32)
           if "itc" in names else np.zeros(len(queries), np.float32))
    if any(q is None for q in queries) or any(i is None for i in image_ids):
        raise InputError("--candidates", "null query or image_id values", "drop those rows")
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q, []).append(i)
    distinct = list(groups)
    itm = np.zeros(len(queries), np.float32)
    progress.start(task, total=len(distinct), unit="queries")
    size, max_len = cfg.model.vision.image_size, cfg.model.text.max_len
    transform = ImageTransform(size, train=False)
    for s in range(0, len(distinct), queries_per_call):
        chunk = distinct[s:s + queries_per_call]
        rows = [r for q in chunk for r in groups[q]]
        q_tok, q_mask, _ = encode_texts(model, tokenizer, chunk, max_len, batch_size, device)
        img_keys = list(dict.fromkeys(image_ids[r] for r in rows))
        first_path = {}
        for r in rows:
            first_path.setdefault(image_ids[r], paths[r])
        pil = images.load(img_keys, [first_path[i] for i in img_keys])
        i_tok, _ = encode_images(model, torch.stack([transform(im)[0] for im in pil]), batch_size, device)
        img_pos = {iid: n for n, iid in enumerate(img_keys)}
        q_pos = {q: n for n, q in enumerate(chunk)}
        scorer = PairScorer(model, i_tok, q_tok, q_mask, batch_size)
        img_idx = torch.tensor([img_pos[image_ids[r]] for r in rows])
        txt_idx = torch.tensor([q_pos[queries[r]] for r in rows])
        itm[rows] = scorer(img_idx, txt_idx).numpy()
        progress.advance(task, len(chunk))
    progress.finish(task)
    score = combine(torch.from_numpy(itm), torch.from_numpy(itc), mode, model.itc_temperature()).numpy()
    order, rank, itc_rank = [], np.zeros(len(queries), np.int32), np.zeros(len(queries), np.int32)
    for q in distinct:
        rows = np.asarray(groups[q])
        by_score = rows[np.argsort(-score[rows], kind="stable")]
        rank[by_score] = np.arange(1, len(rows) + 1)
        itc_rank[rows[np.argsort(-itc[rows], kind="stable")]] = np.arange(1, len(rows) + 1)
        order.extend(by_score.tolist())
    out = table
    if "rank" in out.column_names:  # e.g. the ITC ranks of a `vlpipe retrieve` results table
        out = out.rename_columns(["input_rank" if c == "rank" else c for c in out.column_names])
    for name, values, typ in (("itm", itm, pa.float32()), ("p_match", torch.sigmoid(torch.from_numpy(itm)).numpy(), pa.float32()),
                              ("score", score, pa.float32()), ("rank", rank, pa.int32())):
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, pa.array(values, type=typ))
    if "itc" in names:
        if "itc_rank" in out.column_names:
            out = out.drop_columns(["itc_rank"])
        out = out.append_column("itc_rank", pa.array(itc_rank, type=pa.int32()))
    return out.take(pa.array(order, type=pa.int64()))
