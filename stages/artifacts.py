"""`vlpipe artifacts ls|show`: what every stage has written, with lineage."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from vlpipe.artifact_query import summarize
from vlpipe.artifacts import list_artifacts, resolve

from ._common import console, human_size, root_of, user_errors

app = typer.Typer(help="List and inspect artifacts (datasets, tokenizers, checkpoints, ...).", no_args_is_help=True)


@app.command("ls")
def ls(
    ctx: typer.Context,
    kind: str = typer.Option(None, "--kind", help="Only artifacts of this kind (dataset, tokenizer, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Table of artifacts: kind, name, rows, size, created, content id and inputs (lineage)."""
    root = root_of(ctx)
    arts = [a for a in list_artifacts(root) if kind is None or a.kind == kind]
    if as_json:
        typer.echo(json.dumps([
            {"kind": a.kind, "name": a.name, "path": str(a.path), "rows": a.manifest.rows,
             "bytes": a.manifest.size_bytes, "created": a.manifest.created,
             "content_id": a.manifest.content_id, "inputs": [i["name"] for i in a.manifest.inputs]}
            for a in arts
        ], indent=2))
        return
    if not arts:
        console.print(f"no artifacts under {root}")
        return
    table = Table(title=f"artifacts under {root}")
    for col, just in (("kind", "left"), ("name", "left"), ("rows", "right"), ("size", "right"),
                      ("created", "left"), ("id", "left"), ("inputs", "left")):
        table.add_column(col, justify=just)
    for a in arts:
        m = a.manifest
        table.add_row(
            m.kind, m.name, "" if m.rows is None else f"{m.rows:,}", human_size(m.size_bytes),
            m.created.replace("T", " ").replace("+00:00", "Z"), m.content_id[:12],
            ", ".join(f"{i['kind']}:{i['name']}" for i in m.inputs) or "-",
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Artifact name (or path to its folder)."),
    kind: str = typer.Option(None, "--kind", help="Kind, when a name exists under several kinds."),
    rows: int = typer.Option(5, "--rows", help="Sample rows to print per table."),
) -> None:
    """Manifest of an artifact plus a DuckDB summary of its Parquet: schema, row count, sample rows."""
    with user_errors():
        art = resolve(name, kind, root_of(ctx))
        summaries = summarize(art, sample_rows=rows)
    m = art.manifest
    head = Table(title=f"{m.kind} {m.name}", show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    for label, value in (
        ("path", str(art.path)), ("schema", f"v{m.schema_version}"), ("content id", m.content_id),
        ("created", m.created), ("vlpipe", m.vlpipe_version), ("command", m.command),
        ("params", json.dumps(m.params)), ("stats", json.dumps(m.stats)),
        ("inputs", ", ".join(f"{i['kind']}:{i['name']} ({i['content_id'][:12]})" for i in m.inputs) or "-"),
        ("files", f"{len(m.files)} files, {human_size(m.size_bytes)}"),
    ):
        head.add_row(label, value)
    console.print(head)
    for s in summaries:
        schema = Table(title=f"{s.table}: {s.rows:,} rows")
        schema.add_column("column")
        schema.add_column("type")
        for c, t in s.schema:
            schema.add_row(c, t)
        console.print(schema)
        for g, counts in s.groups.items():
            console.print(f"by {g}: " + ", ".join(f"{k}={n:,}" for k, n in counts))
        if s.sample:
            sample = Table(title=f"first {len(s.sample)} rows")
            for c in s.sample[0]:
                sample.add_column(c, overflow="ellipsis", max_width=40)
            for r in s.sample:
                sample.add_row(*["" if v is None else str(v) for v in r.values()])
            console.print(sample)
