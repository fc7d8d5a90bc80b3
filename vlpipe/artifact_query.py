"""DuckDB queries over an artifact's Parquet files: schema, row counts, split counts, sample rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpipe.artifacts import Artifact


@dataclass
class ParquetSummary:
    table: str  # which files: a glob relative to the artifact, e.g. "part-*.parquet"
    rows: int
    schema: list[tuple[str, str]]
    sample: list[dict[str, Any]]
    groups: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)


def _tables(artifact: Artifact) -> dict[str, list[Path]]:
    """Parquet files grouped into logical tables: shards ``part-*`` and every other stem."""
    out: dict[str, list[Path]] = {}
    for p in sorted(artifact.path.rglob("*.parquet")):
        rel = p.relative_to(artifact.path)
        key = str(rel.parent / "part-*.parquet") if p.name.startswith("part-") else str(rel)
        out.setdefault(key, []).append(p)
    return out


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def summarize(artifact: Artifact, sample_rows: int = 5, group_by: tuple[str, ...] = ("split", "reason")) -> list[ParquetSummary]:
    """One summary per logical Parquet table of the artifact. Binary columns show their length."""
    import duckdb

    con = duckdb.connect()
    summaries = []
    for name, paths in _tables(artifact).items():
        src = f"read_parquet({_sql_list(paths)})"
        described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
        schema = [(r[0], str(r[1])) for r in described]
        rows = con.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
        cols = [
            f'octet_length("{c}") AS "{c}_bytes"' if t.upper() == "BLOB" else f'"{c}"'
            for c, t in schema
        ]
        cur = con.execute(f"SELECT {', '.join(cols)} FROM {src} LIMIT {int(sample_rows)}")
        names = [d[0] for d in cur.description]
        sample = [dict(zip(names, r)) for r in cur.fetchall()]
        groups = {}
        for g in group_by:
            if any(c == g for c, _ in schema):
                groups[g] = con.execute(
                    f'SELECT "{g}", count(*) AS n FROM {src} GROUP BY 1 ORDER BY n DESC, 1'
                ).fetchall()
        summaries.append(ParquetSummary(name, rows, schema, sample, groups))
    con.close()
    return summaries
