"""Manifests, atomic publication, lookup by name, kind/schema checks, lineage."""

from __future__ import annotations

import json

import pytest

from vlpipe.artifacts import (
    ArtifactBuilder,
    artifact_path,
    content_id,
    describe_files,
    list_artifacts,
    resolve,
    sha256_file,
)
from vlpipe.errors import ArtifactError

from .conftest import make_dataset


def test_manifest_records_files_rows_and_hashes(tmp_path):
    art = make_dataset(tmp_path, n_images=6, captions_per_image=2, shard_rows=5)
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["kind"] == "dataset" and m["schema_version"] == 1 and m["name"] == "tiny"
    names = [f["path"] for f in m["files"]]
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [f["rows"] for f in m["files"]] == [5, 5, 2]
    assert art.manifest.rows == 12
    for f in m["files"]:
        assert f["sha256"] == sha256_file(art.path / f["path"])
    assert m["content_id"] == content_id("dataset", describe_files(art.path))
    assert m["vlpipe_version"] and m["created"]


def test_content_id_is_deterministic(tmp_path):
    a = make_dataset(tmp_path / "a")
    b = make_dataset(tmp_path / "b")
    assert a.manifest.content_id == b.manifest.content_id
    c = make_dataset(tmp_path / "c", n_images=5)
    assert c.manifest.content_id != a.manifest.content_id


def test_crash_leaves_no_artifact(tmp_path):
    final = artifact_path(tmp_path, "dataset", "crashy")
    with pytest.raises(RuntimeError):
        with ArtifactBuilder(final, "dataset") as b:
            (b.dir / "part-00000.parquet").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not final.exists()
    assert not any(final.parent.iterdir())  # non-resumable staging is cleaned up
    assert list_artifacts(tmp_path) == []


def test_resumable_crash_keeps_staging_and_resume_continues(tmp_path):
    final = artifact_path(tmp_path, "dataset", "r")
    with pytest.raises(KeyboardInterrupt):
        with ArtifactBuilder(final, "dataset", params={"a": 1}, resumable=True) as b:
            b.save_state({"shards": 1})
            raise KeyboardInterrupt
    assert not final.exists()
    # Without --resume the leftover is reported, not silently discarded.
    with pytest.raises(ArtifactError, match="--resume"):
        with ArtifactBuilder(final, "dataset", params={"a": 1}, resumable=True):
            pytest.fail("entering the builder should have raised")
    # Different parameters cannot resume.
    with pytest.raises(ArtifactError, match="other parameters"):
        with ArtifactBuilder(final, "dataset", params={"a": 2}, resumable=True, resume=True):
            pytest.fail("entering the builder should have raised")
    with ArtifactBuilder(final, "dataset", params={"a": 1}, resumable=True, resume=True) as b:
        assert b.resumed and b.load_state() == {"shards": 1}
        (b.dir / "x.txt").write_text("x")
        art = b.publish()
    assert [f.path for f in art.manifest.files] == ["x.txt"]
    assert "_state.json" not in {f.path for f in art.manifest.files}


def test_no_silent_overwrite(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ArtifactError, match="--overwrite"):
        make_dataset(tmp_path)
    final = artifact_path(tmp_path, "dataset", "tiny")
    with ArtifactBuilder(final, "dataset", overwrite=True) as b:
        (b.dir / "new.txt").write_text("new")
        b.publish()
    assert (final / "new.txt").exists() and not (final / "part-00000.parquet").exists()
    assert [p.name for p in final.parent.iterdir()] == ["tiny"]  # no trash left behind


def test_resolve_by_name_path_and_kind_checks(tmp_path):
    art = make_dataset(tmp_path)
    assert resolve("tiny", "dataset", tmp_path).path == art.path
    assert resolve(str(art.path), "dataset").path == art.path
    assert resolve(str(art.path / "manifest.json")).path == art.path
    with pytest.raises(ArtifactError, match="is a 'dataset' artifact"):
        resolve("tiny", "tokenizer", tmp_path)
    with pytest.raises(ArtifactError, match="no artifact"):
        resolve("nope", "dataset", tmp_path)


def test_schema_version_mismatch_is_explained(tmp_path):
    art = make_dataset(tmp_path)
    m = json.loads((art.path / "manifest.json").read_text())
    m["schema_version"] = 99
    (art.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="newer vlpipe"):
        resolve("tiny", "dataset", tmp_path)
    (art.path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        resolve(str(art.path))


def test_lineage_recorded(tmp_path):
    src = make_dataset(tmp_path)
    with ArtifactBuilder(artifact_path(tmp_path, "tokenizer", "tok"), "tokenizer", inputs=[src]) as b:
        (b.dir / "vocab.txt").write_text("[PAD]\n")
        out = b.publish()
    assert out.manifest.inputs == [src.ref()]
    assert out.manifest.inputs[0]["content_id"] == src.manifest.content_id
    kinds = sorted(a.kind for a in list_artifacts(tmp_path))
    assert kinds == ["dataset", "tokenizer"]


def test_bad_names_refused(tmp_path):
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ArtifactError):
            artifact_path(tmp_path, "dataset", bad)
