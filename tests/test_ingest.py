"""`vlpipe ingest`: end to end through the CLI, rejects with reasons, errors, crash + resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.test_readers import image_bytes, make_karpathy_coco, make_tar, write_image
from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.data import ingest as ingest_mod
from vlpipe.data.images import ImageProblem, probe_image
from vlpipe.data.ingest import ingest, resolve_store_images
from vlpipe.data.readers import read_karpathy
from vlpipe.data.shards import DATASET_SCHEMA, REJECTS_SCHEMA, list_shards
from vlpipe.stages.cli import app

runner = CliRunner()


def cli(tmp_path: Path, *args: str):
    return runner.invoke(app, ["--root", str(tmp_path / "artifacts"), "ingest", *map(str, args)])


def dataset_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "artifacts" / "datasets" / name


def read_rows(folder: Path) -> list[dict]:
    return [row for p in list_shards(folder) for row in pq.read_table(p).to_pylist()]


def rejects_of(folder: Path) -> dict[str, str]:
    return {r["caption_id"] or r["image_id"]: r["reason"] for r in pq.read_table(folder / "rejects.parquet").to_pylist()}


def make_bad_karpathy(folder: Path) -> Path:
    """A Karpathy file whose images/captions each show one problem."""
    good = image_bytes(size=(32, 24))
    d = folder / "val2014"
    d.mkdir(parents=True)
    files = {
        "good.jpg": good,
        "corrupt.jpg": b"definitely not an image " * 20,
        "truncated.jpg": image_bytes("JPEG", size=(64, 64))[:200],
        "empty.jpg": b"",
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    captions = {
        "good.jpg": ["  A dog\tplays\n in the  snow. ", "", "   \t ", "caf\u00e9 ok"],
        "corrupt.jpg": ["c"], "truncated.jpg": ["t"], "empty.jpg": ["e"], "missing.jpg": ["m"],
    }
    images = []
    for i, (name, caps) in enumerate(captions.items()):
        images.append({"filepath": "val2014", "filename": name, "imgid": i, "split": "test", "cocoid": i,
                       "sentences": [{"raw": c, "tokens": [], "imgid": i, "sentid": k} for k, c in enumerate(caps)]})
    path = folder / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


# -- happy path -----------------------------------------------------------------------------------------
def test_ingest_karpathy_end_to_end(tmp_path):
    src = make_karpathy_coco(tmp_path / "raw", n_images=4, captions=3)
    r = cli(tmp_path, "karpathy", src, "--out", "coco", "--shard-rows", "5")
    assert r.exit_code == 0, r.output
    assert "kept rows" in r.output and "12" in r.output
    folder = dataset_dir(tmp_path, "coco")
    rows = read_rows(folder)
    assert len(rows) == 12 and len(list_shards(folder)) == 3
    assert pq.read_schema(list_shards(folder)[0]).equals(DATASET_SCHEMA, check_metadata=False)
    first = rows[0]
    assert first["image_id"] == "coco_1000" and first["caption_id"] == "coco_1000#0"
    assert first["caption"] == "Image 0 caption 0." and first["split"] == "train"
    assert first["image"] == Path(first["image_path"]).read_bytes()  # auto: small dataset -> bytes stored
    assert (first["width"], first["height"]) == (12, 9) and rows[3]["width"] == 13
    assert first["source"] == "karpathy:dataset_coco.json"

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "dataset" and manifest["params"]["format"] == "karpathy"
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"part-00000.parquet", "part-00001.parquet", "part-00002.parquet", "rejects.parquet"}
    assert sum(f["rows"] for p, f in files.items() if p.startswith("part-")) == 12
    assert all(len(f["sha256"]) == 64 for f in files.values())
    stats = manifest["stats"]
    assert stats["rows"] == 12 and stats["images"] == 4 and stats["shards"] == 3 and stats["rejects"] == {}
    assert stats["images_checked"] == 4  # each image decoded once for its 3 captions
    assert not list((tmp_path / "artifacts" / "datasets").glob(".partial-*"))

    # rerun without --overwrite refuses; with it, replaces
    r = cli(tmp_path, "karpathy", src, "--out", "coco")
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = cli(tmp_path, "karpathy", src, "--out", "coco", "--overwrite", "--store-images", "no")
    assert r.exit_code == 0, r.output
    rows = read_rows(folder)
    assert rows[0]["image"] is None and os.path.isfile(rows[0]["image_path"])


def test_bad_rows_are_rejected_with_reasons(tmp_path):
    src = make_bad_karpathy(tmp_path / "raw")
    r = cli(tmp_path, "karpathy", src, "--out", "bad")
    assert r.exit_code == 0, r.output
    folder = dataset_dir(tmp_path, "bad")
    rows = read_rows(folder)
    assert [(x["caption_id"], x["caption"]) for x in rows] == [("coco_0#0", "A dog plays in the snow."),
                                                              ("coco_0#3", "caf\u00e9 ok")]
    assert rejects_of(folder) == {
        "coco_0#1": "empty_caption", "coco_0#2": "empty_caption", "coco_1#0": "corrupt_image",
        "coco_2#0": "truncated_image", "coco_3#0": "empty_image", "coco_4#0": "missing_image",
    }
    assert pq.read_schema(folder / "rejects.parquet").equals(REJECTS_SCHEMA, check_metadata=False)
    stats = json.loads((folder / "manifest.json").read_text())["stats"]
    assert stats["rejects"]["empty_caption"] == 2 and stats["rejected"] == 6
    assert "truncated_image" in r.output and "rejects.parquet" in r.output

    # verification off: decodable-or-not is not checked, but missing and empty files still are
    r = cli(tmp_path, "karpathy", src, "--out", "fast", "--no-verify-images")
    assert r.exit_code == 0, r.output
    rejects = rejects_of(dataset_dir(tmp_path, "fast"))
    assert rejects["coco_4#0"] == "missing_image" and rejects["coco_3#0"] == "empty_image"
    assert "coco_1#0" not in rejects and "coco_2#0" not in rejects


def test_non_utf8_captions_in_tar_and_tsv(tmp_path):
    jpg = image_bytes()
    make_tar(tmp_path / "00000.tar", [
        {"__key__": "000", "jpg": jpg, "txt": b"fine caption"},
        {"__key__": "001", "jpg": jpg, "txt": b"caf\xe9 in latin-1"},
        {"__key__": "002", "jpg": b"garbage", "txt": b"bad image"},
    ])
    r = cli(tmp_path, "webdataset", tmp_path / "00000.tar", "--out", "wds")
    assert r.exit_code == 0, r.output
    folder = dataset_dir(tmp_path, "wds")
    assert [x["caption"] for x in read_rows(folder)] == ["fine caption"]
    assert read_rows(folder)[0]["image"] == jpg
    assert rejects_of(folder) == {"001#0": "non_utf8", "002#0": "corrupt_image"}

    write_image(tmp_path / "imgs" / "a.jpg")
    with open(os.path.join(os.fsencode(tmp_path / "imgs"), b"caf\xe9.jpg"), "wb") as f:  # a Latin-1 file name
        f.write(image_bytes())
    (tmp_path / "cc.tsv").write_bytes(b"a caption\timgs/a.jpg\n\xff\xfe\timgs/a.jpg\nx\thttps://a/b.jpg\n"
                                      b"latin-1 name\timgs/caf\xe9.jpg\n")
    r = cli(tmp_path, "cc3m", tmp_path / "cc.tsv", "--out", "cc")
    assert r.exit_code == 0, r.output
    rejects = pq.read_table(dataset_dir(tmp_path, "cc") / "rejects.parquet").to_pylist()
    assert [(x["caption_id"], x["reason"]) for x in rejects] == [
        ("cc.tsv:2", "non_utf8"), ("cc.tsv:3", "url_not_local"), ("cc.tsv:4", "non_utf8")]
    assert rejects[0]["caption"] == "\ufffd\ufffd" and rejects[2]["image_path"].endswith("caf\ufffd.jpg")


def test_other_formats_through_cli(tmp_path):
    write_image(tmp_path / "pics" / "a.jpg")
    (tmp_path / "pics" / "a.txt").write_text("one\ntwo\n")
    r = cli(tmp_path, "folder", tmp_path / "pics", "--out", "f", "--split", "val")
    assert r.exit_code == 0, r.output
    assert [(x["caption"], x["split"]) for x in read_rows(dataset_dir(tmp_path, "f"))] == [("one", "val"), ("two", "val")]
    (tmp_path / "pics" / "t.jsonl").write_text(json.dumps({"image": "a.jpg", "caption": "json line"}) + "\n")
    r = cli(tmp_path, "jsonl", tmp_path / "pics" / "t.jsonl", "--out", "j")
    assert r.exit_code == 0, r.output
    (tmp_path / "pics" / "t.csv").write_text("file,text\na.jpg,csv row\n")
    r = cli(tmp_path, "csv", tmp_path / "pics" / "t.csv", "--out", "c", "--image-col", "file", "--caption-col", "text")
    assert r.exit_code == 0, r.output
    assert read_rows(dataset_dir(tmp_path, "c"))[0]["caption"] == "csv row"


# -- errors stop before anything is created ---------------------------------------------------------------
@pytest.mark.parametrize("fmt,name,content,message", [
    ("karpathy", "dataset_coco.json", '{"images": [\n  {"filename": "a.jpg",\n    "split" "train"}]}',
     "dataset_coco.json: not valid JSON at line 3 column"),
    ("coco", "captions_train2014.json", '{"images": [], "info": {}}',
     "captions_train2014.json: missing key 'annotations' (expected a COCO captions file"),
    ("karpathy", "captions_val2014.json", '{"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": []}',
     "captions_val2014.json: images[0] has no key 'filename'"),
    ("coco", "captions_train2014.json", '[{"image": "a.jpg", "caption": "x"}]',
     "captions_train2014.json: top level is a JSON list"),
])
def test_malformed_inputs_one_line_error(tmp_path, fmt, name, content, message):
    (tmp_path / name).write_text(content)
    r = cli(tmp_path, fmt, tmp_path / name, "--out", "x")
    assert r.exit_code == 2, r.output
    assert message in r.output.replace("\n", " ") or message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2  # one line (may wrap once)
    assert not (tmp_path / "artifacts").exists()


def test_missing_and_empty_inputs(tmp_path):
    r = cli(tmp_path, "karpathy", tmp_path / "nope.json", "--out", "x")
    assert r.exit_code == 2 and "nope.json: no such file" in r.output
    r = cli(tmp_path, "karpathy", "--out", "x")
    assert r.exit_code == 2 and "no Karpathy or ALBEF json file given" in r.output
    r = cli(tmp_path, "webdataset", str(tmp_path / "*.tar"), "--out", "x")
    assert r.exit_code == 2 and "no tar shard matches" in r.output
    r = cli(tmp_path, "karpathy", tmp_path, "--out", "x", "--shard-size", "12XB")
    assert r.exit_code == 2 and "--shard-size" in r.output
    assert not (tmp_path / "artifacts").exists()


def test_everything_rejected_publishes_nothing(tmp_path):
    (tmp_path / "urls.tsv").write_text("a\thttp://x/1.jpg\nb\thttp://x/2.jpg\n")
    r = cli(tmp_path, "cc3m", tmp_path / "urls.tsv", "--out", "u")
    assert r.exit_code == 2 and "url_not_local" in r.output and "no usable rows" in r.output
    assert not dataset_dir(tmp_path, "u").exists()
    assert not list((tmp_path / "artifacts" / "datasets").glob(".partial-*"))


# -- crash and resume ---------------------------------------------------------------------------------
@pytest.mark.parametrize("crash", [KeyboardInterrupt, RuntimeError])
def test_crash_then_resume_equals_clean_run(tmp_path, monkeypatch, crash):
    src = make_karpathy_coco(tmp_path / "raw", n_images=9, captions=3)
    bad = tmp_path / "raw" / "val2014" / "COCO_val2014_000000001004.jpg"
    bad.write_bytes(b"broken")  # a reject before and after the crash point
    args = ["karpathy", src, "--shard-rows", "4", "--store-images", "yes"]
    assert cli(tmp_path, *args, "--out", "clean").exit_code == 0
    clean = dataset_dir(tmp_path, "clean")

    real_flush = ingest_mod.ColumnShardWriter.flush
    calls = {"n": 0}

    def flaky_flush(self, nbytes=None):
        real_flush(self, nbytes)
        calls["n"] += 1
        if calls["n"] == 3:  # the 3rd shard is on disk but not yet recorded in the state
            raise crash("simulated crash")

    monkeypatch.setattr(ingest_mod.ColumnShardWriter, "flush", flaky_flush)
    r = cli(tmp_path, *args, "--out", "again")
    assert r.exit_code != 0
    if crash is KeyboardInterrupt:
        assert r.exit_code == 130 and "--resume" in r.output
    partial = tmp_path / "artifacts" / "datasets" / ".partial-again"
    assert not (dataset_dir(tmp_path, "again") / "manifest.json").exists()
    assert len(list_shards(partial)) == 3
    monkeypatch.setattr(ingest_mod.ColumnShardWriter, "flush", real_flush)

    r = cli(tmp_path, *args, "--out", "again")  # neither --resume nor --overwrite: refuse
    assert r.exit_code == 2 and "--resume" in r.output
    r = cli(tmp_path, *args, "--out", "again", "--shard-rows", "5", "--resume")  # other params: refuse
    assert r.exit_code == 2 and "other parameters" in r.output
    r = cli(tmp_path, *args, "--out", "again", "--resume")
    assert r.exit_code == 0, r.output
    again = dataset_dir(tmp_path, "again")
    assert read_rows(again) == read_rows(clean)
    assert pq.read_table(again / "rejects.parquet").to_pylist() == pq.read_table(clean / "rejects.parquet").to_pylist()
    m_clean = json.loads((clean / "manifest.json").read_text())
    m_again = json.loads((again / "manifest.json").read_text())
    assert [(f["path"], f["rows"], f["sha256"]) for f in m_again["files"]] == \
        [(f["path"], f["rows"], f["sha256"]) for f in m_clean["files"]]
    assert m_again["stats"]["resumed_from"] == 8 and m_again["stats"]["rejects"] == {"corrupt_image": 3}
    assert not partial.exists()


# -- library ----------------------------------------------------------------------------------------------
def run_library(tmp_path: Path, name: str, src: Path, **kw):
    records = read_karpathy([src])
    with ArtifactBuilder(artifact_path(tmp_path / "lib", "dataset", name), "dataset", resumable=True) as b:
        stats = ingest(records, b, total=records.total, **kw)
        b.publish(stats.to_dict())
    return stats, read_rows(tmp_path / "lib" / "datasets" / name)


def test_process_pool_gives_the_same_dataset(tmp_path):
    src = make_bad_karpathy(tmp_path / "raw")
    s0, rows0 = run_library(tmp_path, "inline", src, workers=0, store_images=True, shard_rows=2)
    s2, rows2 = run_library(tmp_path, "pool", src, workers=2, store_images=True, shard_rows=2)
    assert rows0 == rows2 and s0.rejects == s2.rejects and s0.rows == 2


def test_probe_image_reasons(tmp_path):
    assert probe_image(write_image(tmp_path / "a.png", "PNG", size=(7, 5))) == (7, 5)
    assert probe_image(data=image_bytes("WEBP", size=(3, 4))) == (3, 4)
    cases = {
        "missing_image": dict(path=tmp_path / "none.jpg"),
        "empty_image": dict(data=b""),
        "truncated_image": dict(data=image_bytes("JPEG", size=(64, 64))[:300]),
        "corrupt_image": dict(data=b"GIF89a nonsense"),
    }
    for reason, kw in cases.items():
        with pytest.raises(ImageProblem) as e:
            probe_image(**kw)
        assert e.value.reason == reason, (reason, e.value)


def test_store_images_auto():
    assert resolve_store_images("auto", 100_000) is True
    assert resolve_store_images("auto", 100_001) is False
    assert resolve_store_images("auto", None) is False
    assert resolve_store_images("yes", None) is True and resolve_store_images("no", 5) is False
