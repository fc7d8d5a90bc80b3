"""The ``vlpipe`` console script: every stage mounted on one Typer app."""

from __future__ import annotations

from pathlib import Path

import typer

from vlpipe import __version__

from . import artifacts as artifacts_stage
from . import embed as embed_stage
from . import evaluate as evaluate_stage
from . import explain as explain_stage
from . import export as export_stage
from . import finetune as finetune_stage
from . import import_albef as import_stage
from . import index as index_stage
from . import ingest as ingest_stage
from . import pretrain as pretrain_stage
from . import rerank as rerank_stage
from . import reproduce as reproduce_stage
from . import retrieve as retrieve_stage
from . import synth as synth_stage
from . import tokenizer as tokenizer_stage

app = typer.Typer(
    name="vlpipe",
    help="Staged tools to train and serve ALBEF-style vision-language models.\n\n"
    "ingest -> pretrain -> embed -> index build -> retrieve (+ ITM rerank) -> finetune -> evaluate",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vlpipe {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    root: Path = typer.Option(
        None,
        "--root",
        envvar="VLPIPE_ARTIFACTS",
        help="Artifacts root folder (default ./artifacts).",
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = {"root": root}


def _mount_command(stage_app: typer.Typer, name: str) -> None:
    """Mount a one-command stage (a Typer app whose callback does the work) as a plain command, so
    its usage line reads ``vlpipe NAME [OPTIONS]`` rather than that of a group of subcommands."""
    def given(value):  # typer marks unset fields with a placeholder object
        return value if isinstance(value, (str, dict)) else None

    cb = stage_app.registered_callback
    app.command(name=name, help=given(cb.help) or given(stage_app.info.help),
                context_settings=given(cb.context_settings))(cb.callback)


_mount_command(synth_stage.app, "synth")
app.add_typer(ingest_stage.app, name="ingest")
app.add_typer(tokenizer_stage.app, name="tokenizer")
_mount_command(pretrain_stage.app, "pretrain")
_mount_command(embed_stage.app, "embed")
app.add_typer(index_stage.app, name="index")
_mount_command(retrieve_stage.app, "retrieve")
_mount_command(rerank_stage.app, "rerank")
app.add_typer(finetune_stage.app, name="finetune")
app.add_typer(evaluate_stage.app, name="evaluate")
_mount_command(explain_stage.app, "explain")
app.add_typer(import_stage.app, name="import")
app.add_typer(export_stage.app, name="export")
app.add_typer(artifacts_stage.app, name="artifacts")
app.add_typer(reproduce_stage.app, name="reproduce")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
