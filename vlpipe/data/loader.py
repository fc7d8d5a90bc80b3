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
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vlpipe.data.transforms import ImageTransform, decode, flip_caption
from vlpipe.errors import InputError

READ_COLUMNS = ["image_id", "caption", "image", "image_path"]


def image_key(image_id: str) -> int:
    """A stable signed 63-bit integer for an image id (equal ids <=> equal keys, in practice)."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little") >> 1


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


class CaptionBatches(IterableDataset):
    """Yields ready batches (images, token ids, masks, image keys) for one epoch of one rank."""

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
    ):
        self.plan = EpochPlan.make(blocks, seed, epoch, shuffle, shuffle_blocks)
        self.steps = steps_per_epoch(self.plan.total, batch_size, world)
        if self.steps == 0:
            raise InputError(
                "--batch-size",
                f"{self.plan.total} samples cannot fill one batch of {batch_size} on each of {world} rank(s)",
                "lower --batch-size or add data",
            )
        self.tokenizer_dir = tokenizer_dir
        self.batch_size = batch_size
        self.max_len = max_len
        self.start_batch = start_batch
        self.rank, self.world = rank, world
        self.seed, self.epoch = seed, epoch
        self.transform = ImageTransform(image_size, train=augment)
        self._tokenizer = None

    def __len__(self) -> int:
        return max(0, self.steps - self.start_batch)

    def tokenizer(self):
        if self._tokenizer is None:
            from vlpipe.data.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_dir)
        return self._tokenizer

    def my_batches(self) -> range:
        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info is not None else (0, 1)
        return range(self.start_batch + wid, self.steps, n)

    def __iter__(self):
        cache: dict[int, dict[str, list]] = {}
        for local in self.my_batches():
            g = local * self.world + self.rank
            lo, hi = g * self.batch_size, (g + 1) * self.batch_size
            first, last = self.plan.window_of(lo), self.plan.window_of(hi - 1)
            for w in [w for w in cache if w < first]:
                del cache[w]
            rows: dict[str, list] = {c: [] for c in READ_COLUMNS}
            for w in range(first, last + 1):
                if w not in cache:
                    cache[w] = self.plan.read_window(w, READ_COLUMNS)
                off = self.plan.window_offsets[w]
                a, b = max(lo, off) - off, min(hi, self.plan.window_offsets[w + 1]) - off
                for c in READ_COLUMNS:
                    rows[c].extend(cache[w][c][a:b])
            yield self.collate(rows, local, lo)

    def collate(self, rows: dict[str, list], local: int, first_position: int) -> dict:
        images, captions = [], []
        for i, (data, path, caption) in enumerate(zip(rows["image"], rows["image_path"], rows["caption"])):
            rng = random.Random(f"aug/{self.seed}/{self.epoch}/{first_position + i}")
            tensor, flipped = self.transform(decode(data, path), rng)
            images.append(tensor)
            captions.append(flip_caption(caption) if flipped else caption)
        enc = self.tokenizer()(
            captions, padding="longest", truncation=True, max_length=self.max_len, return_tensors="pt"
        )
        return {
            "images": torch.stack(images),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "image_ids": torch.tensor([image_key(i) for i in rows["image_id"]], dtype=torch.long),
            "batch_index": local,
        }


def batch_loader(dataset: CaptionBatches, workers: int) -> torch.utils.data.DataLoader:
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
