"""`vlpipe import albef`: an official ALBEF checkpoint (.pth) as a vlpipe checkpoint artifact."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, MANIFEST, artifact_path, resolve
from vlpipe.data.tokenizer import tokenizer_folder
from vlpipe.models.albef_import import ImportReport, import_albef, write_checkpoint

from ._common import command_line, console, err_console, root_of, user_errors

app = typer.Typer(help="Import checkpoints made outside vlpipe.", no_args_is_help=True)

SHOW = 6  # keys listed per row of the report table


@app.command("albef")
def albef(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The official ALBEF checkpoint (.pth from salesforce/ALBEF: pre-trained or fine-tuned)."),
    out: str = typer.Option(..., "--out", help="Name of the checkpoint artifact to write."),
    config: str = typer.Option("albef-base", "--config", help="Base preset or YAML for what the weights do not store (heads, dropout, loss settings); sizes are read from the tensors."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field after the sizes are read, e.g. --set model.vision.image_size=384 (pos_embed is interpolated) (repeatable)."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer artifact or local Hugging Face folder with the checkpoint's vocabulary (bert-base-uncased for the official models); copied into the checkpoint."),
    strict: bool = typer.Option(True, "--strict/--no-strict", help="--strict: refuse when a model weight gets no value; --no-strict: keep those at their initial values and report them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint artifact of that name."),
) -> None:
    """Convert an official ALBEF checkpoint into a vlpipe checkpoint artifact.

    Loads PATH with torch.load(weights_only=True) (no code from the file runs), unwraps {'model': ...},
    renames the keys (visual_encoder.*, text_encoder[.bert].encoder.layer.N split into text and
    fusion layers, cls.predictions -> mlm_head, projections, ITM head, temp, momentum copies and
    queues), reads the model sizes from the tensor shapes, and writes the same files `vlpipe
    pretrain` writes, so `embed`, `evaluate retrieval` and `retrieve` take it. Heads of fine-tuned
    models that vlpipe lacks (VQA decoder, VE/NLVR2 classifier) are reported as unexpected.
    Without --tokenizer the artifact has no tokenizer and text stages cannot use it.
    """
    root = root_of(ctx)
    with user_errors():
        tok_dir = tokenizer_folder(tokenizer, root) if tokenizer else None
        result = import_albef(path, config, set_, tokenizer_dir=tok_dir, strict=strict)
        inputs = []
        if tok_dir is not None and (tok_dir / MANIFEST).exists():
            inputs.append(resolve(tok_dir, "tokenizer", root))
        r = result.report
        params = {"source": str(path), "source_sha256": r.sha256, "config": config, "set": set_,
                  "tokenizer": tokenizer, "strict": strict}
        with ArtifactBuilder(artifact_path(root, "checkpoint", out), "checkpoint", params=params, inputs=inputs,
                             command=command_line(), overwrite=overwrite) as builder:
            write_checkpoint(builder.dir, result)
            stats = {**r.counts(), "import": r.to_dict()}
            art = builder.publish(stats)
    _summary(r, art)
    if tok_dir is None:
        err_console.print("[yellow]warning:[/] no --tokenizer: the checkpoint cannot encode text "
                          "(embed/evaluate/retrieve need one); re-import with --tokenizer", highlight=False, soft_wrap=True)


def _keys(keys: list[str]) -> str:
    if not keys:
        return "-"
    more = f" ... (+{len(keys) - SHOW})" if len(keys) > SHOW else ""
    return ", ".join(keys[:SHOW]) + more


def _summary(r: ImportReport, art) -> None:
    t = Table(title=f"import {Path(r.source).name} -> checkpoint {art.name}")
    t.add_column("")
    t.add_column("count", justify="right")
    t.add_column("keys / values", overflow="fold")
    t.add_row("source sha256", "", r.sha256)
    t.add_row("state dict", str(r.tensors), f"under {r.wrapper!r}" if r.wrapper else "bare")
    t.add_row("loaded", str(r.loaded), "model tensors with a value from the checkpoint")
    t.add_row("missing", str(len(r.missing)), _keys(r.missing))
    t.add_row("unexpected", str(len(r.unexpected)), _keys(r.unexpected))
    t.add_row("reshaped", str(len(r.reshaped)), _keys(r.reshaped))
    t.add_row("ignored", str(len(r.ignored)), _keys(r.ignored))
    t.add_row("from shapes", str(len(r.inferred)), ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in r.inferred.items()))
    if r.overridden:
        t.add_row("--set", str(len(r.overridden)), ", ".join(r.overridden))
    for n in r.notes:
        t.add_row("note", "", n)
    console.print(t)
    console.print(f"-> {art.path}")
