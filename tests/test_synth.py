"""The synthetic pictogram world: determinism, upstream schemas, captions true of their scene, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vlpipe.artifacts import read_manifest
from vlpipe.data.synth import TASKS, generate, split_sizes
from vlpipe.data.synth.generate import SCENES_FILE, make_scene
from vlpipe.data.synth.render import glyph_tile, render_scene, shape_tile
from vlpipe.data.synth.vocab import (
    BACKGROUNDS,
    CATEGORIES,
    COLORS,
    NUMBER_WORDS,
    RELATION_PHRASES,
    SHAPES,
    SIZE_WORDS,
    noun_index,
)
from vlpipe.errors import InputError
from vlpipe.progress import RecordingProgress
from vlpipe.stages.cli import app

N, SIZE, SEED = 24, 64, 3
JSON_FILES = [
    "annotations/captions_train2014.json",
    "annotations/captions_val2014.json",
    "dataset_coco.json",
    "coco_train.json",
    "coco_val.json",
    "coco_test.json",
    SCENES_FILE,
]
runner = CliRunner()


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Three small worlds: seed 3 in-process, seed 3 with 2 workers, seed 4."""
    base = tmp_path_factory.mktemp("synth")
    out = {}
    for name, seed, workers in (("a", SEED, 1), ("b", SEED, 2), ("c", SEED + 1, 1)):
        progress = RecordingProgress()
        stats = generate(base / name, N, seed=seed, size=SIZE, workers=workers, progress=progress)
        out[name] = (base / name, stats, progress)
    return out


def _load(folder: Path, rel: str):
    return json.loads((folder / rel).read_text(encoding="utf-8"))


# -- determinism ------------------------------------------------------------------------------
def test_same_seed_same_bytes_and_pixels_whatever_the_workers(worlds):
    a, b = worlds["a"][0], worlds["b"][0]
    for rel in JSON_FILES:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for im in _load(a, SCENES_FILE)["images"][:: N // 4]:
        pa = np.asarray(Image.open(a / im["file_name"]))
        pb = np.asarray(Image.open(b / im["file_name"]))
        assert pa.shape == (SIZE, SIZE, 3)
        assert np.array_equal(pa, pb), im["file_name"]
    assert worlds["b"][1]["workers"] == 2


def test_different_seed_differs(worlds):
    a, c = worlds["a"][0], worlds["c"][0]
    assert (a / SCENES_FILE).read_bytes() != (c / SCENES_FILE).read_bytes()
    assert _load(a, "coco_train.json") != _load(c, "coco_train.json")
    name = _load(a, SCENES_FILE)["images"][0]["file_name"]
    assert not np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(c / name)))


def test_scene_depends_only_on_seed_and_index():
    s1 = make_scene(9, 17, 96, "train")
    s2 = make_scene(9, 17, 96, "test")
    assert s1.captions == s2.captions and s1.objects == s2.objects
    assert s1.file_name.startswith("train2014/") and s2.file_name.startswith("val2014/")
    assert np.array_equal(np.asarray(render_scene(s1)), np.asarray(render_scene(s2)))


def test_progress_and_stats(worlds):
    _, stats, progress = worlds["a"]
    assert progress.totals["render"] == N and progress.counts["render"] == N
    assert progress.finished == ["render"]
    assert stats["images"] == N and stats["captions"] == 5 * N
    assert stats["splits"] == {"train": 19, "val": 2, "test": 3}
    assert sum(stats["categories"].values()) == stats["objects"] > 0
    assert stats["tasks"] == ["captions"] and "coco_train.json" in stats["files"]


# -- upstream schemas -------------------------------------------------------------------------
def test_coco_caption_files(worlds):
    a = worlds["a"][0]
    n_images = 0
    for part, folder in (("train2014", "train2014"), ("val2014", "val2014")):
        d = _load(a, f"annotations/captions_{part}.json")
        assert set(d) == {"info", "licenses", "images", "annotations"}
        assert d["licenses"] == [] and isinstance(d["info"], dict)
        ids = set()
        for im in d["images"]:
            assert set(im) == {"id", "file_name", "width", "height", "license", "coco_url",
                               "date_captured", "flickr_url"}
            assert isinstance(im["id"], int) and im["id"] >= 1
            assert im["file_name"] == f"COCO_{folder}_{im['id']:012d}.jpg"
            assert (im["width"], im["height"]) == (SIZE, SIZE)
            with Image.open(a / folder / im["file_name"]) as img:
                assert img.size == (SIZE, SIZE) and img.format == "JPEG"
            ids.add(im["id"])
        for ann in d["annotations"]:
            assert set(ann) == {"id", "image_id", "caption"}
            assert ann["image_id"] in ids and isinstance(ann["id"], int) and ann["caption"]
        assert len(d["annotations"]) == 5 * len(d["images"])
        n_images += len(d["images"])
    assert n_images == N


def test_karpathy_split_file(worlds):
    a = worlds["a"][0]
    d = _load(a, "dataset_coco.json")
    assert set(d) == {"images", "dataset"} and d["dataset"] == "coco"
    counts = {"train": 0, "val": 0, "test": 0}
    sentid = 0
    for imgid, im in enumerate(d["images"]):
        assert set(im) == {"filepath", "filename", "imgid", "split", "sentences", "cocoid", "sentids"}
        assert im["imgid"] == imgid and im["cocoid"] == imgid + 1
        assert im["filepath"] == ("train2014" if im["split"] == "train" else "val2014")
        assert (a / im["filepath"] / im["filename"]).is_file()
        counts[im["split"]] += 1
        assert len(im["sentences"]) == 5
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s in im["sentences"]:
            assert set(s) == {"tokens", "raw", "imgid", "sentid"}
            assert s["imgid"] == imgid and s["sentid"] == sentid
            assert s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"]) and s["raw"]
            sentid += 1
    assert counts == split_sizes(N, (0.8, 0.1, 0.1)) == {"train": 19, "val": 2, "test": 3}


def test_albef_lists(worlds):
    a = worlds["a"][0]
    train = _load(a, "coco_train.json")
    assert len(train) == 19 * 5
    for row in train:
        assert set(row) == {"caption", "image", "image_id"}
        assert re.fullmatch(r"train2014/COCO_train2014_\d{12}\.jpg", row["image"])
        assert row["image_id"] == f"coco_{int(row['image'][-16:-4])}"
        assert isinstance(row["caption"], str) and row["caption"]
        assert (a / row["image"]).is_file()
    for split, n in (("val", 2), ("test", 3)):
        rows = _load(a, f"coco_{split}.json")
        assert len(rows) == n
        for row in rows:
            assert set(row) == {"image", "caption"}
            assert re.fullmatch(r"val2014/COCO_val2014_\d{12}\.jpg", row["image"])
            assert len(row["caption"]) == 5 and all(isinstance(c, str) and c for c in row["caption"])
            assert (a / row["image"]).is_file()


def test_scenes_file(worlds):
    a = worlds["a"][0]
    d = _load(a, SCENES_FILE)
    assert d["seed"] == SEED and d["image_size"] == SIZE and len(d["images"]) == N
    assert {b.name for b in BACKGROUNDS} == set(d["vocabulary"]["backgrounds"])
    for k, im in enumerate(d["images"]):
        assert im["image_id"] == k + 1 and im["index"] == k
        assert (a / im["file_name"]).is_file()
        assert 1 <= len(im["objects"]) <= 4 and len(im["captions"]) == 5
        assert len(set(im["captions"])) == 5
        for o in im["objects"]:
            x, y, w, h = o["bbox"]
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE and w > 0 and h > 0
            assert o["size"] in ("small", "large")
            assert (o["kind"] == "shape") == (o["color"] is not None)


def test_custom_splits_and_bad_params(tmp_path):
    assert split_sizes(10, (0.5, 0.25, 0.25)) == {"train": 5, "val": 2, "test": 3}
    assert split_sizes(3, (1.0, 0.0, 0.0)) == {"train": 3, "val": 0, "test": 0}
    for kwargs in ({"n_images": 0}, {"n_images": 4, "splits": (0.5, 0.5, 0.5)},
                   {"n_images": 4, "tasks": ["nope"]}, {"n_images": 4, "size": 8},
                   {"n_images": 4, "workers": 0}):
        with pytest.raises(InputError):
            generate(tmp_path / "bad", **kwargs)


# -- pictures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cat", [c.name for c in CATEGORIES])
def test_every_glyph_renders_in_colour(cat):
    tile = np.asarray(glyph_tile(cat, 48))
    assert max(tile.shape[:2]) == 48
    opaque = tile[..., 3] > 128
    assert opaque.mean() > 0.1
    rgb = tile[opaque][:, :3].astype(int)
    assert np.ptp(rgb.mean(axis=1)) > 100  # filled and outlined, not a flat silhouette


def test_glyphs_are_in_colour():
    colourful = 0
    for cat in CATEGORIES:
        tile = np.asarray(glyph_tile(cat.name, 48))
        rgb = tile[tile[..., 3] > 128][:, :3].astype(int)
        colourful += (rgb.max(axis=1) - rgb.min(axis=1)).max() > 60
    assert colourful >= 20  # embedded colour works (a few pictograms are grey by design)


def test_shapes_render():
    for shape in SHAPES:
        for color in COLORS:
            tile = np.asarray(shape_tile(shape, color, 40))
            assert (tile[..., 3] > 128).mean() > 0.3


# -- captions are true of their scene ---------------------------------------------------------
_NOUNS = noun_index()
_COUNTS = {"a": 1, "an": 1, **{w: n for n, w in NUMBER_WORDS.items()}}
_SIZE_OF = {w: cls for cls, words in SIZE_WORDS.items() for w in words}
_BG_WORDS = {
    "beach": "beach", "sand": "beach", "sandy": "beach",
    "grass": "grass", "grassy": "grass", "field": "grass", "lawn": "grass", "meadow": "grass",
    "snow": "snow", "snowy": "snow",
    "road": "road", "street": "road",
    "water": "water",
    "plain": "plain", "blank": "plain",
}
_RELS = sorted(
    ((tuple(p.split()), pred) for pred, phrases in RELATION_PHRASES.items() for p in phrases),
    key=lambda x: -len(x[0]),
)


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption)


def _mentions(tokens: list[str]) -> list[dict]:
    """Every noun with the count, colour and size words in front of it."""
    out = []
    for k, tok in enumerate(tokens):
        if tok not in _NOUNS:
            continue
        category, _ = _NOUNS[tok]
        j, color, size = k - 1, None, None
        if tokens[j] in COLORS:
            color, j = tokens[j], j - 1
        if tokens[j] in _SIZE_OF:
            size, j = _SIZE_OF[tokens[j]], j - 1
        assert tokens[j] in _COUNTS, f"no count word before {tok!r}"
        out.append({"pos": k, "category": category, "color": color, "size": size,
                    "count": _COUNTS[tokens[j]], "start": j})
    return out


def _members(scene, m) -> list[int]:
    return [i for i, o in enumerate(scene.objects) if o.category == m["category"] and o.color == m["color"]]


def _check_caption(scene, caption: str) -> None:
    assert caption == caption.strip() and caption == caption.lower() and "  " not in caption
    tokens = _words(caption)
    mentions = _mentions(tokens)
    assert mentions, caption
    for m in mentions:
        members = _members(scene, m)
        assert len(members) == m["count"], (caption, m)
        if m["size"]:
            assert all(scene.objects[i].size == m["size"] for i in members), caption
    implied = {_BG_WORDS[t] for t in tokens if t in _BG_WORDS}
    assert implied <= {scene.background}, (caption, scene.background)
    k = 0
    while k < len(tokens):
        for phrase, pred in _RELS:
            if tuple(tokens[k: k + len(phrase)]) == phrase:
                before = [m for m in mentions if m["pos"] < k]
                after = [m for m in mentions if m["start"] >= k + len(phrase)]
                assert before and after, caption
                subj, obj = _members(scene, before[-1]), _members(scene, after[0])
                for i in subj:
                    for j in obj:
                        assert scene.holds(i, pred, j), (caption, i, pred, j)
                k += len(phrase) - 1
                break
        k += 1


def test_captions_are_true_of_their_scenes():
    n_rel = n_bg = 0
    for i in range(300):
        scene = make_scene(SEED, i, 96, "train")
        assert len(scene.captions) == 5 and len(set(scene.captions)) == 5
        for cap in scene.captions:
            _check_caption(scene, cap)
            tokens = _words(cap)
            n_bg += any(t in _BG_WORDS for t in tokens)
            n_rel += any(" ".join(p) in cap for p, _ in _RELS)
    assert n_bg > 0.6 * 1500 and n_rel > 0.1 * 1500


def test_relations_agree_with_boxes():
    inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
               "next to": "next to"}
    for i in range(100):
        scene = make_scene(SEED, i, 128, "train")
        for r in scene.relations:
            (ax, ay), (bx, by) = scene.objects[r.subject].center, scene.objects[r.object].center
            assert {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by,
                    "next to": True}[r.predicate]
            assert scene.holds(r.object, inverse[r.predicate], r.subject)


def test_dogs_on_beaches_are_common():
    hits = sum(
        1 for i in range(600)
        if (s := make_scene(0, i, 64, "train")).background == "beach"
        and any(o.category == "dog" for o in s.objects)
    )
    assert hits >= 6


# -- the stage --------------------------------------------------------------------------------
def test_cli_synth(tmp_path):
    out = tmp_path / "world"
    args = ["--root", str(tmp_path), "synth", "--out", str(out), "--images", "12", "--size", "64"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.kind == "raw" and m.params["images"] == 12 and m.stats["images"] == 12
    assert {"coco_train.json", "dataset_coco.json", SCENES_FILE} <= {f.path for f in m.files}
    assert "12 images" in r.output
    r = runner.invoke(app, args)
    assert r.exit_code != 0
    errors = [line for line in r.output.splitlines() if line.strip()]
    assert len(errors) == 1 and "--overwrite" in errors[0], r.output
    r = runner.invoke(app, [*args, "--overwrite", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert read_manifest(out).params["seed"] == 5


def test_cli_default_out(tmp_path):
    r = runner.invoke(app, ["--root", str(tmp_path), "synth", "--images", "3", "--size", "32"])
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path / "raw" / "synth-coco").kind == "raw"


@pytest.mark.parametrize("flags, words", [
    (["--images", "0"], ["--images", "at least 1"]),
    (["--images", "4", "--splits", "0.5,0.5,0.5"], ["--splits", "sum to 1"]),
    (["--images", "4", "--splits", "0.8,x,0.1"], ["--splits"]),
    (["--images", "4", "--tasks", "nope"], ["--tasks", "nope", *TASKS]),
    (["--images", "4", "--size", "8"], ["--size"]),
    (["--images", "4", "--workers", "none"], ["--workers"]),
])
def test_cli_bad_flags(tmp_path, flags, words):
    r = runner.invoke(app, ["--root", str(tmp_path), "synth", "--out", str(tmp_path / "w"), *flags])
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, r.output
    assert not (tmp_path / "w").exists()
