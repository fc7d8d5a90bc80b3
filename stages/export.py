"""`vlpipe export hf|safetensors`: a checkpoint as files other libraries load without vlpipe."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vlpipe.artifacts import resolve
from vlpipe.models.export import ExportResult, export_hf, export_safetensors, load_for_export

from ._common import console, human_size, root_of, user_errors

app = typer.Typer(help="Export a checkpoint: Hugging Face BERT + timm ViT files, or one safetensors file.",
                  no_args_is_help=True)

CHECKPOINT_HELP = "Checkpoint artifact (name or path)."
OUT_HELP = "Folder to write (a plain folder, not an artifact); written to a temporary folder, then renamed."
OVERWRITE_HELP = "Replace the folder if it exists and is not empty."


@app.command("hf")
def hf(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help=CHECKPOINT_HELP),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Text tower as a Hugging Face BertModel folder, image tower as a timm ViT file.

    OUT/config.json + model.safetensors: BERT embeddings and the text-only layers
    (`BertModel.from_pretrained(OUT, add_pooling_layer=False)`), plus the tokenizer files when the
    checkpoint has a tokenizer. The fusion layers (cross-attention to the image) are not plain
    BERT layers and are left out, with the ITM and MLM heads on top of them.
    OUT/image_encoder.safetensors + image_encoder.json: the ViT and the `timm.create_model`
    arguments that rebuild it. OUT/itc_heads.safetensors: the ITC projections and temperature.
    """
    with user_errors():
        art = resolve(checkpoint, "checkpoint", root_of(ctx))
        result = export_hf(load_for_export(art.path), out, overwrite, source=f"{art.name} ({art.manifest.content_id})")
    _summary(result, "hf")


@app.command("safetensors")
def safetensors(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help=CHECKPOINT_HELP),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """The whole model (momentum copies and queues included) under vlpipe's names.

    OUT/model.safetensors holds every state-dict key; OUT/config.json is the checkpoint's config
    (rebuild with `ALBEF(from_dict(json['config']).model)`); OUT/tokenizer/ when there is one.
    """
    with user_errors():
        art = resolve(checkpoint, "checkpoint", root_of(ctx))
        result = export_safetensors(load_for_export(art.path), out, overwrite,
                                    source=f"{art.name} ({art.manifest.content_id})")
    _summary(result, "safetensors")


def _summary(result: ExportResult, kind: str) -> None:
    t = Table(title=f"export {kind} -> {result.folder}")
    t.add_column("file")
    t.add_column("size", justify="right")
    for f in result.files:
        t.add_row(f, human_size((result.folder / f).stat().st_size))
    console.print(t)
    for n in result.notes:
        console.print(f"note: {n}", highlight=False)
    console.print(f"-> {result.folder}")
