"""`vlpipe ingest FORMAT INPUTS... --out NAME`: real caption / downstream-task data -> a dataset artifact.

Every format subcommand shares the same options (declared once in ``COMMON``); a subcommand only
adds its own flags and returns them as reader options. :func:`_run` does the rest: read, ingest
into a resumable ArtifactBuilder with rich progress, publish, print the summary. Task formats
(``vqa``, ``ve``, ``nlvr2``, ``refcoco``) write a task table instead of caption rows and record
the task in the manifest (``params.task``, ``stats.task``).
"""

from __future__ import annotations

import enum
import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path
from vlpipe.data.ingest import REJECTS_FILE, IngestStats, ingest, resolve_store_images
from vlpipe.data.readers import READERS, TASK_READERS
from vlpipe.data.task_ingest import ingest_task
from vlpipe.errors import InputError

from ._common import RichProgress, command_line, console, root_of, user_errors

app = typer.Typer(
    help="Read a caption dataset (COCO, Karpathy/ALBEF, CSV, JSON Lines, image folder, "
    "WebDataset tars, CC3M TSV) or downstream-task data (VQA v2, SNLI-VE, NLVR2, RefCOCO+) "
    "into Parquet shards; bad rows go to rejects.parquet.",
    no_args_is_help=True,
)

RESUME_HINT = "rerun with --resume to continue from the last completed shard"


class StoreImages(str, enum.Enum):
    auto = "auto"
    yes = "yes"
    no = "no"


def parse_size(text: str) -> int:
    """``256MB``, ``1GiB``, ``500k``, ``1048576`` -> bytes (decimal and binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", text.lower())
    if not m:
        raise InputError("--shard-size", f"cannot read {text!r} as a size", "use e.g. 256MB, 1GB or a number of bytes")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " kmgt".index(m.group(2) or " "))


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


#: Options every format takes, in the order --help shows them.
COMMON = [
    _param("out", Annotated[str, typer.Option("--out", help="Name of the dataset artifact to write.")], ...),
    _param("images", Annotated[Optional[Path], typer.Option(
        "--images", help="Folder the image paths are relative to (default: the first input's folder).",
        show_default=False)], None),
    _param("split", Annotated[Optional[str], typer.Option(
        "--split", help="Split of the rows (default: from the data or the file name, else train).",
        show_default=False)], None),
    _param("shard_rows", Annotated[int, typer.Option("--shard-rows", min=1, help="Rows per Parquet shard.")], 10_000),
    _param("shard_size", Annotated[str, typer.Option(
        "--shard-size", help="Also close a shard when its image bytes reach this size.")], "256MB"),
    _param("store_images", Annotated[StoreImages, typer.Option(
        "--store-images", help="Put image bytes in the shards (auto: yes when the row count is known and <= 100k).",
        case_sensitive=False)], StoreImages.auto),
    _param("verify_images", Annotated[bool, typer.Option(
        "--verify-images/--no-verify-images",
        help="Decode every image once to reject truncated/corrupt ones (off: only missing/empty files).")], True),
    _param("workers", Annotated[Optional[int], typer.Option(
        "--workers", min=0, help="Processes decoding images for verification (default: auto; 0: in-process).",
        show_default=False)], None),
    _param("resume", Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from its last completed shard.")], False),
    _param("overwrite", Annotated[bool, typer.Option("--overwrite", help="Replace an existing artifact of that name.")], False),
]
_NOT_PARAMS = ("out", "workers", "resume", "overwrite")  # do not change the output: not recorded


def ingest_command(fmt: str, inputs: str, *, images: bool = True) -> Callable:
    """Register ``vlpipe ingest FMT``: the decorated function takes the format's own flags and
    returns them as reader options; inputs and the common options are added here."""

    def register(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn, eval_str=True).parameters.values()]
        common = [p for p in COMMON if images or p.name != "images"]
        params = [
            inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
            _param("inputs", Annotated[Optional[list[str]], typer.Argument(help=inputs, metavar="INPUTS", show_default=False)], None),
            *common, *own,
        ]

        def command(ctx: typer.Context, **kw: Any) -> None:
            options = fn(**{p.name: kw.pop(p.name) for p in own})
            _run(ctx, fmt, kw, options)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__ = fn.__name__
        command.__doc__ = fn.__doc__
        app.command(fmt)(command)
        return fn

    return register


def _run(ctx: typer.Context, fmt: str, opts: dict[str, Any], reader_options: dict[str, Any]) -> None:
    root = root_of(ctx)
    inputs = list(opts["inputs"] or [])
    task, reader = TASK_READERS.get(fmt, (None, READERS.get(fmt)))
    with user_errors(resume_hint=RESUME_HINT):
        shard_bytes = parse_size(opts["shard_size"])
        records = reader(inputs, opts.get("images"), opts["split"], **reader_options)
        store = resolve_store_images(opts["store_images"].value, records.total)
        params = {
            **({"task": task} if task else {}),
            "format": fmt,
            "inputs": [os.path.abspath(p) for p in inputs],
            "images": os.path.abspath(opts["images"]) if opts.get("images") else None,
            "split": opts["split"],
            "shard_rows": opts["shard_rows"],
            "shard_bytes": shard_bytes,
            "store_images": opts["store_images"].value,
            "verify_images": opts["verify_images"],
            **reader_options,
        }
        with ArtifactBuilder(
            artifact_path(root, "dataset", opts["out"]), "dataset", params=params, command=command_line(),
            overwrite=opts["overwrite"], resume=opts["resume"], resumable=True,
        ) as builder:
            if builder.resumed:
                console.print(f"resuming {builder.dir} from its last completed shard")
            run = ingest if task is None else (lambda *a, **kw: ingest_task(*a, task, **kw))
            with RichProgress() as progress:
                stats = run(
                    records, builder, shard_rows=opts["shard_rows"], shard_bytes=shard_bytes,
                    store_images=store, verify_images=opts["verify_images"], total=records.total,
                    progress=progress, workers=opts["workers"],
                )
            art = builder.publish(stats.to_dict()) if stats.rows else None
        _summary(opts["out"], stats, art.path if art else None)
        if art is None:
            raise InputError(inputs[0] if inputs else fmt, "no usable rows: every row was rejected",
                             "see the reasons above; nothing was published")


def _summary(name: str, stats: IngestStats, path: Path | None) -> None:
    table = Table(title=f"dataset {name}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    if getattr(stats, "task", None):
        table.add_row("task table", stats.task)
    table.add_row("kept rows", f"{stats.rows:,}")
    table.add_row("images", f"{stats.images:,}")
    table.add_row("shards", f"{stats.shards:,}")
    table.add_row("size", f"{stats.bytes / 1e6:,.1f} MB")
    table.add_row("images stored", "yes" if stats.store_images else "no (paths only)")
    table.add_row("rows/s", f"{stats.rows_per_s:,.0f}")
    table.add_row("rejected", f"{stats.rejected:,}")
    for reason, n in stats.rejects.items():
        table.add_row(f"  {reason}", f"{n:,}")
    console.print(table)
    if path is not None:
        if stats.rejected:
            console.print(f"rejected rows and why: {path / REJECTS_FILE}", highlight=False, soft_wrap=True)
        console.print(f"dataset [bold]{name}[/]: {stats.rows:,} rows -> {path}", highlight=False, soft_wrap=True)


# -- one subcommand per format ----------------------------------------------------------------------
@ingest_command("coco", "COCO captions files (captions_train2014.json, captions_val2014.json).")
def coco() -> dict[str, Any]:
    """COCO captions_*.json; images under --images, directly or in train2014/ and val2014/."""
    return {}


@ingest_command("karpathy", "Karpathy dataset_coco.json / dataset_flickr30k.json and/or ALBEF json lists.")
def karpathy(
    keep_restval: Annotated[bool, typer.Option("--keep-restval", help="Keep Karpathy 'restval' as its own split (default: train).")] = False,
) -> dict[str, Any]:
    """Karpathy split files and ALBEF json lists (coco_train.json, coco_test.json, flickr30k_val.json ...)."""
    return {"keep_restval": keep_restval}


ImageCol = Annotated[str, typer.Option("--image-col", help="Column with the image path.")]
CaptionCol = Annotated[str, typer.Option("--caption-col", help="Column with the caption.")]
SplitCol = Annotated[Optional[str], typer.Option("--split-col", help="Column with the split.", show_default=False)]
IdCol = Annotated[Optional[str], typer.Option("--id-col", help="Column with the image id (default: the image path).", show_default=False)]


@ingest_command("csv", "CSV files with a header row (.tsv: tab-separated).")
def csv(image_col: ImageCol = "image", caption_col: CaptionCol = "caption", split_col: SplitCol = None,
        id_col: IdCol = None) -> dict[str, Any]:
    """A CSV table of image paths and captions; URL images are rejected (vlpipe does not download)."""
    return {"image_col": image_col, "caption_col": caption_col, "split_col": split_col, "id_col": id_col}


@ingest_command("jsonl", "JSON Lines files, one object per line.")
def jsonl(image_col: ImageCol = "image", caption_col: CaptionCol = "caption", split_col: SplitCol = None,
          id_col: IdCol = None) -> dict[str, Any]:
    """A JSON Lines table of image paths and captions (a caption may be a list)."""
    return {"image_col": image_col, "caption_col": caption_col, "split_col": split_col, "id_col": id_col}


@ingest_command("folder", "Folders of images with same-name .txt caption files.", images=False)
def folder() -> dict[str, Any]:
    """Images with sidecar captions (cat.jpg + cat.txt, one caption per line), walked recursively."""
    return {}


@ingest_command("webdataset", "Tar shards: paths, globs or {00000..00099} ranges (quote them).", images=False)
def webdataset() -> dict[str, Any]:
    """img2dataset WebDataset tars (KEY.jpg + KEY.txt / KEY.json), read streaming; images always stored."""
    return {}


@ingest_command("cc3m", "CC3M/CC12M TSV files (caption<TAB>image per line).")
def cc3m(
    header: Annotated[bool, typer.Option("--header", help="The first line names the columns.")] = False,
    image_first: Annotated[bool, typer.Option("--image-first", help="Lines are image<TAB>caption (CC12M).")] = False,
) -> dict[str, Any]:
    """Conceptual Captions TSV with local image paths; URL rows are rejected (download with img2dataset)."""
    return {"header": header, "image_first": image_first}


# -- downstream tasks (task tables, see vlpipe.data.task_tables) ------------------------------------
@ingest_command("vqa", "VQA v2 questions + annotations files, ALBEF vqa_*.json / vg_qa.json lists; "
                "optionally dataset_coco.json for Karpathy splits.")
def vqa(
    vg_images: Annotated[Optional[Path], typer.Option(
        "--vg-images", help="Folder Visual Genome image paths are relative to (default: --images).",
        show_default=False)] = None,
) -> dict[str, Any]:
    """Visual question answering: one row per question with its answers and ALBEF answer weights."""
    return {"vg_images": os.path.abspath(vg_images) if vg_images else None}


@ingest_command("ve", "SNLI-VE snli_ve_*.jsonl and/or ALBEF ve_*.json lists.")
def ve() -> dict[str, Any]:
    """Visual entailment: one row per (image, hypothesis) with entailment / neutral / contradiction."""
    return {}


@ingest_command("nlvr2", "NLVR2 train.json / dev.json / test1.json (JSON Lines) and/or ALBEF nlvr_*.json lists.")
def nlvr2() -> dict[str, Any]:
    """Visual reasoning over image pairs: one row per (left, right, sentence) with a True/False label."""
    return {}


@ingest_command("refcoco", "refs(unc).p (or JSON) + instances.json [+ dets.json] and/or ALBEF refcoco+_*.json lists.")
def refcoco() -> dict[str, Any]:
    """Referring expressions (grounding): one row per expression with its box and the image's proposals."""
    return {}
