"""`vlpipe explain`: Grad-CAM heatmaps of the ITM score of one (image, text) pair, as PNG overlays."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vlpipe.artifacts import resolve

from ._common import console, root_of, user_errors

app = typer.Typer(help="Show where a checkpoint looks: Grad-CAM heatmaps of the image-text match score.")


@app.callback(invoke_without_command=True)
def explain(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint artifact (name or path) whose ITM head is explained."),
    image: Path = typer.Option(..., "--image", help="Image file.", show_default=False),
    text: str = typer.Option(..., "--text", help="The sentence to explain."),
    out: Path = typer.Option(..., "--out", help="Folder to write (sentence.png, word-NN-<word>.png, explanation.json).", show_default=False),
    layer: int = typer.Option(None, "--layer", help="Fusion layer whose cross-attention is used (default: ALBEF's relative depth, fusion_layers // 3).", show_default=False),
    per_word: bool = typer.Option(True, "--per-word/--no-per-word", help="Also write one heatmap per word (word pieces merged)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Grad-CAM of the ITM match logit on a fusion layer's cross-attention (as ALBEF's visualisation):
    one heatmap for the whole sentence and one per word, blended over the image at its own size.
    The folder is written atomically; a table of the files and the ITM score is printed."""
    from vlpipe.explain import explain as run_explain
    from vlpipe.explain import load_image, write_explanation
    from vlpipe.train.distributed import pick_device
    from vlpipe.train.pretrain import load_checkpoint

    with user_errors():
        if not text.strip():
            from vlpipe.errors import VlpipeError

            raise VlpipeError("--text is empty: give the sentence to explain")
        picture = load_image(image)
        ck = resolve(checkpoint, "checkpoint", root_of(ctx))
        dev = pick_device(device)
        model, _cfg, tokenizer = load_checkpoint(ck.path, dev)
        exp = run_explain(model, tokenizer, picture, text, layer=layer, per_word=per_word, device=dev)
        files = write_explanation(exp, picture, out, overwrite=overwrite,
                                  source={"checkpoint": ck.name, "checkpoint_path": str(ck.path), "image": str(image)})
    table = Table(title=f"{out}", title_justify="left")
    table.add_column("file")
    table.add_column("shows")
    for name, what in files:
        table.add_row(name, what)
    console.print(table)
    console.print(f"ITM match probability {exp.p_match:.4f} (log-odds {exp.itm:+.3f}, match logit {exp.itm_logit:+.3f}); "
                  f"fusion layer {exp.layer}; image {picture.size[0]}x{picture.size[1]}", highlight=False)
