"""The one image pipeline shared by pretrain, embed and rerank: decode, crop/flip, normalise.

Augmentation draws from an explicit ``random.Random`` (seeded per sample by the loader), not
from torch's global generator, so a batch is the same whatever worker builds it: that is what
lets ``--resume`` continue a run bit for bit.
"""

from __future__ import annotations

import io
import math
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# CLIP / ALBEF normalisation constants.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def flip_caption(caption: str) -> str:
    """Swap the words left/right, so a mirrored image keeps a true caption."""
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", caption)


def decode(data: bytes | None, path: str | None) -> Image.Image:
    if data is not None:
        img = Image.open(io.BytesIO(data))
    else:
        img = Image.open(path)
    return img.convert("RGB")


@dataclass(frozen=True)
class ImageTransform:
    """Resize (eval) or random-resized-crop + optional horizontal flip (train), then normalise."""

    size: int
    train: bool = False
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True

    def crop_box(self, width: int, height: int, rng: random.Random) -> tuple[float, float, float, float]:
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w = math.sqrt(target * aspect)
            h = math.sqrt(target / aspect)
            if 0 < w <= width and 0 < h <= height:
                x = rng.uniform(0, width - w)
                y = rng.uniform(0, height - h)
                return (x, y, x + w, y + h)
        return (0.0, 0.0, float(width), float(height))

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> tuple[torch.Tensor, bool]:
        """Returns the normalised [3, size, size] tensor and whether the image was mirrored."""
        flipped = False
        if self.train:
            rng = rng or random.Random()
            box = self.crop_box(img.width, img.height, rng)
            img = img.resize((self.size, self.size), Image.BICUBIC, box=box)
            if self.flip and rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
                flipped = True
        elif img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BICUBIC)
        return to_tensor(img), flipped


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (t - mean) / std
