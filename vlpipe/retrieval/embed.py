"""ITC-space embeddings of a dataset split: unique images and their captions.

The same image pipeline as training (``ImageTransform`` without augmentation: resize, no crop),
decoded in DataLoader workers. Features are the L2-normalised projections the ITC loss aligns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch

from vlpipe.data.transforms import ImageTransform, decode
from vlpipe.errors import InputError


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
