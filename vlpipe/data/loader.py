"""Streaming training batches from dataset shards, deterministic and resumable.

The unit of reading is a Parquet row group (a "block"). For each epoch the blocks are put in an
order drawn from ``(seed, epoch)``, grouped into windows of ``shuffle_blocks`` blocks, and the rows
of each window are shuffled: one global sequence of samples, never held in memory at once (so
shards larger than memory stream fine). The sequence is cut into global batches; rank ``r`` of
``world`` takes global batches ``r, r + world, ...`` and, inside a rank, DataLoader worker ``w`` of
``W`` builds local batches ``start + w, start + w + W, ...``. Because the DataLoader hands out its
workers' batches round-robin, the stream is the same for any number of workers, and resuming at
local batch ``start`` reproduces the rest of the epoch exactly. Per-sample augmentation draws from
an RNG keyed by the sample's position, not from the worker.

:class:`ShardBatches` is that stream for any table; what a batch holds is the job of its collate:
:class:`ImageTextCollate` for one image and one text per row (captions, VE hypotheses, referring
expressions, ...) plus task targets, :class:`ImagePairTextCollate` for two images and one text
(NLVR2), :class:`QuestionAnswersCollate` for an image, a question and its weighted answers (VQA).
:class:`CaptionBatches` is the caption-dataset stream pre-training reads.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlpipe.data.transforms import ImageTransform, decode, flip_caption
from vlpipe.errors import InputError

READ_COLUMNS = ["image_id", "caption", "image", "image_path"]  # what caption batches read


def image_key(image_id: str) -> int:
    """A stable signed 63-bit integer for an image id (equal ids <=> equal keys, in practice)."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little") >> 1


_ARTICLES = ("a", "an", "the")


def text_key(text: str) -> int:
    """A stable signed 63-bit integer for what a text says: lower-cased, punctuation dropped, spaces
    collapsed, one leading article removed ("The dog." and "dog" share a key)."""
    words = re.sub(r"[^0-9a-z]+", " ", text.lower()).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return image_key(" ".join(words))


@dataclass(frozen=True)
class Block:
    """One row group of one shard and the rows of it that belong to the wanted splits."""

    file: str
    row_group: int
    keep: np.ndarray = field(compare=False, repr=False)

    @property
    def rows(self) -> int:
        return len(self.keep)


def scan_blocks(files: list[Path | str], splits: list[str] | None = None) -> list[Block]:
    """Read only the ``split`` column of every row group to know which rows are wanted."""
    blocks = []
    for f in sorted(map(str, files)):
        pf = pq.ParquetFile(f)
        for rg in range(pf.num_row_groups):
            if splits is None:
                keep = np.arange(pf.metadata.row_group(rg).num_rows, dtype=np.int64)
            else:
                col = pf.read_row_group(rg, columns=["split"]).column(0)
                mask = pc.is_in(col, value_set=pa.array(splits))
                keep = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
            if len(keep):
                blocks.append(Block(f, rg, keep))
    return blocks


@dataclass(frozen=True)
class EpochPlan:
    """The global sample order of one epoch as windows of blocks (shuffled within a window)."""

    blocks: list[Block]
    window_starts: list[int]  # index into blocks where each window begins
    window_offsets: list[int]  # global position of each window's first sample (+ total at the end)
    seed: int
    epoch: int
    shuffle: bool

    @classmethod
    def make(cls, blocks: list[Block], seed: int, epoch: int, shuffle: bool, shuffle_blocks: int) -> EpochPlan:
        order = list(blocks)
        if shuffle:
            random.Random(f"blocks/{seed}/{epoch}").shuffle(order)
        starts = list(range(0, len(order), max(1, shuffle_blocks)))
        offsets, total = [], 0
        for i, s in enumerate(starts):
            offsets.append(total)
            end = starts[i + 1] if i + 1 < len(starts) else len(order)
            total += sum(b.rows for b in order[s:end])
        offsets.append(total)
        return cls(order, starts, offsets, seed, epoch, shuffle)

    @property
    def total(self) -> int:
        return self.window_offsets[-1]

    def window_of(self, position: int) -> int:
        return bisect_right(self.window_offsets, position) - 1

    def window_blocks(self, w: int) -> list[Block]:
        end = self.window_starts[w + 1] if w + 1 < len(self.window_starts) else len(self.blocks)
        return self.blocks[self.window_starts[w]:end]

    def read_window(self, w: int, columns: list[str]) -> dict[str, list]:
        """The window's wanted rows, shuffled, as column lists."""
        cols: dict[str, list] = {c: [] for c in columns}
        for b in self.window_blocks(w):
            t = pq.ParquetFile(b.file).read_row_group(b.row_group, columns=columns).take(b.keep)
            for c in columns:
                cols[c].extend(t.column(c).to_pylist())
        if self.shuffle:
            perm = list(range(len(cols[columns[0]])))
            random.Random(f"rows/{self.seed}/{self.epoch}/{w}").shuffle(perm)
            cols = {c: [v[i] for i in perm] for c, v in cols.items()}
        return cols


def steps_per_epoch(total_samples: int, batch_size: int, world: int) -> int:
    return (total_samples // batch_size) // world


def sample_rng(seed: int, epoch: int, position: int) -> random.Random:
    """The augmentation RNG of the sample at global ``position`` of ``epoch``: the same whatever
    worker or rank builds the batch, which is what makes ``--resume`` exact."""
    return random.Random(f"aug/{seed}/{epoch}/{position}")


class Collate(Protocol):
    """Turns a batch's rows (column name -> values) into tensors. ``rngs[i]`` is row i's
    augmentation RNG (:func:`sample_rng`). Must be picklable: it runs in DataLoader workers."""

    columns: list[str]

    def __call__(self, rows: dict[str, list], rngs: list[random.Random]) -> dict: ...


class _Tokenizes:
    """A collate's tokenizer, loaded lazily in each DataLoader worker (never pickled)."""

    tokenizer_dir: str
    _tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}  # each worker loads its own tokenizer

    def tokenizer(self):
        if self._tokenizer is None:
            from vlpipe.data.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_dir)
        return self._tokenizer

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer()(texts, padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@dataclass
class ImageTextCollate(_Tokenizes):
    """One image + one text per row: ``images`` (decoded, augmented when ``train``), ``input_ids``,
    ``attention_mask``, ``image_ids`` (:func:`image_key`), plus what ``targets(rows)`` returns
    (e.g. class labels) and the raw values of ``keep`` columns (lists, for predictions).

    A horizontal flip swaps "left"/"right" in the text, so a mirrored image keeps a true text.
    """

    tokenizer_dir: str
    image_size: int
    max_len: int = 40
    text_column: str = "caption"
    train: bool = True
    crop_min_scale: float = 0.5
    targets: Callable[[dict[str, list]], dict[str, torch.Tensor]] | None = None
    target_columns: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    text_keys: bool = False  # also return ``text_keys`` (:func:`text_key` of each text as fed)

    def __post_init__(self) -> None:
        self.transform = ImageTransform(self.image_size, train=self.train, scale=(self.crop_min_scale, 1.0))
        self._tokenizer = None

    @property
    def columns(self) -> list[str]:
        cols = ["image_id", self.text_column, "image", "image_path", *self.target_columns, *self.keep]
        return list(dict.fromkeys(cols))

    def __call__(self, rows: dict[str, list], rngs: list[random.Random]) -> dict:
        images, texts = [], []
        for data, path, text, rng in zip(rows["image"], rows["image_path"], rows[self.text_column], rngs):
            tensor, flipped = self.transform(decode(data, path), rng)
            images.append(tensor)
            texts.append(flip_caption(text) if flipped else text)
        enc = self.tokenizer()(texts, padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt")
        batch = {
            "images": torch.stack(images),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "image_ids": torch.tensor([image_key(i) for i in rows["image_id"]], dtype=torch.long),
        }
        if self.text_keys:
            batch["text_keys"] = torch.tensor([text_key(t) for t in texts], dtype=torch.long)
        if self.targets is not None:
            batch.update(self.targets(rows))
        for c in self.keep:
            batch[c] = list(rows[c])
        return batch


@dataclass
class ImagePairTextCollate(_Tokenizes):
    """Two images + one text per row (NLVR2): ``images`` and ``images2`` (each decoded and, when
    ``train``, randomly crop-resized with its own draw from the row's RNG), ``input_ids``,
    ``attention_mask``, ``image_ids`` / ``image_ids2`` (:func:`image_key`), plus ``targets(rows)``
    and the raw ``keep`` columns.

    No horizontal flip: the sentences name the images by side ("the left image has ..."), which a
    text swap would break, and a mirrored image would break statements about one image's left and
    right. (ALBEF flips each image and leaves the text as is.)
    """

    tokenizer_dir: str
    image_size: int
    max_len: int = 40
    text_column: str = "sentence"
    train: bool = True
    crop_min_scale: float = 0.5
    targets: Callable[[dict[str, list]], dict[str, torch.Tensor]] | None = None
    target_columns: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.transform = ImageTransform(self.image_size, train=self.train, scale=(self.crop_min_scale, 1.0), flip=False)
        self._tokenizer = None

    @property
    def columns(self) -> list[str]:
        cols = ["image_id", "image_id2", self.text_column, "image", "image_path", "image2", "image_path2",
                *self.target_columns, *self.keep]
        return list(dict.fromkeys(cols))

    def __call__(self, rows: dict[str, list], rngs: list[random.Random]) -> dict:
        first, second = [], []
        for d1, p1, d2, p2, rng in zip(rows["image"], rows["image_path"], rows["image2"], rows["image_path2"], rngs):
            first.append(self.transform(decode(d1, p1), rng)[0])
            second.append(self.transform(decode(d2, p2), rng)[0])
        batch = {
            "images": torch.stack(first),
            "images2": torch.stack(second),
            **self.encode(list(rows[self.text_column])),
            "image_ids": torch.tensor([image_key(i) for i in rows["image_id"]], dtype=torch.long),
            "image_ids2": torch.tensor([image_key(i) for i in rows["image_id2"]], dtype=torch.long),
        }
        if self.targets is not None:
            batch.update(self.targets(rows))
        for c in self.keep:
            batch[c] = list(rows[c])
        return batch


@dataclass
class QuestionAnswersCollate(_Tokenizes):
    """An image, a question and its answers per row (VQA; ALBEF's ``vqa_collate_fn``).

    ``images``, ``input_ids`` / ``attention_mask`` (the questions), ``image_ids``; with
    ``answers``: every row's distinct answers flattened in row order as ``answer_ids`` /
    ``answer_mask`` [A, La] (``[CLS] answer [SEP]``, :func:`vlpipe.models.vqa.tokenize_answers`,
    at most ``max_answer_len`` tokens), their ``answer_weights`` [A] and ``answers_per_question``
    [B] (long): the question is repeated once per answer, as ALBEF trains. A horizontal flip swaps
    left/right in the question and the answers alike. ``keep`` columns are passed through raw.
    """

    tokenizer_dir: str
    image_size: int
    max_len: int = 40
    max_answer_len: int = 10
    train: bool = True
    crop_min_scale: float = 0.5
    answers: bool = True  # False: questions only (evaluation ranks a fixed candidate list)
    keep: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.transform = ImageTransform(self.image_size, train=self.train, scale=(self.crop_min_scale, 1.0))
        self._tokenizer = None

    @property
    def columns(self) -> list[str]:
        cols = ["image_id", "question", "image", "image_path",
                *(("answers", "answer_weights") if self.answers else ()), *self.keep]
        return list(dict.fromkeys(cols))

    def __call__(self, rows: dict[str, list], rngs: list[random.Random]) -> dict:
        images, questions, flips = [], [], []
        for data, path, text, rng in zip(rows["image"], rows["image_path"], rows["question"], rngs):
            tensor, flipped = self.transform(decode(data, path), rng)
            images.append(tensor)
            questions.append(flip_caption(text) if flipped else text)
            flips.append(flipped)
        batch = {
            "images": torch.stack(images),
            **self.encode(questions),
            "image_ids": torch.tensor([image_key(i) for i in rows["image_id"]], dtype=torch.long),
        }
        if self.answers:
            from vlpipe.models.vqa import tokenize_answers

            flat: list[str] = []
            weights: list[float] = []
            counts: list[int] = []
            for answers, w, flipped in zip(rows["answers"], rows["answer_weights"], flips):
                answers, w = list(answers or []), list(w or [])
                flat += [flip_caption(a) if flipped else a for a in answers]
                weights += [float(x) for x in w]
                counts.append(len(answers))
            if flat:
                ids, mask = tokenize_answers(self.tokenizer(), flat, self.max_answer_len)
            else:
                ids = mask = torch.zeros(0, 2, dtype=torch.long)
            batch.update(answer_ids=ids, answer_mask=mask, answer_weights=torch.tensor(weights, dtype=torch.float32),
                         answers_per_question=torch.tensor(counts, dtype=torch.long))
        for c in self.keep:
            batch[c] = list(rows[c])
        return batch


class ShardBatches(IterableDataset):
    """Yields ready batches for one epoch of one rank, built by ``collate`` from rows of the blocks.

    ``drop_last`` (training): only whole global batches, the same count on every rank. Without it
    (evaluation, one rank) the last batch may be short. ``limit``: only the first ``limit`` samples
    of the epoch's order.
    """

    def __init__(
        self,
        blocks: list[Block],
        collate: Collate,
        *,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        shuffle_blocks: int = 4,
        drop_last: bool = True,
        limit: int | None = None,
    ):
        self.plan = EpochPlan.make(blocks, seed, epoch, shuffle, shuffle_blocks)
        self.total = self.plan.total if limit is None else min(limit, self.plan.total)
        if drop_last:
            self.steps = steps_per_epoch(self.total, batch_size, world)
        else:
            self.steps = math.ceil(math.ceil(self.total / batch_size) / world)
        if self.steps == 0 and (drop_last or self.total == 0):
            raise InputError(
                "--batch-size",
                f"{self.total} samples cannot fill one batch of {batch_size} on each of {world} rank(s)",
                "lower --batch-size or add data",
            )
        self.collate = collate
        self.batch_size = batch_size
        self.start_batch = start_batch
        self.rank, self.world = rank, world
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return max(0, self.steps - self.start_batch)

    def my_batches(self) -> range:
        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
        return range(self.start_batch + wid, self.steps, n)

    def __iter__(self):
        columns = self.collate.columns
        cache: dict[int, dict[str, list]] = {}
        for local in self.my_batches():
            g = local * self.world + self.rank
            lo, hi = g * self.batch_size, min((g + 1) * self.batch_size, self.total)
            if lo >= hi:
                continue
            first, last = self.plan.window_of(lo), self.plan.window_of(hi - 1)
            for w in [w for w in cache if w < first]:
                del cache[w]
            rows: dict[str, list] = {c: [] for c in columns}
            for w in range(first, last + 1):
                if w not in cache:
                    cache[w] = self.plan.read_window(w, columns)
                off = self.plan.window_offsets[w]
                a, b = max(lo, off) - off, min(hi, self.plan.window_offsets[w + 1]) - off
                for c in columns:
                    rows[c].extend(cache[w][c][a:b])
            rngs = [sample_rng(self.seed, self.epoch, lo + i) for i in range(hi - lo)]
            batch = self.collate(rows, rngs)
            batch["batch_index"] = local
            yield batch


class CaptionBatches(ShardBatches):
    """Caption-dataset batches (images, token ids, masks, image keys) for one epoch of one rank."""

    def __init__(
        self,
        blocks: list[Block],
        tokenizer_dir: str,
        *,
        batch_size: int,
        image_size: int,
        max_len: int = 40,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        augment: bool = True,
        shuffle_blocks: int = 4,
        crop_min_scale: float = 0.5,
    ):
        collate = ImageTextCollate(str(tokenizer_dir), image_size, max_len, "caption", augment, crop_min_scale)
        super().__init__(blocks, collate, batch_size=batch_size, seed=seed, epoch=epoch, start_batch=start_batch,
                         rank=rank, world=world, shuffle=shuffle, shuffle_blocks=shuffle_blocks)


def batch_loader(dataset: ShardBatches, workers: int) -> torch.utils.data.DataLoader:
    """A DataLoader over ready batches; ``workers`` processes decode and augment."""
    workers = max(0, min(workers, len(dataset)))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        pin_memory=torch.cuda.is_available(),
        # Its own generator: creating the iterator must not draw from the global RNG, or a resumed
        # run (which builds its loader at another point of the RNG stream) would diverge.
        generator=torch.Generator().manual_seed(0),
    )
