"""`vlpipe tokenizer train|show`: WordPiece tokenizers as artifacts."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path, resolve
from vlpipe.data.tokenizer import iter_captions, load_tokenizer, save_tokenizer, train_wordpiece

from ._common import command_line, console, root_of, user_errors

app = typer.Typer(help="Train or inspect WordPiece tokenizers.", no_args_is_help=True)


@app.command("train")
def train(
    ctx: typer.Context,
    data: list[str] = typer.Option(..., "--data", help="Dataset artifact(s) (name or path; repeatable) to learn from: captions, or a task table's questions + answers / hypotheses / sentences / expressions."),
    out: str = typer.Option(..., "--out", help="Name of the tokenizer artifact to write."),
    vocab: int = typer.Option(8000, "--vocab", help="Vocabulary size (special tokens included)."),
    min_frequency: int = typer.Option(2, "--min-frequency", help="Drop word pieces seen fewer times."),
    split: list[str] = typer.Option(["train"], "--split", help="Splits to read captions from (repeatable; 'all' for every split)."),
    max_length: int = typer.Option(512, "--max-length", help="model_max_length stored with the tokenizer."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing artifact of that name."),
) -> None:
    """Train a lowercase BERT WordPiece tokenizer ([CLS]/[SEP]/[MASK]/[PAD]) on datasets' texts.

    Pass the caption dataset and, when fine-tuning on VQA / VE / NLVR2 / RefCOCO+ later, their task
    tables too (`--data demo --data demo-vqa`), so every word and answer has its own pieces.

    The artifact is a Hugging Face folder: `BertTokenizerFast.from_pretrained(path)` loads it.
    """
    root = root_of(ctx)
    with user_errors():
        datasets = [resolve(d, "dataset", root) for d in data]
        splits = None if "all" in split else split
        t0 = time.perf_counter()
        names = [d.name for d in datasets]
        params = {"data": names[0] if len(names) == 1 else names, "vocab": vocab, "min_frequency": min_frequency,
                  "splits": splits}
        texts = (t for d in datasets for t in iter_captions(d, splits))
        with ArtifactBuilder(
            artifact_path(root, "tokenizer", out), "tokenizer", params=params,
            inputs=datasets, command=command_line(), overwrite=overwrite,
        ) as builder:
            with console.status(f"training WordPiece ({vocab} pieces) on {', '.join(names)}"):
                tok = train_wordpiece(texts, vocab, min_frequency, max_length)
            save_tokenizer(tok, builder.dir)
            art = builder.publish({"vocab_size": len(tok), "seconds": round(time.perf_counter() - t0, 2)})
    console.print(f"tokenizer [bold]{art.name}[/]: {len(tok)} pieces -> {art.path}")


@app.command("show")
def show(
    ctx: typer.Context,
    tokenizer: str = typer.Argument(..., help="Tokenizer artifact name/path or a local Hugging Face folder."),
    text: list[str] = typer.Option([], "--text", help="Sentences to tokenize as a check (repeatable)."),
) -> None:
    """Print a tokenizer's size and special tokens, and how it splits sample sentences."""
    with user_errors():
        tok = load_tokenizer(tokenizer, root_of(ctx))
    table = Table(title=f"tokenizer {tokenizer}")
    table.add_column("property")
    table.add_column("value")
    table.add_row("vocabulary", str(len(tok)))
    for name in ("cls_token", "sep_token", "pad_token", "mask_token", "unk_token"):
        table.add_row(name, f"{getattr(tok, name)} ({getattr(tok, name + '_id')})")
    for t in text:
        table.add_row(t, " ".join(tok.tokenize(t)))
    console.print(table)
