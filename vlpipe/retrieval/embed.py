"""ITC-space embeddings of a dataset split: unique images and their captions.

The same image pipeline as training (``ImageTransform`` without augmentation: resize, no crop),
decoded in DataLoader workers. Features are the L2-normalised projections the ITC loss aligns.

Two ways in: :func:`load_eval_set` + :func:`embed_images` / :func:`embed_texts` for a small split
held in memory (zero-shot checks), and :func:`plan_embeddings` + :func:`embed_dataset` for
`vlpipe embed`, which streams a dataset of any size into ``image-NNNNN`` / ``text-NNNNN`` Parquet
shards (see :mod:`vlpipe.retrieval.schema`). :func:`iter_vectors`, :func:`take_vectors` and
:func:`read_ids` read such shards back.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from vlpipe.data.transforms import ImageTransform, decode
from vlpipe.errors import InputError, VlpipeError
from vlpipe.progress import NullProgress, Progress
from vlpipe.retrieval.schema import MODALITIES, embeddings_schema, shard_glob


@dataclass
class EvalSet:
    """A split as retrieval sees it: unique images, all captions, caption -> image index."""

    image_ids: list[str]
    image_bytes: list[bytes | None]
    image_paths: list[str | None]
    captions: list[str]
    caption_ids: list[str]
    text_to_image: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)


def load_eval_set(files: list[Path], split: str | None = "test", max_images: int | None = None) -> EvalSet:
    """Read a split of a dataset's shards (first ``max_images`` unique images, in file order)."""
    d = ds.dataset([str(f) for f in files], format="parquet")
    flt = ds.field("split") == split if split else None
    t = d.to_table(columns=["image_id", "caption_id", "caption", "image", "image_path"], filter=flt)
    if t.num_rows == 0:
        raise InputError(files[0].parent if files else "dataset", f"no rows in split {split!r}",
                         "pick a split the dataset has (see `vlpipe artifacts show`)")
    index: dict[str, int] = {}
    ids, data, paths, caps, cap_ids, t2i = [], [], [], [], [], []
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    for iid, cid, cap, img, path in zip(cols["image_id"], cols["caption_id"], cols["caption"], cols["image"], cols["image_path"]):
        if iid not in index:
            if max_images is not None and len(index) >= max_images:
                continue
            index[iid] = len(ids)
            ids.append(iid)
            data.append(img)
            paths.append(path)
        caps.append(cap)
        cap_ids.append(cid)
        t2i.append(index[iid])
    return EvalSet(ids, data, paths, caps, cap_ids, np.asarray(t2i, dtype=np.int64))


class _Images(torch.utils.data.Dataset):
    def __init__(self, data: list[bytes | None], paths: list[str | None], size: int):
        self.data, self.paths = data, paths
        self.transform = ImageTransform(size, train=False)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(decode(self.data[i], self.paths[i]))[0]


def image_batches(data, paths, size: int, batch_size: int, workers: int = 0):
    dl = torch.utils.data.DataLoader(
        _Images(data, paths, size), batch_size=batch_size, shuffle=False,
        num_workers=min(workers, max(0, len(data) // batch_size)),
    )
    yield from dl


@torch.no_grad()
def embed_images(model, data, paths, size: int, batch_size: int = 64, device: str = "cpu",
                 workers: int = 0, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    feats = []
    for images in image_batches(data, paths, size, batch_size, workers):
        _, f = model.encode_image(images.to(device))
        feats.append(f.float().cpu())
        if on_batch:
            on_batch(len(images))
    return torch.cat(feats)


@torch.no_grad()
def embed_texts(model, tokenizer, captions: list[str], batch_size: int = 256, device: str = "cpu",
                max_len: int = 40, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    feats = []
    for i in range(0, len(captions), batch_size):
        enc = tokenizer(captions[i:i + batch_size], padding="longest", truncation=True,
                        max_length=max_len, return_tensors="pt")
        _, f = model.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        feats.append(f.float().cpu())
        if on_batch:
            on_batch(len(captions[i:i + batch_size]))
    return torch.cat(feats)


# ---------------------------------------------------------------------------------------------
# Streaming embeddings of a whole dataset (`vlpipe embed`)
#
# A cheap first pass reads only the small columns (ids, captions, split, path) and plans the
# output: unique images in file order, each with the (file, row group, row) holding its bytes,
# and every caption. The plan is cut into chunks of ``shard_rows`` items; a chunk becomes one
# output shard. Image bytes are read per row group, by DataLoader workers, only while the chunk
# that needs them is being embedded.
# ---------------------------------------------------------------------------------------------

_PLAN_COLUMNS = ["image_id", "caption_id", "caption", "split", "image_path"]


def shard_file(modality: str, index: int) -> str:
    """``image-00003.parquet``: the name of an embeddings shard."""
    return f"{modality}-{index:05d}.parquet"


@dataclass(frozen=True)
class Chunk:
    """Items ``[start, stop)`` of one modality of a plan: they make output shard ``index``."""

    modality: str
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return shard_file(self.modality, self.index)

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class EmbedPlan:
    """Unique images (with where their bytes live) and all captions of the chosen splits.

    ``images`` rows: id (= image_id), image_id, image_path, split, file, row_group, row.
    ``texts`` rows: id (= caption_id), image_id, caption, image_path, split.
    """

    files: list[str]
    splits: list[str] | None
    image_id: list[str]
    image_path: list[str | None]
    image_split: list[str]
    image_loc: np.ndarray  # [n_images, 3] int64: file index, row group, row within the row group
    caption_id: list[str]
    caption: list[str]
    caption_image: list[str]
    caption_path: list[str | None]
    caption_split: list[str]

    def rows(self, modality: str) -> int:
        return len(self.image_id) if modality == "image" else len(self.caption_id)

    def chunks(self, modality: str, shard_rows: int) -> list[Chunk]:
        n = self.rows(modality)
        return [Chunk(modality, i, s, min(n, s + shard_rows)) for i, s in enumerate(range(0, n, shard_rows))]

    def meta_table(self, chunk: Chunk) -> pa.Table:
        """The identifying columns of a chunk's rows (the embeddings schema minus ``vector``)."""
        s = slice(chunk.start, chunk.stop)
        if chunk.modality == "image":
            cols = [self.image_id[s], self.image_id[s], [None] * chunk.rows, self.image_path[s], self.image_split[s]]
        else:
            cols = [self.caption_id[s], self.caption_image[s], self.caption[s], self.caption_path[s],
                    self.caption_split[s]]
        names = ["id", "image_id", "caption", "image_path", "split"]
        return pa.table([pa.array(c, type=pa.string()) for c in cols], names=names)


def plan_embeddings(files: list[Path | str], splits: list[str] | None = None) -> EmbedPlan:
    """Read a dataset's small columns (never the image bytes) and plan what to embed.

    ``splits=None`` keeps every split. Images are unique by ``image_id`` (first occurrence wins for
    its path and split); captions are unique by ``caption_id``. Order is file, row group, row.
    """
    files = [str(f) for f in sorted(map(str, files))]
    if not files:
        raise VlpipeError("the dataset has no part-*.parquet shards")
    wanted = set(splits) if splits else None
    seen_images: set[str] = set()
    seen_captions: set[str] = set()
    img_id, img_path, img_split, loc = [], [], [], []
    cap_id, cap, cap_img, cap_path, cap_split = [], [], [], [], []
    for fi, f in enumerate(files):
        pf = pq.ParquetFile(f)
        missing = set(_PLAN_COLUMNS) - set(pf.schema_arrow.names)
        if missing:
            raise InputError(f, f"not a dataset shard (no column {', '.join(sorted(missing))})")
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg, columns=_PLAN_COLUMNS)
            cols = [t.column(c).to_pylist() for c in _PLAN_COLUMNS]
            for row, (iid, cid, text, split, path) in enumerate(zip(*cols)):
                if wanted is not None and split not in wanted:
                    continue
                if iid not in seen_images:
                    seen_images.add(iid)
                    img_id.append(iid)
                    img_path.append(path)
                    img_split.append(split)
                    loc.append((fi, rg, row))
                if cid not in seen_captions:
                    seen_captions.add(cid)
                    cap_id.append(cid)
                    cap.append(text)
                    cap_img.append(iid)
                    cap_path.append(path)
                    cap_split.append(split)
    if not img_id:
        where = Path(files[0]).parent
        raise InputError(where, f"no rows in split(s) {', '.join(splits) if splits else '(any)'}",
                         "pick a split the dataset has, or --split all (see `vlpipe artifacts show`)")
    return EmbedPlan(files, list(splits) if splits else None, img_id, img_path, img_split,
                     np.asarray(loc, dtype=np.int64).reshape(-1, 3), cap_id, cap, cap_img, cap_path, cap_split)


class _ChunkImages(torch.utils.data.IterableDataset):
    """Decodes one chunk's images. Each worker takes a contiguous slice of the chunk and reads the
    ``image`` column of one row group at a time, so only that much encoded data is in memory.
    Yields ``(position in chunk, image tensor, error text)``; a failed decode yields a zero image
    and the error, which the main process reports (exceptions raised in workers lose their type).
    """

    def __init__(self, files: list[str], loc: np.ndarray, paths: list[str | None], size: int):
        self.files, self.loc, self.paths, self.size = files, loc, paths, size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        n = len(self.loc)
        lo, hi = n * w // nw, n * (w + 1) // nw
        transform = ImageTransform(self.size, train=False)
        readers: dict[int, pq.ParquetFile] = {}
        pos = lo
        while pos < hi:
            fi, rg = int(self.loc[pos, 0]), int(self.loc[pos, 1])
            end = pos
            while end < hi and self.loc[end, 0] == fi and self.loc[end, 1] == rg:
                end += 1
            if fi not in readers:
                readers[fi] = pq.ParquetFile(self.files[fi])
            col = readers[fi].read_row_group(rg, columns=["image"]).column(0)
            for i in range(pos, end):
                try:
                    img = transform(decode(col[int(self.loc[i, 2])].as_py(), self.paths[i]))[0]
                    err = ""
                except Exception as e:  # noqa: BLE001 - PIL and OS errors of many types
                    img = torch.zeros(3, self.size, self.size)
                    err = f"{type(e).__name__}: {e}"
                yield i, img, err
            del col
            pos = end


def _autocast(device: str):
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def encode_images(model, images: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """ITC image features (float32, L2-normalised) of a batch; bf16 autocast on CUDA."""
    with torch.inference_mode(), _autocast(device):
        _, f = model.encode_image(images.to(device, non_blocking=True))
    return torch.nn.functional.normalize(f.float(), dim=-1).cpu()


def encode_texts(model, tokenizer, captions: list[str], device: str = "cpu", max_len: int = 40) -> torch.Tensor:
    """ITC text features (float32, L2-normalised) of a batch of captions."""
    enc = tokenizer(captions, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    with torch.inference_mode(), _autocast(device):
        _, f = model.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
    return torch.nn.functional.normalize(f.float(), dim=-1).cpu()


def _embed_image_chunk(model, plan: EmbedPlan, chunk: Chunk, size: int, batch_size: int, device: str,
                       workers: int, on_batch: Callable[[int], None]) -> np.ndarray:
    s = slice(chunk.start, chunk.stop)
    data = _ChunkImages(plan.files, plan.image_loc[s], plan.image_path[s], size)
    nw = max(0, min(workers, chunk.rows // max(1, batch_size)))
    dl = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=nw,
                                     pin_memory=str(device).startswith("cuda"))
    out: np.ndarray | None = None
    for pos, images, errs in dl:
        bad = [e for e in errs if e]
        if bad:
            i = int(pos[[bool(e) for e in errs].index(True)])
            raise VlpipeError(f"image {plan.image_id[chunk.start + i]!r} "
                              f"({plan.image_path[chunk.start + i] or 'stored bytes'}): cannot decode ({bad[0]})")
        f = encode_images(model, images, device).numpy()
        if out is None:
            out = np.empty((chunk.rows, f.shape[1]), dtype=np.float32)
        out[pos.numpy()] = f
        on_batch(len(images))
    assert out is not None
    return out


def _embed_text_chunk(model, tokenizer, plan: EmbedPlan, chunk: Chunk, batch_size: int, device: str,
                      max_len: int, on_batch: Callable[[int], None]) -> np.ndarray:
    feats = []
    for i in range(chunk.start, chunk.stop, batch_size):
        caps = plan.caption[i:min(chunk.stop, i + batch_size)]
        feats.append(encode_texts(model, tokenizer, caps, device, max_len).numpy())
        on_batch(len(caps))
    return np.concatenate(feats)


def embeddings_table(meta: pa.Table, vectors: np.ndarray) -> pa.Table:
    """Identifying columns + float32 vectors -> a table in the embeddings schema (float16 vectors)."""
    n, dim = vectors.shape
    if meta.num_rows != n:
        raise VlpipeError(f"{meta.num_rows} rows of ids for {n} vectors")
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float16).reshape(-1), type=pa.float16())
    vec = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.Table.from_arrays([*meta.columns, vec], schema=embeddings_schema(dim))


def write_embeddings_shard(path: Path, meta: pa.Table, vectors: np.ndarray) -> None:
    """Write one shard under a temporary name and rename it: a shard that exists is complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(embeddings_table(meta, vectors), tmp, compression="zstd")
    os.replace(tmp, path)


@dataclass
class EmbedSettings:
    modalities: tuple[str, ...] = ("image", "text")
    shard_rows: int = 50_000
    batch_size: int = 64
    workers: int = 2
    device: str = "cpu"
    image_size: int = 256
    max_len: int = 40


def embed_dataset(model, tokenizer, plan: EmbedPlan, out_dir: Path | str, settings: EmbedSettings, *,
                  rank: int = 0, world: int = 1, on_shard: Callable[[Chunk], None] | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Embed this rank's chunks (every ``world``-th, starting at ``rank``) into ``out_dir`` shards.

    Shards already present in ``out_dir`` are complete (written by rename) and are skipped, which
    is what makes a resumed run equal a clean one. ``on_shard`` runs after each written shard.
    Returns counts of the items embedded by this call and the seconds it took.
    """
    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    if settings.shard_rows < 1 or settings.batch_size < 1:
        raise VlpipeError("--shard-rows and --batch-size must be at least 1")
    model.eval()
    t0 = time.perf_counter()
    done = {"image": 0, "text": 0}
    all_chunks = [c for m in settings.modalities for c in plan.chunks(m, settings.shard_rows)]
    mine = [c for g, c in enumerate(all_chunks) if g % world == rank]
    todo = [c for c in mine if not (out_dir / c.name).exists()]
    skipped = len(mine) - len(todo)
    if skipped:
        progress.note(f"resuming: {skipped} of {len(mine)} shards already written")
    for m in settings.modalities:
        task = f"embed {m}s"
        total = sum(c.rows for c in todo if c.modality == m)
        if not total:
            continue
        progress.start(task, total=total, unit=f"{m}s")
        for c in (c for c in todo if c.modality == m):
            def tick(n: int, task=task) -> None:
                progress.advance(task, n)

            if m == "image":
                vec = _embed_image_chunk(model, plan, c, settings.image_size, settings.batch_size,
                                         settings.device, settings.workers, tick)
            else:
                vec = _embed_text_chunk(model, tokenizer, plan, c, settings.batch_size * 4,
                                        settings.device, settings.max_len, tick)
            write_embeddings_shard(out_dir / c.name, plan.meta_table(c), vec)
            done[m] += c.rows
            if on_shard is not None:
                on_shard(c)
        progress.finish(task)
    return {"embedded": done, "skipped_shards": skipped, "seconds": time.perf_counter() - t0}


# -- reading embeddings artifacts (`vlpipe index build`, retrieval) ------------------------------
def embedding_files(folder: Path | str, modality: str) -> list[Path]:
    """The ``<modality>-NNNNN.parquet`` shards of an embeddings artifact folder, in order."""
    if modality not in MODALITIES:
        raise VlpipeError(f"modality {modality!r}: use {' or '.join(MODALITIES)}")
    return sorted(Path(folder).glob(shard_glob(modality)))


def vector_dim(files: list[Path]) -> int:
    t = pq.read_schema(files[0]).field("vector").type
    return t.list_size


def count_rows(files: list[Path]) -> int:
    return sum(pq.read_metadata(f).num_rows for f in files)


def vectors_to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_list<float16>[dim]`` column -> float32 array [rows, dim]."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    dim = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32).reshape(-1, dim)


def iter_vectors(files: list[Path], batch_rows: int = 65_536) -> Iterator[np.ndarray]:
    """Stream the vectors of embeddings shards as float32 batches, in row order."""
    for f in files:
        for b in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=["vector"]):
            yield vectors_to_numpy(b.column(0))


def take_vectors(files: list[Path], rows: np.ndarray, batch_rows: int = 65_536) -> np.ndarray:
    """The vectors at global row numbers ``rows`` (any order, no repeats needed), in that order,
    read in one streaming pass (only the selected rows are kept)."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    out: np.ndarray | None = None
    offset = 0
    for batch in iter_vectors(files, batch_rows):
        lo = np.searchsorted(sorted_rows, offset)
        hi = np.searchsorted(sorted_rows, offset + len(batch))
        if out is None:
            out = np.empty((len(rows), batch.shape[1]), dtype=np.float32)
        if hi > lo:
            out[order[lo:hi]] = batch[sorted_rows[lo:hi] - offset]
        offset += len(batch)
    if out is None or (len(rows) and sorted_rows[-1] >= offset):
        raise VlpipeError(f"row {int(sorted_rows[-1]) if len(rows) else 0} is past the {offset} stored vectors")
    return out


def read_ids(files: list[Path]) -> pa.Table:
    """Every row's identifying columns (all but ``vector``), in row order."""
    cols = ["id", "image_id", "caption", "image_path", "split"]
    if not files:
        raise VlpipeError("no embeddings shards to read")
    return pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
