"""Each reader on a small fixture written in the exact upstream schema -> the expected records."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from vlpipe.data.readers import (
    Record,
    Reject,
    albef_image_id,
    read_cc3m,
    read_coco,
    read_csv,
    read_folder,
    read_jsonl,
    read_karpathy,
    read_webdataset,
)
from vlpipe.data.readers.base import expand_braces, infer_split
from vlpipe.errors import InputError


# -- fixture builders (also used by test_ingest.py) -----------------------------------------------
def image_bytes(fmt: str = "JPEG", color=(200, 30, 30), size=(12, 9)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG", color=(200, 30, 30), size=(12, 9)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, color, size))
    return path


def make_karpathy_coco(folder: Path, n_images: int = 4, captions: int = 3, splits=None) -> Path:
    """dataset_coco.json (Karpathy schema) + val2014/ images under ``folder``."""
    splits = splits or ["train", "restval", "val", "test"]
    images = []
    for i in range(n_images):
        name = f"COCO_val2014_{1000 + i:012d}.jpg"
        write_image(folder / "val2014" / name, color=(40 * i % 255, 80, 120), size=(12 + i, 9))
        sents = [{"raw": f"Image {i} caption {k}.", "tokens": ["image", str(i), "caption", str(k)],
                  "imgid": i, "sentid": i * captions + k} for k in range(captions)]
        images.append({"filepath": "val2014", "sentids": [s["sentid"] for s in sents], "filename": name,
                       "imgid": i, "split": splits[i % len(splits)], "sentences": sents, "cocoid": 1000 + i})
    path = folder / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def items(records) -> tuple[list[Record], list[Reject]]:
    out = list(records)
    return [r for r in out if isinstance(r, Record)], [r for r in out if isinstance(r, Reject)]


# -- COCO captions ------------------------------------------------------------------------------------
def test_coco_captions(tmp_path):
    write_image(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg", size=(20, 10))
    write_image(tmp_path / "COCO_train2014_000000000025.jpg")  # directly under --images
    doc = {
        "info": {"year": 2014}, "licenses": [],
        "images": [
            {"license": 1, "file_name": "COCO_train2014_000000000009.jpg", "coco_url": "http://x", "height": 10,
             "width": 20, "date_captured": "2013-11-19", "flickr_url": "http://y", "id": 9},
            {"license": 1, "file_name": "COCO_train2014_000000000025.jpg", "height": 9, "width": 12, "id": 25},
            {"license": 1, "file_name": "COCO_train2014_000000000030.jpg", "height": 9, "width": 12, "id": 30},
        ],
        "annotations": [
            {"image_id": 25, "id": 1, "caption": "A giraffe eating leaves."},
            {"image_id": 9, "id": 2, "caption": "A bowl of broccoli."},
            {"image_id": 9, "id": 3},
            {"image_id": 25, "id": 4, "caption": "A tall giraffe."},
            {"image_id": 77, "id": 5, "caption": "Orphan caption."},
        ],
    }
    ann = tmp_path / "annotations" / "captions_train2014.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(doc))
    recs = read_coco([ann], images=tmp_path)
    assert recs.total == 6
    out = list(recs)
    assert len(out) == 6
    kept, rejects = items(out)
    assert [(r.image_id, r.caption_id, r.caption) for r in kept] == [
        ("coco_9", "coco_9#0", "A bowl of broccoli."),
        ("coco_25", "coco_25#0", "A giraffe eating leaves."),
        ("coco_25", "coco_25#1", "A tall giraffe."),
    ]
    assert kept[0].image_path == str((tmp_path / "train2014" / "COCO_train2014_000000000009.jpg").resolve())
    assert kept[1].image_path == str((tmp_path / "COCO_train2014_000000000025.jpg").resolve())
    assert (kept[0].width, kept[0].height, kept[0].split, kept[0].source) == (20, 10, "train", "coco:captions_train2014.json")
    assert sorted(r.reason for r in rejects) == ["missing_caption", "missing_caption", "unknown_image"]


def test_coco_bad_files(tmp_path):
    p = tmp_path / "captions_val2014.json"
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match=r"captions_val2014.json: missing key 'annotations' \(expected a COCO"):
        read_coco([p])
    p.write_text('{"images": [],\n "annotations": [}')
    with pytest.raises(InputError, match="not valid JSON at line 2 column"):
        read_coco([p])
    q = tmp_path / "captions.json"
    q.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(InputError, match="cannot tell the split.*--split"):
        read_coco([q])
    assert list(read_coco([q], split="val")) == []
    with pytest.raises(InputError, match="no such file"):
        read_coco([tmp_path / "nope.json"])
    with pytest.raises(InputError, match="no COCO captions file given"):
        read_coco([])


# -- Karpathy ------------------------------------------------------------------------------------------
def test_karpathy_coco(tmp_path):
    path = make_karpathy_coco(tmp_path, n_images=4, captions=2)
    recs = read_karpathy([path])
    kept, rejects = items(recs)
    assert recs.total == 8 and not rejects
    assert [r.split for r in kept[::2]] == ["train", "train", "val", "test"]  # restval -> train
    first = kept[0]
    assert (first.image_id, first.caption_id, first.caption) == ("coco_1000", "coco_1000#0", "Image 0 caption 0.")
    assert first.image_path == os.path.join(str(tmp_path.resolve()), "val2014", "COCO_val2014_000000001000.jpg")
    assert first.source == "karpathy:dataset_coco.json"
    kept, _ = items(read_karpathy([path], keep_restval=True))
    assert kept[2].split == "restval"


def test_karpathy_flickr_and_missing_raw(tmp_path):
    write_image(tmp_path / "imgs" / "1000092795.jpg")
    doc = {"dataset": "flickr30k", "images": [
        {"sentids": [0, 1], "imgid": 0, "split": "test", "filename": "1000092795.jpg", "sentences": [
            {"tokens": ["two", "young", "guys"], "raw": "Two young guys with shaggy hair .", "imgid": 0, "sentid": 0},
            {"tokens": ["no", "raw"], "imgid": 0, "sentid": 1},
        ]},
        {"sentids": [], "imgid": 1, "split": "train", "filename": "10002456.jpg", "sentences": []},
    ]}
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(doc))
    recs = read_karpathy([path], images=tmp_path / "imgs")
    kept, rejects = items(recs)
    assert recs.total == 3
    assert [(r.image_id, r.caption_id, r.split) for r in kept] == [("flickr_1000092795", "flickr_1000092795#0", "test")]
    assert kept[0].image_path == str((tmp_path / "imgs" / "1000092795.jpg").resolve())
    assert [(r.reason, r.caption_id) for r in rejects] == [("missing_caption", "flickr_1000092795#1"),
                                                          ("missing_caption", None)]


def test_albef_lists(tmp_path):
    train = [
        {"caption": "A woman wearing a net on her head cutting a cake. ",
         "image": "val2014/COCO_val2014_000000522418.jpg", "image_id": "coco_522418"},
        {"caption": "A woman cutting a large white sheet cake.",
         "image": "val2014/COCO_val2014_000000522418.jpg", "image_id": "coco_522418"},
        {"caption": "A child holding a flowered umbrella.",
         "image": "train2014/COCO_train2014_000000318556.jpg", "image_id": "coco_318556"},
    ]
    test = [{"image": "val2014/COCO_val2014_000000391895.jpg",
             "caption": ["A man with a red helmet on a small moped.", "Man riding a motor bike."]}]
    (tmp_path / "coco_train.json").write_text(json.dumps(train))
    (tmp_path / "coco_test.json").write_text(json.dumps(test))
    (tmp_path / "flickr30k_val.json").write_text(json.dumps([{"image": "flickr30k-images/1007129816.jpg",
                                                              "caption": ["The man with pierced ears."]}]))
    recs = read_karpathy([tmp_path / "coco_train.json", tmp_path / "coco_test.json", tmp_path / "flickr30k_val.json"],
                         images=tmp_path)
    kept, rejects = items(recs)
    assert recs.total == 6 and not rejects
    assert [(r.image_id, r.caption_id, r.split) for r in kept] == [
        ("coco_522418", "coco_522418#0", "train"), ("coco_522418", "coco_522418#1", "train"),
        ("coco_318556", "coco_318556#0", "train"),
        ("coco_391895", "coco_391895#0", "test"), ("coco_391895", "coco_391895#1", "test"),
        ("flickr_1007129816", "flickr_1007129816#0", "val"),
    ]
    assert kept[3].image_path == str((tmp_path / "val2014" / "COCO_val2014_000000391895.jpg").resolve())
    assert kept[0].source == "albef:coco_train.json"
    (tmp_path / "mine.json").write_text(json.dumps(test))
    with pytest.raises(InputError, match="mine.json: cannot tell the split"):
        read_karpathy([tmp_path / "mine.json"])
    kept, _ = items(read_karpathy([tmp_path / "mine.json"], split="val"))
    assert {r.split for r in kept} == {"val"}


def test_karpathy_wrong_schema(tmp_path):
    p = tmp_path / "captions_train2014.json"
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": []}))
    with pytest.raises(InputError, match=r"images\[0\] has no key 'filename'.*vlpipe ingest coco"):
        read_karpathy([p])
    p.write_text(json.dumps({"annotations": []}))
    with pytest.raises(InputError, match="missing key 'images'"):
        read_karpathy([p])
    p.write_text(json.dumps([{"caption": "x"}]))
    with pytest.raises(InputError, match=r"entry \[0\] has no 'image'"):
        read_karpathy([p], split="train")


def test_albef_image_id():
    assert albef_image_id("val2014/COCO_val2014_000000391895.jpg", "coco_test.json") == "coco_391895"
    assert albef_image_id("flickr30k-images/1007129816.jpg", "flickr30k_test.json") == "flickr_1007129816"
    assert albef_image_id("pics/a.jpg", "mine.json") == "pics/a"


# -- tables -------------------------------------------------------------------------------------------------
def test_csv(tmp_path):
    write_image(tmp_path / "img" / "a.png", "PNG")
    (tmp_path / "t.csv").write_text(
        "image,caption,split,id\n"
        "img/a.png,\"a red square, small\",val,A\n"
        "https://example.com/b.jpg,remote,train,B\n"
        "img/c.png,,train,\n"
        "img/a.png,another,,\n"
    )
    recs = read_csv([tmp_path / "t.csv"], split_col="split", id_col="id")
    assert recs.total == 4
    out = list(recs)
    kept = [r for r in out if isinstance(r, Record)]
    assert [(r.image_id, r.caption_id, r.caption, r.split) for r in kept] == [
        ("A", "t.csv:1", "a red square, small", "val"),
        ("img/c.png", "t.csv:3", "", "train"),  # empty caption: ingest rejects it
        ("img/a.png", "t.csv:4", "another", "train"),
    ]
    assert kept[0].image_path == str((tmp_path / "img" / "a.png").resolve())
    url = [r for r in out if isinstance(r, Reject)]
    assert [(r.reason, r.caption_id) for r in url] == [("url_not_local", "t.csv:2")]
    assert "download" in url[0].detail
    with pytest.raises(InputError, match=r"t.csv: header has no column 'path'.*--image-col"):
        read_csv([tmp_path / "t.csv"], image_col="path")


def test_jsonl(tmp_path):
    lines = [
        json.dumps({"file": "a.jpg", "text": ["one", "two"]}),
        "",
        "{broken",
        json.dumps({"file": "http://x/y.jpg", "text": "remote"}),
        json.dumps({"file": "b.jpg"}),
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    recs = read_jsonl([tmp_path / "data.jsonl"], images=tmp_path, split="test", image_col="file", caption_col="text")
    out = list(recs)
    assert [(type(r).__name__, r.caption_id, getattr(r, "reason", None)) for r in out] == [
        ("Record", "data.jsonl:1#0", None), ("Record", "data.jsonl:1#1", None),
        ("Reject", "data.jsonl:3", "bad_row"), ("Reject", "data.jsonl:4", "url_not_local"),
        ("Reject", "data.jsonl:5", "missing_caption"),
    ]
    assert out[0].split == "test" and out[0].image_id == "a.jpg"
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    with pytest.raises(InputError, match="bad.jsonl: line 1: a JSON list"):
        read_jsonl([tmp_path / "bad.jsonl"])


# -- folder ---------------------------------------------------------------------------------------------------
def test_folder(tmp_path):
    root = tmp_path / "pics"
    write_image(root / "b.jpg")
    (root / "b.txt").write_bytes(b"first caption\n\n  second caption  \n")
    write_image(root / "a.png", "PNG")  # no sidecar
    write_image(root / "sub" / "c.webp", "WEBP")
    (root / "sub" / "c.txt").write_bytes(b"caf\xe9\n")  # Latin-1: passed on as bytes
    (root / "notes.txt").write_text("not a caption")
    out = list(read_folder([root]))
    assert [(type(r).__name__, r.image_id, r.caption_id if isinstance(r, Record) else r.reason) for r in out] == [
        ("Reject", "a.png", "missing_caption"),
        ("Record", "b.jpg", "b.jpg#0"), ("Record", "b.jpg", "b.jpg#1"),
        ("Record", "sub/c.webp", "sub/c.webp#0"),
    ]
    assert out[1].caption == b"first caption" and out[3].caption == b"caf\xe9"
    assert out[1].image_path == str((root / "b.jpg").resolve()) and out[1].split == "train"
    with pytest.raises(InputError, match="no such folder"):
        read_folder([tmp_path / "nope"])


# -- webdataset ---------------------------------------------------------------------------------------------
def make_tar(path: Path, samples: list[dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for sample in samples:
            key = sample.pop("__key__")
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_webdataset(tmp_path):
    jpg = image_bytes()
    make_tar(tmp_path / "00000.tar", [
        {"__key__": "000000000", "jpg": jpg, "txt": b"a red square", "json": b'{"caption": "ignored", "width": 12}'},
        {"__key__": "000000001", "png": image_bytes("PNG"), "json": b'{"caption": "from json", "url": "http://x"}'},
        {"__key__": "000000002", "jpg": jpg},
    ])
    make_tar(tmp_path / "00001.tar", [{"__key__": "000010000", "jpg": jpg, "txt": b"\xff\xfe bad bytes"}])
    (tmp_path / "00000_stats.json").write_text(json.dumps({"successes": 3}))
    (tmp_path / "00001_stats.json").write_text(json.dumps({"successes": 1}))
    recs = read_webdataset([str(tmp_path / "{00000..00001}.tar")])
    assert recs.total == 4
    out = list(recs)
    assert [(r.image_id, r.caption if isinstance(r, Record) else r.reason) for r in out] == [
        ("000000000", b"a red square"), ("000000001", "from json"), ("000000002", "missing_caption"),
        ("000010000", b"\xff\xfe bad bytes"),
    ]
    assert out[0].image_bytes == jpg and out[0].width == 12 and out[0].caption_id == "000000000#0"
    assert out[0].image_path.endswith("00000.tar/000000000.jpg")
    assert [r.image_id for r in read_webdataset([str(tmp_path / "*.tar")]) if isinstance(r, Record)] == \
        ["000000000", "000000001", "000010000"]


def test_webdataset_truncated_tar(tmp_path):
    good = make_tar(tmp_path / "a.tar", [{"__key__": f"{i:05d}", "jpg": os.urandom(20_000), "txt": b"cap"}
                                         for i in range(4)])
    data = good.read_bytes()
    (tmp_path / "b.tar").write_bytes(data[: len(data) // 2])
    out = list(read_webdataset([tmp_path / "b.tar"]))
    assert [r.image_id for r in out[:-1]] == ["00000", "00001"]  # the complete samples before the break
    assert isinstance(out[-1], Reject) and out[-1].reason == "corrupt_tar" and "b.tar" in out[-1].detail
    (tmp_path / "c.tar").write_bytes(b"this is not a tar file at all" * 30)
    with pytest.raises(InputError, match="c.tar: not a readable tar file"):
        read_webdataset([tmp_path / "c.tar"])
    with pytest.raises(InputError, match="no tar shard matches"):
        read_webdataset([str(tmp_path / "*.tgz")])


# -- cc3m ------------------------------------------------------------------------------------------------
def test_cc3m(tmp_path):
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_bytes(
        b"a very typical bus station\thttp://lh6.ggpht.com/x.jpg\n"
        b"sierra looked stunning in this top\timages/0001.jpg\n"
        b"caf\xe9 latin-1\timages/0002.jpg\n"
        b"only one field\n"
    )
    recs = read_cc3m([tsv], images=tmp_path)
    assert recs.total == 4
    out = list(recs)
    assert [(type(r).__name__, getattr(r, "reason", None), r.caption_id) for r in out] == [
        ("Reject", "url_not_local", "Train_GCC-training.tsv:1"), ("Record", None, "Train_GCC-training.tsv:2"),
        ("Record", None, "Train_GCC-training.tsv:3"), ("Reject", "bad_row", "Train_GCC-training.tsv:4"),
    ]
    assert "img2dataset" in out[0].detail and "webdataset" in out[0].detail
    assert out[1].caption == b"sierra looked stunning in this top" and out[1].split == "train"
    assert out[1].image_id == "images/0001.jpg" and out[1].image_path == str((tmp_path / "images" / "0001.jpg").resolve())
    cc12m = tmp_path / "cc12m.tsv"
    cc12m.write_bytes(b"url\tcaption\nimages/9.jpg\tfrom cc12m\n")
    out = list(read_cc3m([cc12m], header=True, image_first=True))
    assert [(r.image_id, r.caption) for r in out] == [("images/9.jpg", b"from cc12m")]
    (tmp_path / "x.tsv").write_bytes(b"a,b,c\n")
    with pytest.raises(InputError, match="x.tsv: line 1 has 1 tab-separated fields"):
        read_cc3m([tmp_path / "x.tsv"])


# -- helpers ------------------------------------------------------------------------------------------
def test_helpers():
    assert infer_split("coco_karpathy_val.json") == "val"
    assert infer_split("captions_train2014.json") == "train"
    assert infer_split("Validation_GCC-1.1.0-Validation.tsv") == "val"
    assert infer_split("flickr30k_test.json") == "test"
    assert infer_split("dataset_coco.json") is None
    assert expand_braces("s/{008..010}.tar") == ["s/008.tar", "s/009.tar", "s/010.tar"]
