"""`vlpipe retrieve`: text -> image (and image -> text) over an index, with and without ITM rerank.

The index is built here with the library (embed + build_index + save_index, manifests carrying the
lineage index -> embeddings -> checkpoint, dataset), so these tests do not depend on the embed and
index stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import run_cli
from vlpipe.artifacts import ArtifactBuilder, artifact_path, resolve
from vlpipe.data.shards import list_shards
from vlpipe.retrieval.embed import embed_images, embed_texts, load_eval_set
from vlpipe.retrieval.index import build_index, choose_layout, save_index
from vlpipe.retrieval.schema import embeddings_schema
from vlpipe.stages.cli import app
from vlpipe.train.pretrain import load_checkpoint



def build_test_index(root: Path, checkpoint: str, dataset: str, name: str, modality: str = "image",
                     split: str | None = None, drop_paths: bool = False) -> Path:
    """Embed a dataset with a checkpoint and publish an embeddings artifact and a flat index over it.

    ``drop_paths``: store null image paths (so the rerank must read the dataset's image bytes)."""
    ck, ds = resolve(checkpoint, "checkpoint", root), resolve(dataset, "dataset", root)
    model, cfg, tok = load_checkpoint(ck.path)
    es = load_eval_set(list_shards(ds.path), split)
    if modality == "image":
        vec = embed_images(model, es.image_bytes, es.image_paths, cfg.model.vision.image_size, 64)
        ids = {"id": es.image_ids, "image_id": es.image_ids, "caption": [None] * len(es),
               "image_path": [None] * len(es) if drop_paths else es.image_paths}
    else:
        vec = embed_texts(model, tok, es.captions, 64, max_len=cfg.model.text.max_len)
        ids = {"id": es.caption_ids, "image_id": [es.image_ids[i] for i in es.text_to_image],
               "caption": es.captions, "image_path": [es.image_paths[i] for i in es.text_to_image]}
    ids["split"] = [split or "all"] * len(vec)
    vec = vec.numpy().astype(np.float32)
    dim = vec.shape[1]
    emb_name = f"{name}-emb"
    with ArtifactBuilder(artifact_path(root, "embeddings", emb_name), "embeddings",
                         params={"modality": modality}, inputs=[ck, ds]) as b:
        table = pa.table({**ids, "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(vec.astype(np.float16).reshape(-1)), dim)}, schema=embeddings_schema(dim))
        pq.write_table(table, b.dir / f"{modality}-00000.parquet")
        emb = b.publish()
    layout = choose_layout(len(vec), dim, 1 << 30, "flat")
    index = build_index(layout, dim, lambda: [vec])
    with ArtifactBuilder(artifact_path(root, "index", name), "index", params={"factory": layout.factory},
                         inputs=[emb]) as b:
        save_index(b.dir, index, table.drop_columns(["vector"]))
        b.publish()
    return artifact_path(root, "index", name)


@pytest.fixture(scope="module")
def image_index(tiny_checkpoint):
    root = tiny_checkpoint.parents[1]
    build_test_index(root, "ck", "w", "ti")
    return root


def _json(root, *args):
    r = run_cli(root, "retrieve", "--json", "--device", "cpu", *args)
    return json.loads(r.stdout)


def test_json_returns_k_hits_with_fields(image_index):
    out = _json(image_index, "--index", "ti", "--query", "a dog on the beach", "--k", "5")
    assert out["checkpoint"] == "ck" and out["index"] == "ti" and out["rerank"] == 16
    hits = out["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for h in hits:
        assert {"id", "image_id", "image_path", "itc", "itm", "p_match", "score", "reranked"} <= set(h)
        assert h["reranked"] and h["itm"] is not None and 0.0 <= h["p_match"] <= 1.0
    assert set(out["timing_ms"]) >= {"encode_ms", "search_ms", "rerank_ms"}


def test_rerank_orders_by_itm_and_zero_keeps_itc_order(image_index):
    q = "two red circles above a car"
    itc = _json(image_index, "--index", "ti", "--query", q, "--k", "8", "--rerank", "0")["results"]
    assert all(h["itm"] is None and not h["reranked"] for h in itc)
    scores = [h["itc"] for h in itc]
    assert scores == sorted(scores, reverse=True)
    assert [h["score"] for h in itc] == scores

    rr = _json(image_index, "--index", "ti", "--query", q, "--k", "8", "--rerank", "8")["results"]
    itm = [h["itm"] for h in rr]
    assert itm == sorted(itm, reverse=True)  # re-ordered by the ITM score
    assert {h["id"] for h in rr} == {h["id"] for h in itc}  # the same 8 candidates
    both = _json(image_index, "--index", "ti", "--query", q, "--k", "8", "--rerank", "8",
                 "--rerank-score", "itm+itc")["results"]
    combined = [h["score"] for h in both]
    assert combined == sorted(combined, reverse=True)
    for h in both:
        assert h["score"] == pytest.approx(h["itm"] + h["itc"], abs=1e-4)
    logit = _json(image_index, "--index", "ti", "--query", q, "--k", "8", "--rerank", "8",
                  "--rerank-score", "itm+itc/temp")["results"]
    temp = load_checkpoint(resolve("ck", "checkpoint", image_index).path)[0].itc_temperature()
    for h in logit:
        assert h["score"] == pytest.approx(h["itm"] + h["itc"] / temp, rel=1e-4, abs=1e-3)


def test_rerank_fewer_than_k_puts_the_rest_in_itc_order(image_index):
    rr = _json(image_index, "--index", "ti", "--query", "a cat", "--k", "10", "--rerank", "3")["results"]
    assert [h["reranked"] for h in rr] == [True] * 3 + [False] * 7
    tail = [h["itc"] for h in rr[3:]]
    assert tail == sorted(tail, reverse=True)


def test_dataset_bytes_when_paths_are_null(tiny_checkpoint):
    root = tiny_checkpoint.parents[1]
    build_test_index(root, "ck", "w", "ti-nopath", split="test", drop_paths=True)
    out = _json(root, "--index", "ti-nopath", "--query", "a dog", "--k", "3", "--rerank", "4")
    assert len(out["results"]) == 3 and all(h["image_path"] is None and h["itm"] is not None for h in out["results"])


def test_table_and_verbose_latency(image_index):
    r = run_cli(image_index, "retrieve", "--index", "ti", "--query", "a dog", "--k", "3", "--verbose")
    assert "ITM" in r.stdout and "latency:" in r.stdout and "rerank" in r.stdout


def test_queries_file_writes_results_artifact(image_index, tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("a dog on the beach\n\nthree dogs on the grass\na blue star\n")
    run_cli(image_index, "retrieve", "--index", "ti", "--queries", f, "--k", "4", "--rerank", "6", "--out", "qres")
    art = resolve("qres", "results", image_index)
    assert {i["kind"] for i in art.manifest.inputs} >= {"index", "checkpoint"}
    t = pq.read_table(art.path / "results.parquet")
    assert {"query", "rank", "id", "image_id", "itc", "itm", "score"} <= set(t.column_names)
    assert t.num_rows == 12 and sorted(set(t.column("query").to_pylist())) == sorted(
        ["a dog on the beach", "three dogs on the grass", "a blue star"])
    assert art.manifest.stats["queries"] == 3


def test_image_query_over_caption_index(tiny_checkpoint):
    root = tiny_checkpoint.parents[1]
    build_test_index(root, "ck", "w", "tt", modality="text", split="test")
    img = next((root / "raw" / "w").rglob("*.jpg"))
    out = _json(root, "--index", "tt", "--image", img, "--k", "4", "--rerank", "6")
    assert out["mode"] == "image->text" and len(out["results"]) == 4
    assert all(h["caption"] and h["itm"] is not None for h in out["results"])
    # a text query against a caption index is refused in one line
    r = CliRunner().invoke(app, ["--root", str(root), "retrieve", "--index", "tt", "--query", "a dog"])
    assert r.exit_code == 2 and "--image" in r.output and "Traceback" not in r.output


def test_missing_index_is_a_one_line_error(tmp_path):
    r = CliRunner().invoke(app, ["--root", str(tmp_path), "retrieve", "--index", "ghost", "--query", "a dog"])
    assert r.exit_code == 2
    assert "ghost" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
