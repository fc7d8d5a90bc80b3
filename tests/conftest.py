"""Shared fixtures: a tiny dataset artifact built directly with the shard writer."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

# Wide, colourless rich output so tests can match table cells.
os.environ.setdefault("COLUMNS", "200")
os.environ.setdefault("NO_COLOR", "1")

from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.data.shards import ShardWriter

CAPTIONS = [
    "a dog on the beach next to an umbrella",
    "two red circles above a car on snow",
    "a puppy on the sand",
    "a blue star to the left of a house",
    "a cat and a tree in a field",
    "three dogs on the grass",
]


def png_bytes(color=(200, 30, 30), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_dataset(root: Path, name: str = "tiny", n_images: int = 6, captions_per_image: int = 2, shard_rows: int = 5):
    """Publish a dataset artifact with n_images x captions_per_image rows; returns the Artifact."""
    with ArtifactBuilder(artifact_path(root, "dataset", name), "dataset", params={"n": n_images}) as b:
        w = ShardWriter(b.dir, max_rows=shard_rows)
        for i in range(n_images):
            img = png_bytes((20 * i % 255, 100, 150))
            for j in range(captions_per_image):
                w.add({
                    "image_id": f"img{i}", "caption_id": f"img{i}-{j}",
                    "caption": CAPTIONS[(i + j) % len(CAPTIONS)],
                    "split": "train" if i < n_images - 2 else "test",
                    "image": img, "image_path": f"images/{i}.png", "width": 16, "height": 16,
                    "source": "fixture",
                })
        w.flush()
        return b.publish({"rows": w.rows_written})


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster when other processes share the
    two cores (torch's spinning worker threads then contend)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_dataset(tmp_path):
    return make_dataset(tmp_path / "artifacts")


# A tiny albef-tiny so a step takes milliseconds: 32 px images, 2+1 text/fusion layers.
TINY_MODEL = ["--set", "model.vision.image_size=32", "--set", "model.vision.depth=2",
              "--set", "model.text.text_layers=2", "--set", "model.text.fusion_layers=1",
              "--set", "model.queue_size=64", "--set", "train.warmup_steps=2"]


def run_cli(root, *args):
    """Invoke the vlpipe CLI in-process under ``--root root``; asserts success, returns the result."""
    from typer.testing import CliRunner

    from vlpipe.stages.cli import app

    r = CliRunner().invoke(app, ["--root", str(root), *map(str, args)])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory):
    """Artifacts root with raw synth output ``raw/w`` (40 images, 32 px), dataset ``w``, tokenizer ``tok``."""
    root = tmp_path_factory.mktemp("world") / "artifacts"
    raw = root / "raw" / "w"
    run_cli(root, "synth", "--out", raw, "--images", "40", "--size", "32", "--seed", "5")
    run_cli(root, "ingest", "karpathy", raw / "dataset_coco.json", "--images", raw, "--out", "w")
    run_cli(root, "tokenizer", "train", "--data", "w", "--vocab", "300", "--min-frequency", "1", "--out", "tok")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_world):
    """A checkpoint artifact ``ck`` pre-trained 6 steps on ``w`` (under the synthetic_world root)."""
    run_cli(synthetic_world, "pretrain", "--shards", "w", "--tokenizer", "tok", "--out", "ck",
            "--batch-size", "8", "--workers", "0", "--steps", "6", "--eval-split", "", *TINY_MODEL)
    return synthetic_world / "checkpoints" / "ck"
