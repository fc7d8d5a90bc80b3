"""WordPiece tokenizers: train one on a dataset's captions, load one from an artifact or HF folder.

No hub download is possible, so a run either trains a BERT-style lowercase WordPiece vocabulary
on its own captions (``vlpipe tokenizer train``) or points at a local Hugging Face folder that holds
``tokenizer.json`` or ``vocab.txt`` (for instance a downloaded ``bert-base-uncased``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.dataset as ds

from vlpipe.artifacts import MANIFEST, Artifact, check, read_manifest, resolve
from vlpipe.errors import ArtifactError, InputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def iter_captions(
    dataset: Artifact, splits: Iterable[str] | None = ("train",), batch_rows: int = 65_536
) -> Iterator[str]:
    """Stream the texts of a dataset artifact (only the given splits; None = all): the caption column of
    a caption dataset; of a task table its text column (question, hypothesis, sentence, expression) and,
    for VQA, every answer too, so that answers such as digits get word pieces of their own."""
    from vlpipe.data.task_tables import TEXT_COLUMN, task_of

    task = task_of(dataset.manifest.params, dataset.manifest.stats)
    columns = ["caption"] if task is None else [TEXT_COLUMN[task]] + (["answers"] if task == "vqa" else [])
    d = ds.dataset(sorted(dataset.path.glob("part-*.parquet")), format="parquet")
    flt = None
    if splits is not None:
        flt = ds.field("split").isin(list(splits))
    for batch in d.to_batches(columns=columns, filter=flt, batch_size=batch_rows):
        yield from batch.column(0).to_pylist()
        if task == "vqa":
            for answers in batch.column(1).to_pylist():
                yield from answers or []


def train_wordpiece(
    captions: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, max_length: int = 512
):
    """Train a lowercase BERT WordPiece tokenizer; returns a ``transformers`` BertTokenizerFast."""
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise InputError("--vocab", f"vocabulary size {vocab_size} is too small", "use >= 100")
    wp = BertWordPieceTokenizer(lowercase=True, clean_text=True, strip_accents=None)
    wp.train_from_iterator(
        captions,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        wordpieces_prefix="##",
        show_progress=False,
    )
    return BertTokenizerFast(
        tokenizer_object=wp._tokenizer,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Write a folder that ``BertTokenizerFast.from_pretrained`` loads (and a plain vocab.txt)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
    vocab = tokenizer.get_vocab()
    with open(folder / "vocab.txt", "w", encoding="utf-8") as f:
        for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(tok + "\n")


def tokenizer_folder(ref: str | Path, root: Path | str | None = None) -> Path:
    """Resolve a tokenizer reference: a tokenizer artifact (name or path) or a local HF folder."""
    p = Path(ref)
    if p.is_dir() and not (p / MANIFEST).exists():
        if (p / "tokenizer.json").exists() or (p / "vocab.txt").exists():
            return p
        raise InputError(
            p, "folder has no tokenizer.json or vocab.txt",
            "pass a Hugging Face tokenizer folder or a tokenizer artifact",
        )
    if p.is_dir():
        return check(Artifact(p, read_manifest(p)), "tokenizer").path
    try:
        return resolve(ref, "tokenizer", root).path
    except ArtifactError as e:
        raise ArtifactError(
            f"{e} (or train one with `vlpipe tokenizer train --data DATASET --out NAME`)"
        ) from None


def load_tokenizer(ref: str | Path, root: Path | str | None = None):
    """Load a tokenizer artifact or local HF folder as a ``transformers`` fast BERT tokenizer."""
    from transformers import AutoTokenizer

    folder = tokenizer_folder(ref, root)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    missing = [t for t in ("cls_token", "sep_token", "pad_token", "mask_token") if getattr(tok, t) is None]
    if missing:
        raise InputError(folder, f"tokenizer lacks {', '.join(missing)}", "use a BERT-style WordPiece tokenizer")
    return tok
