"""Stages under torchrun with 2 CPU processes (gloo): pretrain, finetune retrieval and embed agree across ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from .conftest import TINY_MODEL


@pytest.mark.slow
def test_torchrun_two_ranks_agree(synthetic_world):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.fail("torchrun not found next to the Python interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vlpipe.stages.cli",
           "--root", str(synthetic_world), "pretrain", "--shards", "w", "--tokenizer", "tok",
           "--out", "ddp", "--batch-size", "4", "--workers", "0", "--steps", "3",
           "--checkpoint-every", "2", "--eval-split", "", "--device", "cpu", *TINY_MODEL]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folder = synthetic_world / "checkpoints" / "ddp"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stats"]["world_size"] == 2
    assert manifest["stats"]["ranks_in_sync"] is True
    assert manifest["params"]["world_size"] == 2
    rows = pq.read_table(folder / "metrics.parquet").to_pylist()
    assert [x["step"] for x in rows] == [1, 2, 3]
    # global batch = 4 per rank x 2 ranks
    assert all(x["loss"] == x["loss"] for x in rows)


@pytest.mark.slow
def test_torchrun_finetune_retrieval_two_ranks_agree(tiny_checkpoint):
    """`vlpipe finetune retrieval` under torchrun: gathered ITC/ITM, DDP, one artifact, ranks in sync."""
    root = tiny_checkpoint.parents[1]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.fail("torchrun not found next to the Python interpreter")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vlpipe.stages.cli", "--root", str(root),
           "finetune", "retrieval", "--checkpoint", "ck", "--data", "w", "--out", "ddp-rt", "--batch-size", "4",
           "--workers", "0", "--steps", "3", "--checkpoint-every", "2", "--image-size", "48", "--eval-split", "",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folder = root / "checkpoints" / "ddp-rt"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stats"]["world_size"] == 2 and manifest["stats"]["ranks_in_sync"] is True
    assert json.loads((folder / "config.json").read_text())["image_size"] == 48
    rows = pq.read_table(folder / "metrics.parquet").to_pylist()
    assert [x["step"] for x in rows] == [1, 2, 3] and all(x["loss_itm"] == x["loss_itm"] for x in rows)


@pytest.mark.slow
def test_torchrun_embed_two_ranks_equals_one_process(tiny_checkpoint):
    """`vlpipe embed` under torchrun: the ranks split the chunks; the artifact equals a single-process run."""
    from vlpipe.retrieval.embed import vectors_to_numpy

    from .conftest import run_cli

    root = tiny_checkpoint.parents[1]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.fail("torchrun not found next to the Python interpreter")
    common = ["--checkpoint", "ck", "--data", "w", "--modality", "both", "--split", "all", "--workers", "0",
              "--shard-rows", "16", "--device", "cpu"]
    run_cli(root, "embed", *common, "--out", "emb-one")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vlpipe.stages.cli", "--root", str(root),
           "embed", *common, "--out", "emb-ddp"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    one, two = root / "embeddings" / "emb-one", root / "embeddings" / "emb-ddp"
    shards = sorted(p.name for p in one.glob("*-*.parquet"))
    assert len(shards) >= 4, "the test needs several chunks so that both ranks get work"
    assert shards == sorted(p.name for p in two.glob("*-*.parquet"))
    for name in shards:
        a, b = pq.read_table(one / name), pq.read_table(two / name)
        assert a.drop(["vector"]).equals(b.drop(["vector"])), name
        va, vb = vectors_to_numpy(a.column("vector")), vectors_to_numpy(b.column("vector"))
        assert abs(va.astype("float32") - vb.astype("float32")).max() < 2e-3, name
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["stats"]["world_size"] == 2
