"""A folder of images with sidecar captions: ``cat.jpg`` + ``cat.txt`` (one caption per line).

The folder is walked recursively in sorted order (hidden entries skipped). Every image
(``.jpg .jpeg .png .webp .bmp .gif .tif .tiff``) gives one record per non-empty line of the
``.txt`` file with the same stem next to it; an image without one (or with only blank lines)
is a ``missing_caption`` reject. Caption lines are passed on as bytes, so ingest can reject
non-UTF-8 ones. ``image_id`` is the image's path relative to the folder, ``caption_id`` is
``<image_id>#<line index>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from vlpipe.errors import InputError

from .base import Record, Records, Reject, infer_split, source_label

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _walk(root: Path) -> Iterator[tuple[str, list[str]]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield dirpath, sorted(f for f in filenames if not f.startswith("."))


def _rows(folders: list[Path], split: str | None) -> Iterator[Record | Reject]:
    for folder in folders:
        source = source_label("folder", folder.resolve())
        folder_split = split or infer_split(folder.resolve().name) or "train"
        for dirpath, names in _walk(folder):
            present = set(names)
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.abspath(os.path.join(dirpath, name))
                image_id = os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/")
                sidecar = stem + ".txt"
                lines: list[bytes] = []
                if sidecar in present:
                    with open(os.path.join(dirpath, sidecar), "rb") as f:
                        lines = [ln for ln in f.read().splitlines() if ln.strip()]
                if not lines:
                    detail = f"{sidecar} has no caption line" if sidecar in present else f"no {sidecar} next to the image"
                    yield Reject(reason="missing_caption", detail=detail, image_id=image_id, split=folder_split,
                                 source=source, image_path=path)
                    continue
                for k, line in enumerate(lines):
                    yield Record(image_id=image_id, caption_id=f"{image_id}#{k}", caption=line, split=folder_split,
                                 source=source, image_path=path)


def read_folder(inputs: Sequence[str | Path], images: str | Path | None = None, split: str | None = None) -> Records:
    """Records of one or more image folders with ``.txt`` sidecars (``images`` is unused)."""
    folders = [Path(p) for p in inputs]
    if not folders:
        raise InputError("inputs", "no folder given", "pass one or more image folders")
    for p in folders:
        if not p.exists():
            raise InputError(p, "no such folder", "check the path of the image folder")
        if not p.is_dir():
            raise InputError(p, "is not a folder", "pass a folder holding images and .txt captions")
    return Records(_rows(folders, split), total=None)
