"""The training stream: deterministic, worker-count independent, exactly resumable, rank-disjoint."""

from __future__ import annotations

import torch

from vlpipe.data.loader import CaptionBatches, batch_loader, image_key, scan_blocks, text_key
from vlpipe.data.tokenizer import save_tokenizer, train_wordpiece
from vlpipe.data.transforms import flip_caption

from .conftest import CAPTIONS, make_dataset


def _setup(tmp_path, n_images=12, shard_rows=7):
    art = make_dataset(tmp_path / "a", n_images=n_images, captions_per_image=2, shard_rows=shard_rows)
    tok_dir = tmp_path / "tok"
    save_tokenizer(train_wordpiece(CAPTIONS * 5, vocab_size=120, min_frequency=1), tok_dir)
    return sorted(art.path.glob("part-*.parquet")), str(tok_dir)


def _collect(ds, workers):
    return [b for b in batch_loader(ds, workers)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["batch_index"] == y["batch_index"]
        assert torch.equal(x["images"], y["images"])
        assert torch.equal(x["input_ids"], y["input_ids"])
        assert torch.equal(x["image_ids"], y["image_ids"])


def test_stream_same_for_any_worker_count_and_resumes_exactly(tmp_path):
    files, tok = _setup(tmp_path)
    blocks = scan_blocks(files, None)
    kw = dict(batch_size=3, image_size=16, seed=1, epoch=2, shuffle_blocks=2)
    full = _collect(CaptionBatches(blocks, tok, **kw), 0)
    assert len(full) == 24 // 3
    _same(full, _collect(CaptionBatches(blocks, tok, **kw), 2))
    resumed = _collect(CaptionBatches(blocks, tok, start_batch=3, **kw), 2)
    _same(full[3:], resumed)


def test_epochs_shuffle_differently_and_cover_every_row(tmp_path):
    files, tok = _setup(tmp_path)
    blocks = scan_blocks(files, None)
    kw = dict(batch_size=4, image_size=16, seed=0, augment=False)
    e0 = torch.cat([b["image_ids"] for b in _collect(CaptionBatches(blocks, tok, epoch=0, **kw), 0)])
    e1 = torch.cat([b["image_ids"] for b in _collect(CaptionBatches(blocks, tok, epoch=1, **kw), 0)])
    assert not torch.equal(e0, e1)
    assert sorted(e0.tolist()) == sorted(e1.tolist())
    assert sorted(set(e0.tolist())) == sorted({image_key(f"img{i}") for i in range(12)})


def test_split_filter_and_ranks_are_disjoint(tmp_path):
    files, tok = _setup(tmp_path)
    train = scan_blocks(files, ["train"])
    assert sum(b.rows for b in train) == 20  # 10 train images x 2 captions
    kw = dict(batch_size=2, image_size=16, seed=0, world=2, augment=False)
    r0 = _collect(CaptionBatches(train, tok, rank=0, **kw), 0)
    r1 = _collect(CaptionBatches(train, tok, rank=1, **kw), 0)
    assert len(r0) == len(r1) == 5  # equal step counts on every rank
    ids0 = torch.cat([b["image_ids"] for b in r0]).tolist()
    ids1 = torch.cat([b["image_ids"] for b in r1]).tolist()
    test_keys = {image_key("img10"), image_key("img11")}
    assert not (set(ids0) | set(ids1)) & test_keys
    # together the ranks see every train row exactly once (2 captions per image)
    assert sorted(ids0 + ids1) == sorted(image_key(f"img{i}") for i in range(10) for _ in range(2))


def test_flip_swaps_left_and_right():
    assert flip_caption("a dog to the left of a cat, right?") == "a dog to the right of a cat, left?"
    assert flip_caption("leftover bright") == "leftover bright"


def test_text_key_ignores_case_punctuation_and_a_leading_article():
    assert text_key("The dog.") == text_key("dog") == text_key("  DOG ")
    assert text_key("the dog left of the car") == text_key("dog left of the car")
    assert text_key("the dog") != text_key("the cat") and text_key("a") == text_key("a")
    assert text_key("dog left of the car") != text_key("car left of the dog")
    assert 0 <= text_key("dog") < 2 ** 63
