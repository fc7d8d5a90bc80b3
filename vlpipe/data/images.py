"""Checking images before they enter a dataset: decode once, report what is wrong.

:func:`probe_image` decodes the whole image with Pillow (so a truncated or damaged file is
found now, not in the middle of training) and returns its size, or raises
:class:`ImageProblem` with a reject reason:

``missing_image``    no such file (or not readable)
``empty_image``      zero bytes
``truncated_image``  the data ends early
``corrupt_image``    not an image Pillow can decode

Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone (it must stay False for
truncation to be detected).
"""

from __future__ import annotations

import io
import os
import stat
import warnings

from PIL import Image, UnidentifiedImageError


class ImageProblem(Exception):
    """Why an image cannot be used: ``reason`` (a reject code) and a human ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_image_bytes(path: str) -> bytes:
    """The file's bytes; a missing/unreadable file is ``missing_image``, zero bytes ``empty_image``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageProblem("missing_image", "no such file") from None
    except IsADirectoryError:
        raise ImageProblem("missing_image", "is a folder, not an image file") from None
    except OSError as e:
        raise ImageProblem("missing_image", f"cannot read ({e.strerror})") from None
    if not data:
        raise ImageProblem("empty_image", "file is 0 bytes")
    return data


def check_exists(path: str) -> None:
    """The cheap check used when verification is off: the file exists and is not empty."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageProblem("missing_image", "no such file") from None
    except OSError as e:
        raise ImageProblem("missing_image", f"cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageProblem("missing_image", "is not a regular file")
    if st.st_size == 0:
        raise ImageProblem("empty_image", "file is 0 bytes")


def _format_hint(data: bytes) -> tuple[str] | None:
    """The Pillow format the magic bytes announce, to skip trying every plugin (~20 us an image)."""
    head = data[:12]
    if head.startswith(b"\xff\xd8\xff"):
        return ("JPEG",)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("PNG",)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return ("WEBP",)
    return None


def probe_image(path: str | os.PathLike | None = None, data: bytes | None = None) -> tuple[int, int]:
    """Decode the full image (from ``data`` if given, else the file at ``path``); its (width, height)."""
    if data is None:
        if path is None:
            raise ValueError("probe_image needs a path or data")
        data = read_image_bytes(os.fspath(path))
    elif not data:
        raise ImageProblem("empty_image", "image data is 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, odd metadata: not our concern here
            hint = _format_hint(data)
            if hint is not None:
                try:
                    with Image.open(io.BytesIO(data), formats=hint) as im:
                        im.load()
                        return im.size
                except UnidentifiedImageError:
                    pass  # let every plugin have a go
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return im.size
    except UnidentifiedImageError:
        raise ImageProblem("corrupt_image", f"not a recognised image format ({len(data)} bytes)") from None
    except Image.DecompressionBombError as e:
        raise ImageProblem("corrupt_image", f"refused to decode: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        msg = str(e) or type(e).__name__
        if "truncat" in msg.lower():
            raise ImageProblem("truncated_image", msg) from None
        raise ImageProblem("corrupt_image", msg) from None
