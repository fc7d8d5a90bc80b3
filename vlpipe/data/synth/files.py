"""What the task writers share: deterministic JSON / JSON Lines / pickle writers, COCO constants.

Equal inputs give byte-identical files: keys in the order they were built, UTF-8, no spaces
depending on the platform, a trailing newline.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Constant COCO ``info`` / dates, so equal seeds give byte-identical files.
COCO_INFO = {
    "description": "vlpipe synthetic pictogram world (COCO captions layout)",
    "url": "",
    "version": "1.0",
    "year": 2014,
    "contributor": "vlpipe",
    "date_created": "2014-01-01 00:00:00",
}
DATE_CAPTURED = "2014-01-01 00:00:00"


def tokenize(caption: str) -> list[str]:
    """Karpathy-style tokens: lowercased words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


def write_json(path: Path, obj: Any) -> None:
    """Write JSON deterministically (key order as built, UTF-8, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps uses the C encoder; json.dump to a file would stream through the slow Python one.
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write JSON Lines: one object per line, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_pickle(path: Path, obj: Any) -> None:
    """Write a pickle of plain lists/dicts/str/int (protocol 2, as the Python 2 era upstream files).

    The object goes through JSON first: pickle shares repeated objects by identity, and identity
    differs between scenes made in this process and scenes unpickled from workers; after the
    round trip the bytes depend only on the content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(json.loads(json.dumps(obj)), protocol=2))
