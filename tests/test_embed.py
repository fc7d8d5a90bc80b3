"""`vlpipe embed` on the synthetic world: counts, norms, equality with direct encoding, resume, errors."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from vlpipe.retrieval import embed as lib
from vlpipe.stages.cli import app

from .conftest import run_cli

runner = CliRunner()



@pytest.fixture(scope="module")
def emb(tiny_checkpoint):
    """Embeddings ``emb-test`` of ``ck`` on split test of ``w`` (both modalities)."""
    root = tiny_checkpoint.parent.parent
    run_cli(root, "embed", "--checkpoint", "ck", "--data", "w", "--out", "emb-test", "--modality", "both",
            "--split", "test", "--workers", "0")
    return root, root / "embeddings" / "emb-test"


def _one(sql):
    return duckdb.connect().execute(sql).fetchone()


def _dataset_glob(root):
    return str(root / "datasets" / "w" / "part-*.parquet")


def _vectors(folder, modality):
    t = pq.read_table(sorted(folder.glob(f"{modality}-*.parquet")))
    return t, lib.vectors_to_numpy(t.column("vector"))


def test_counts_match_the_dataset_and_vectors_are_unit(emb):
    root, folder = emb
    images, texts = _one(
        f"select count(distinct image_id), count(*) from '{_dataset_glob(root)}' where split = 'test'"
    )
    img, iv = _vectors(folder, "image")
    txt, tv = _vectors(folder, "text")
    assert img.num_rows == images and txt.num_rows == texts
    assert len(set(img.column("id").to_pylist())) == images  # one row per image_id
    assert img.column("vector").type.value_type == "halffloat"
    np.testing.assert_allclose(np.linalg.norm(iv, axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(tv, axis=1), 1.0, atol=2e-3)
    assert set(img.column("split").to_pylist()) == {"test"}

    m = json.loads((folder / "manifest.json").read_text())
    assert m["kind"] == "embeddings"
    assert [(i["kind"], i["name"]) for i in m["inputs"]] == [("checkpoint", "ck"), ("dataset", "w")]
    s = m["stats"]
    assert s["images"] == images and s["texts"] == texts and s["dim"] == iv.shape[1] == 128
    assert s["splits"] == ["test"] and s["image_size"] == 32 and s["items_per_s"] > 0
    assert m["params"]["checkpoint_content_id"] == s["checkpoint_content_id"]


def test_vectors_equal_direct_encoding(emb, tiny_checkpoint):
    from vlpipe.data.transforms import ImageTransform, decode
    from vlpipe.train.pretrain import load_checkpoint

    root, folder = emb
    img, iv = _vectors(folder, "image")
    txt, tv = _vectors(folder, "text")
    model, cfg, tok = load_checkpoint(tiny_checkpoint)
    rows = duckdb.connect().execute(
        f"select image_id, any_value(image) as image, any_value(image_path) as path "
        f"from '{_dataset_glob(root)}' where split = 'test' group by image_id"
    ).fetchall()
    by_id = {r[0]: (r[1], r[2]) for r in rows}
    transform = ImageTransform(cfg.model.vision.image_size, train=False)
    batch = torch.stack([transform(decode(*by_id[i]))[0] for i in img.column("id").to_pylist()])
    with torch.no_grad():
        _, direct = model.encode_image(batch)
        enc = tok(txt.column("caption").to_pylist(), padding="longest", truncation=True,
                  max_length=cfg.model.text.max_len, return_tensors="pt")
        _, direct_t = model.encode_text(enc["input_ids"], enc["attention_mask"])
    np.testing.assert_allclose(iv, direct.numpy(), atol=2e-3)
    np.testing.assert_allclose(tv, direct_t.numpy(), atol=2e-3)


def test_text_rows_join_back_to_captions(emb):
    root, folder = emb
    con = duckdb.connect()
    n, bad = con.execute(
        f"select count(*), count(*) filter (where e.caption <> d.caption or e.image_id <> d.image_id "
        f"or e.split <> d.split) from '{folder}/text-*.parquet' e join '{_dataset_glob(root)}' d "
        f"on e.id = d.caption_id"
    ).fetchone()
    total = con.execute(f"select count(*) from '{folder}/text-*.parquet'").fetchone()[0]
    assert n == total and bad == 0
    # every caption's image is one of the embedded images
    orphans = con.execute(
        f"select count(*) from '{folder}/text-*.parquet' t anti join '{folder}/image-*.parquet' i using (image_id)"
    ).fetchone()[0]
    assert orphans == 0


def _embed(root, out, *extra):
    return runner.invoke(app, ["--root", str(root), "embed", "--checkpoint", "ck", "--data", "w", "--out", out,
                               "--split", "test", "--shard-rows", "3", "--batch-size", "2", "--workers", "0",
                               *extra])


def test_resume_after_a_crash_equals_a_clean_run(emb, monkeypatch):
    root, _ = emb
    r = _embed(root, "clean")
    assert r.exit_code == 0, r.output

    real = lib.write_embeddings_shard
    calls = []

    def crash_after_first(path, meta, vectors):
        if calls:
            raise RuntimeError("simulated crash")
        calls.append(path)
        real(path, meta, vectors)

    monkeypatch.setattr(lib, "write_embeddings_shard", crash_after_first)
    r = _embed(root, "resumed")
    assert r.exit_code != 0 and isinstance(r.exception, RuntimeError)
    partial = root / "embeddings" / ".partial-resumed"
    assert (partial / "image-00000.parquet").exists() and not (partial / "image-00001.parquet").exists()
    state = json.loads((partial / "_state.json").read_text())["state"]
    assert state["done"] == ["image-00000.parquet"]
    monkeypatch.setattr(lib, "write_embeddings_shard", real)

    r = _embed(root, "resumed")  # without --resume: refuses to clobber the partial work
    assert r.exit_code == 2 and "--resume" in r.output
    r = _embed(root, "resumed", "--resume")
    assert r.exit_code == 0, r.output

    clean = json.loads((root / "embeddings" / "clean" / "manifest.json").read_text())
    resumed = json.loads((root / "embeddings" / "resumed" / "manifest.json").read_text())
    assert resumed["stats"]["resumed_shards"] == 1
    assert [f["path"] for f in clean["files"]] == [f["path"] for f in resumed["files"]]
    assert len(clean["files"]) == 2 + 7  # 4 images / 3 per shard, 20 captions / 3 per shard
    for name in (f["path"] for f in clean["files"]):
        a = pq.read_table(root / "embeddings" / "clean" / name)
        b = pq.read_table(root / "embeddings" / "resumed" / name)
        assert a.equals(b), name
    assert clean["content_id"] == resumed["content_id"]


def test_wrong_kind_and_empty_split_are_one_line_errors(emb):
    root, _ = emb
    r = runner.invoke(app, ["--root", str(root), "embed", "--checkpoint", "w", "--data", "w", "--out", "x"])
    assert r.exit_code == 2, r.output
    assert "checkpoint" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) <= 2  # one line (may wrap once)
    r = runner.invoke(app, ["--root", str(root), "embed", "--checkpoint", "ck", "--data", "w", "--out", "x",
                            "--split", "nosuch"])
    assert r.exit_code == 2 and "no rows in split" in r.output
    assert not (root / "embeddings" / "x").exists() and not (root / "embeddings" / ".partial-x").exists()
