"""`vlpipe index build|info` over embeddings of the synthetic world; streaming exact search."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from vlpipe.retrieval import embed as emb
from vlpipe.retrieval.index import IDS_FILE, exact_search_streaming, evaluate_index, load_index
from vlpipe.stages.cli import app

from .conftest import run_cli

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tiny_checkpoint):
    """Embeddings ``ix-emb`` of every split of ``w`` (40 images, 200 captions), decoded by 2 workers."""
    root = tiny_checkpoint.parent.parent
    run_cli(root, "embed", "--checkpoint", "ck", "--data", "w", "--out", "ix-emb", "--split", "all",
            "--batch-size", "8", "--workers", "2", "--shard-rows", "16")
    return root


@pytest.fixture(scope="module")
def flat(world):
    run_cli(world, "index", "build", "--embeddings", "ix-emb", "--out", "ix-flat", "--kind", "flat")
    return world / "indexes" / "ix-flat"


def test_flat_index_is_exact_and_complete(world, flat):
    m = json.loads((flat / "manifest.json").read_text())
    s = m["stats"]
    assert m["kind"] == "index" and [i["name"] for i in m["inputs"]] == ["ix-emb"]
    assert s["factory"] == "Flat" and s["rows"] == 40 and s["dim"] == 128
    assert s["recall_at_10"] == 1.0 and s["eval_queries"] == 40 and s["qps"] > 0
    assert s["lineage"] == {"embeddings": "ix-emb", "checkpoint": "ck", "dataset": "w"}
    index, ids = load_index(flat)
    assert ids.num_rows == index.ntotal == 40
    assert pq.read_table(flat / IDS_FILE).column_names == ["id", "image_id", "caption", "image_path", "split"]

    # a stored vector finds its own row first
    files = emb.embedding_files(world / "embeddings" / "ix-emb", "image")
    vectors = np.concatenate(list(emb.iter_vectors(files)))
    stored_ids = pq.read_table(files, columns=["id"]).column("id").to_pylist()
    assert ids.column("id").to_pylist() == stored_ids
    for row in (0, 17, 39):
        scores, got = index.search(vectors[row:row + 1], 3)
        assert got[0, 0] == row and scores[0, 0] == pytest.approx(1.0, abs=2e-3)


def test_index_info_shows_the_manifest(world, flat):
    r = run_cli(world, "index", "info", "ix-flat")
    out = r.output
    for needle in ("Flat", "recall@10", "1.0000", "queries/s", "build time", "index on disk",
                   "embeddings ix-emb -> checkpoint ck -> dataset w"):
        assert needle in out, needle
    r = runner.invoke(app, ["--root", str(world), "index", "info", "ix-emb"])  # not an index
    assert r.exit_code == 2 and "index" in r.output and "Traceback" not in r.output


def test_hnsw_on_texts(world):
    run_cli(world, "index", "build", "--embeddings", "ix-emb", "--out", "ix-hnsw", "--kind", "hnsw",
            "--modality", "text", "--eval-queries", "50")
    folder = world / "indexes" / "ix-hnsw"
    s = json.loads((folder / "manifest.json").read_text())["stats"]
    assert s["factory"].startswith("HNSW") and s["ef_search"] > 0 and s["rows"] == 200
    assert s["eval_queries"] == 50 and s["recall_at_10"] >= 0.9
    index, ids = load_index(folder)
    assert index.ntotal == ids.num_rows == 200
    assert ids.column("caption").null_count == 0


def test_refusals_are_one_line_errors(world):
    def build(*args):
        return runner.invoke(app, ["--root", str(world), "index", "build", "--embeddings", "ix-emb", *args])

    r = build("--out", "bad", "--metric", "l2")
    assert r.exit_code == 2 and "--metric l2" in r.output and "only 'ip'" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2
    r = build("--out", "bad", "--kind", "ivfpq")  # 40 vectors cannot train 8-bit PQ
    assert r.exit_code == 2 and "flat or hnsw" in r.output
    r = build("--out", "bad", "--memory-budget", "lots")
    assert r.exit_code == 2 and "4GB" in r.output
    r = runner.invoke(app, ["--root", str(world), "index", "build", "--embeddings", "ck", "--out", "bad"])
    assert r.exit_code == 2 and "embeddings" in r.output
    assert not (world / "indexes" / "bad").exists()


def test_worker_decoding_matches_in_process(world):
    """The chunk image reader yields every position once and the same tensors with 0 or 2 workers."""
    plan = emb.plan_embeddings(sorted((world / "datasets" / "w").glob("part-*.parquet")), None)
    chunk = plan.chunks("image", 25)[0]
    data = emb._ChunkImages(plan.files, plan.image_loc[chunk.start:chunk.stop],
                            plan.image_path[chunk.start:chunk.stop], 32)

    def collect(workers):
        out = {}
        for pos, img, err in torch.utils.data.DataLoader(data, batch_size=4, num_workers=workers):
            assert not any(err)
            out.update({int(p): t for p, t in zip(pos, img)})
        return out

    a, b = collect(0), collect(2)
    assert sorted(a) == sorted(b) == list(range(25))
    assert all(torch.equal(a[i], b[i]) for i in a)


def test_streaming_exact_search_and_tie_aware_recall():
    import faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[250:300] = x[200:250]  # exact duplicates: ties that id overlap would count as misses
    q = x[rng.choice(500, 40, replace=False)]
    scores, ids, _ = exact_search_streaming(q, (x[i:i + 64] for i in range(0, 500, 64)), 10, block=16)
    brute = q @ x.T
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1)[:, :10], atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(brute, ids, axis=1), scores, atol=1e-6)

    flat = faiss.IndexFlatIP(16)
    flat.add(x)
    ev = evaluate_index(flat, q, lambda: iter([x]), k=10)
    assert ev["recall"] == 1.0 and ev["recall_ids"] <= 1.0 and ev["qps"] > 0


def test_ivfpq_streams_several_shards(tmp_path):
    """IVF-PQ on a hand-made embeddings artifact (3 shards of random-plus-clustered 16-d vectors)."""
    import pyarrow as pa

    from vlpipe.artifacts import ArtifactBuilder, artifact_path

    root = tmp_path / "artifacts"
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 16))
    x = np.concatenate([centres[rng.integers(0, 20, 1500)] + 0.2 * rng.normal(size=(1500, 16)),
                        rng.normal(size=(500, 16))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with ArtifactBuilder(artifact_path(root, "embeddings", "rand"), "embeddings", params={}) as b:
        for i, lo in enumerate(range(0, 2000, 700)):
            n = min(700, 2000 - lo)
            ids = [f"v{j}" for j in range(lo, lo + n)]
            meta = pa.table({"id": ids, "image_id": ids, "caption": pa.nulls(n, pa.string()),
                             "image_path": pa.nulls(n, pa.string()), "split": ["test"] * n})
            emb.write_embeddings_shard(b.dir / emb.shard_file("image", i), meta, x[lo:lo + n])
        b.publish({})
    run_cli(root, "index", "build", "--embeddings", "rand", "--out", "pq", "--kind", "ivfpq",
            "--train-rows", "1000", "--eval-queries", "100")
    s = json.loads((root / "indexes" / "pq" / "manifest.json").read_text())["stats"]
    assert s["factory"].startswith("IVF") and s["factory"].endswith("np") and s["nprobe"] >= 1
    assert s["rows"] == 2000 and s["train_rows"] == 1000 and s["recall_at_10"] >= 0.3
    index, ids = load_index(root / "indexes" / "pq")
    assert index.ntotal == ids.num_rows == 2000 and ids.column("id")[1999].as_py() == "v1999"
    r = runner.invoke(app, ["--root", str(root), "index", "build", "--embeddings", "rand", "--out", "pq2",
                            "--kind", "ivfpq", "--train-rows", "100"])
    assert r.exit_code == 2 and "256" in r.output
