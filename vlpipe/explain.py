"""Explain an image-text match: Grad-CAM heatmaps of the ITM score, rendered over the image.

:func:`explain` runs :func:`vlpipe.models.gradcam.gradcam` on one (image, text) pair: one heatmap
for the whole sentence and one per word (word pieces merged: the maps of a word's pieces are
averaged). :func:`render_overlay` blends a heatmap over the image with a colour map (blue = cold,
red = hot; opacity grows with the heat, so cold regions show the image) at the image's own size.
:func:`write_explanation` writes the PNGs plus ``explanation.json`` into a folder atomically (a
hidden temporary folder beside it, renamed when complete). Pillow and numpy only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vlpipe.errors import InputError, VlpipeError

SENTENCE_FILE = "sentence.png"
JSON_FILE = "explanation.json"

# A jet-like colour map: (position, (r, g, b)) anchors, linearly interpolated.
_ANCHORS = [(0.0, (0, 0, 128)), (0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)),
            (0.875, (255, 0, 0)), (1.0, (128, 0, 0))]


@dataclass
class WordMap:
    word: str
    heatmap: np.ndarray  # [h, w] on the patch grid
    token_positions: list[int]  # positions of its word pieces in the tokenized text


@dataclass
class Explanation:
    text: str
    itm_logit: float  # the ITM head's match logit: the score the heatmaps explain
    itm: float  # log-odds of a match (logit[match] - logit[no match])
    p_match: float  # softmax match probability
    layer: int
    sentence: np.ndarray  # [h, w]
    words: list[WordMap] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


def colorize(heat: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] uint8 colours."""
    pos = [a for a, _ in _ANCHORS]
    channels = [np.interp(heat, pos, [c[i] for _, c in _ANCHORS]) for i in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the map's own maximum (negative values clipped; an all-zero map stays zero)."""
    h = np.clip(np.asarray(heatmap, dtype=np.float32), 0, None)
    top = float(h.max()) if h.size else 0.0
    return h / top if top > 0 else np.zeros_like(h)


def render_overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.7) -> Image.Image:
    """The heatmap resized (bicubic) to the image and blended over it; an RGB image of the image's size.

    Per pixel, the colour of the normalised heat ``v`` is mixed in with weight ``opacity * v ** 0.7``.
    """
    image = image.convert("RGB")
    heat = Image.fromarray(normalize_heatmap(heatmap)).resize(image.size, Image.BICUBIC)
    v = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    weight = (opacity * v ** 0.7)[..., None]
    out = (1 - weight) * np.asarray(image, dtype=np.float32) + weight * colorize(v).astype(np.float32)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def merge_word_pieces(tokens: list[str], word_ids: list[int | None] | None = None) -> list[tuple[str, list[int]]]:
    """Group token positions into words: by the fast tokenizer's ``word_ids`` when given, else by
    WordPiece's ``##`` continuation marks. Special tokens ([CLS], [SEP], [PAD]) are left out."""
    words: list[tuple[str, list[int]]] = []
    if word_ids is not None:
        last = None
        for pos, (tok, wid) in enumerate(zip(tokens, word_ids)):
            if wid is None:
                last = None
                continue
            piece = tok[2:] if tok.startswith("##") else tok
            if wid == last and words:
                words[-1] = (words[-1][0] + piece, words[-1][1] + [pos])
            else:
                words.append((piece, [pos]))
            last = wid
        return words
    for pos, tok in enumerate(tokens):
        if tok in ("[CLS]", "[SEP]", "[PAD]") or not tok:
            continue
        if tok.startswith("##") and words:
            words[-1] = (words[-1][0] + tok[2:], words[-1][1] + [pos])
        else:
            words.append((tok, [pos]))
    return words


def load_image(path: str | Path) -> Image.Image:
    """An RGB image; a one-line InputError when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image not found", "pass an existing image file with --image")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot be read as an image ({type(e).__name__})") from None


def explain(model, tokenizer, image: Image.Image, text: str, layer: int | None = None, per_word: bool = True,
            device: str | torch.device = "cpu") -> Explanation:
    """Grad-CAM heatmaps of the ITM match score of (image, text); ``model`` an ALBEF in eval mode."""
    from vlpipe.data.transforms import ImageTransform
    from vlpipe.models.gradcam import gradcam

    text = (text or "").strip()
    if not text:
        raise VlpipeError("--text is empty: give the sentence to explain")
    cfg = model.cfg
    pixels, _ = ImageTransform(cfg.vision.image_size)(image.convert("RGB"))
    enc = tokenizer([text], truncation=True, max_length=cfg.text.max_len, return_tensors="pt")
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    cam = gradcam(model, pixels[None].to(device), ids, mask, layer)
    logits = cam.itm_logits[0]
    itm = float(logits[1] - logits[0])
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    out = Explanation(text=text, itm_logit=float(logits[1]), itm=itm,
                      p_match=float(torch.sigmoid(torch.tensor(itm, dtype=torch.float64))), layer=cam.layer,
                      sentence=cam.sentence_map[0].cpu().numpy(), tokens=tokens)
    if per_word:
        word_ids = enc.word_ids(0) if getattr(enc, "is_fast", False) else None
        maps = cam.token_maps[0].cpu()
        for word, positions in merge_word_pieces(tokens, word_ids):
            out.words.append(WordMap(word, maps[positions].mean(0).numpy(), positions))
    return out


def _safe(word: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", word).strip("_")[:40] or "word"


def write_explanation(exp: Explanation, image: Image.Image, out: str | Path, overwrite: bool = False,
                      source: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """Write ``sentence.png``, ``word-NN-<word>.png`` per word and ``explanation.json`` into ``out``.

    Built in a hidden temporary folder beside ``out`` and renamed into place, so ``out`` is either
    complete or absent. An existing ``out`` is an error unless ``overwrite``. Returns
    [(file name, what it shows)].
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise VlpipeError(f"{out} is a file: --out must name a folder")
        if not overwrite:
            raise VlpipeError(f"{out} already exists: pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".partial-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: list[tuple[str, str]] = []
    try:
        render_overlay(image, exp.sentence).save(tmp / SENTENCE_FILE)
        files.append((SENTENCE_FILE, f"sentence: {exp.text}"))
        words = []
        for n, w in enumerate(exp.words, start=1):
            name = f"word-{n:02d}-{_safe(w.word)}.png"
            render_overlay(image, w.heatmap).save(tmp / name)
            files.append((name, f"word: {w.word}"))
            words.append({"word": w.word, "file": name, "token_positions": w.token_positions})
        meta = {"text": exp.text, "itm_logit": exp.itm_logit, "itm_log_odds": exp.itm, "p_match": exp.p_match,
                "layer": exp.layer, "tokens": exp.tokens, "sentence_file": SENTENCE_FILE, "words": words,
                "image_size": list(image.size), "heatmap_grid": list(exp.sentence.shape), **(source or {})}
        (tmp / JSON_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        files.append((JSON_FILE, "scores, tokens and file list"))
        if out.exists():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files
