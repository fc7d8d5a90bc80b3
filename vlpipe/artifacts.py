"""Versioned on-disk artifacts: manifest, atomic publication, lookup by name, lineage.

An artifact is a folder ``<root>/<kind dir>/<name>/`` holding its files and a ``manifest.json``.
It is built in a hidden sibling folder (``.partial-<name>``) and renamed into place only when
complete, so a crash never leaves a half artifact where a reader would find it. Resumable
stages keep their progress in the staging folder (``_state.json``) and continue from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlpipe import __version__
from vlpipe.errors import ArtifactError

MANIFEST = "manifest.json"
STATE = "_state.json"
PARTIAL_PREFIX = ".partial-"

#: kind -> (folder under the root, schema version this vlpipe writes and reads)
KINDS: dict[str, tuple[str, int]] = {
    "raw": ("raw", 1),
    "dataset": ("datasets", 1),
    "tokenizer": ("tokenizers", 1),
    "checkpoint": ("checkpoints", 1),
    "embeddings": ("embeddings", 1),
    "index": ("indexes", 1),
    "results": ("results", 1),
}


def default_root() -> Path:
    """The artifacts root: ``$VLPIPE_ARTIFACTS`` or ``./artifacts``."""
    return Path(os.environ.get("VLPIPE_ARTIFACTS", "artifacts"))


def kind_dir(root: Path | str, kind: str) -> Path:
    if kind not in KINDS:
        raise ArtifactError(f"unknown artifact kind {kind!r} (known: {', '.join(KINDS)})")
    return Path(root) / KINDS[kind][0]


def artifact_path(root: Path | str, kind: str, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ArtifactError(f"bad artifact name {name!r} (use letters, digits, '-', '_' and '.')")
    return kind_dir(root, kind) / name


@dataclass
class FileEntry:
    path: str
    bytes: int
    sha256: str
    rows: int | None = None


@dataclass
class Manifest:
    kind: str
    name: str
    schema_version: int
    content_id: str
    created: str
    vlpipe_version: str
    command: str
    params: dict[str, Any]
    inputs: list[dict[str, str]]
    files: list[FileEntry]
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        d["files"] = [FileEntry(**f) for f in d.get("files", [])]
        return cls(**d)

    @property
    def rows(self) -> int | None:
        counted = [f.rows for f in self.files if f.rows is not None]
        return sum(counted) if counted else None

    @property
    def size_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


@dataclass
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def ref(self) -> dict[str, str]:
        """How a downstream manifest records this artifact as an input."""
        return {
            "kind": self.kind,
            "name": self.name,
            "content_id": self.manifest.content_id,
            "path": str(self.path),
        }

    def file(self, relpath: str) -> Path:
        return self.path / relpath


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _row_count(path: Path) -> int | None:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    return None


def describe_files(folder: Path) -> list[FileEntry]:
    entries = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name in (MANIFEST, STATE):
            continue
        entries.append(
            FileEntry(
                path=p.relative_to(folder).as_posix(),
                bytes=p.stat().st_size,
                sha256=sha256_file(p),
                rows=_row_count(p),
            )
        )
    return entries


def content_id(kind: str, files: list[FileEntry]) -> str:
    h = hashlib.sha256(kind.encode())
    for f in files:
        h.update(f"\0{f.path}\0{f.sha256}".encode())
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ArtifactBuilder:
    """Builds one artifact in a staging folder and publishes it with a rename.

    Use as a context manager; write files under ``builder.dir`` and finish with
    :meth:`publish`. Leaving the block by an exception keeps the staging folder when the stage is
    ``resumable`` (so ``--resume`` can continue) and deletes it otherwise. Leaving it normally
    without publishing discards the staging folder.
    """

    def __init__(
        self,
        final_dir: Path | str,
        kind: str,
        *,
        params: dict[str, Any] | None = None,
        inputs: list[Artifact] | None = None,
        command: str = "",
        overwrite: bool = False,
        resume: bool = False,
        resumable: bool = False,
    ):
        if kind not in KINDS:
            raise ArtifactError(f"unknown artifact kind {kind!r}")
        self.final_dir = Path(final_dir)
        self.kind = kind
        self.params = dict(params or {})
        self.inputs = list(inputs or [])
        self.command = command
        self.overwrite = overwrite
        self.resume = resume
        self.resumable = resumable
        self.dir = self.final_dir.parent / f"{PARTIAL_PREFIX}{self.final_dir.name}"
        self.resumed = False
        self.published: Artifact | None = None

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> ArtifactBuilder:
        if (self.final_dir / MANIFEST).exists() and not self.overwrite:
            raise ArtifactError(
                f"{self.final_dir}: artifact already exists "
                "(pass --overwrite to replace it, or choose another --out name)"
            )
        if self.final_dir.exists() and not (self.final_dir / MANIFEST).exists():
            if any(self.final_dir.iterdir()) and not self.overwrite:
                raise ArtifactError(
                    f"{self.final_dir}: folder exists but is not a vlpipe artifact "
                    "(choose another --out, or pass --overwrite to replace it)"
                )
        if self.dir.exists():
            if self.resume and self.resumable and (self.dir / STATE).exists():
                stored = json.loads((self.dir / STATE).read_text()).get("params")
                if stored is not None and stored != _jsonable(self.params):
                    raise ArtifactError(
                        f"{self.dir}: the interrupted run used other parameters "
                        "(rerun with the same flags to resume, or pass --overwrite to start over)"
                    )
                self.resumed = True
            elif self.resumable and not self.overwrite and (self.dir / STATE).exists():
                raise ArtifactError(
                    f"{self.dir}: an interrupted run left partial work here "
                    "(pass --resume to continue it, or --overwrite to start over)"
                )
            else:
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.resumed and self.resumable:
            self.save_state({})
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.published is None and self.dir.exists():
            if exc_type is None or not self.resumable:
                shutil.rmtree(self.dir, ignore_errors=True)
        return False

    # -- resumable state ----------------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        p = self.dir / STATE
        if not p.exists():
            return {}
        return json.loads(p.read_text()).get("state", {})

    def save_state(self, state: dict[str, Any]) -> None:
        _write_json_atomic(self.dir / STATE, {"params": _jsonable(self.params), "state": state})

    # -- publication ----------------------------------------------------------------------------
    def publish(self, stats: dict[str, Any] | None = None) -> Artifact:
        (self.dir / STATE).unlink(missing_ok=True)
        files = describe_files(self.dir)
        manifest = Manifest(
            kind=self.kind,
            name=self.final_dir.name,
            schema_version=KINDS[self.kind][1],
            content_id=content_id(self.kind, files),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            vlpipe_version=__version__,
            command=self.command,
            params=_jsonable(self.params),
            inputs=[a.ref() for a in self.inputs],
            files=files,
            stats=_jsonable(stats or {}),
        )
        _write_json_atomic(self.dir / MANIFEST, manifest.to_dict())
        trash = None
        if self.final_dir.exists():
            trash = self.final_dir.parent / f".trash-{self.final_dir.name}-{uuid.uuid4().hex[:8]}"
            os.replace(self.final_dir, trash)
        os.replace(self.dir, self.final_dir)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self.published = Artifact(self.final_dir, manifest)
        return self.published


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so stored params compare equal to freshly built ones."""
    return json.loads(json.dumps(obj, default=str))


# -- reading -------------------------------------------------------------------------------------
def read_manifest(folder: Path | str) -> Manifest:
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ArtifactError(f"{folder}: not a vlpipe artifact (no {MANIFEST})") from None
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise ArtifactError(f"{path}: unreadable manifest ({e}); rebuild the artifact") from None


def check(artifact: Artifact, kind: str | tuple[str, ...]) -> Artifact:
    kinds = (kind,) if isinstance(kind, str) else kind
    m = artifact.manifest
    if m.kind not in kinds:
        raise ArtifactError(
            f"{artifact.path}: is a {m.kind!r} artifact, but a {' or '.join(map(repr, kinds))} "
            "artifact is needed here"
        )
    supported = KINDS[m.kind][1]
    if m.schema_version > supported:
        raise ArtifactError(
            f"{artifact.path}: {m.kind} schema v{m.schema_version} was written by a newer vlpipe "
            f"(this one reads v{supported}); upgrade vlpipe"
        )
    if m.schema_version < supported:
        raise ArtifactError(
            f"{artifact.path}: {m.kind} schema v{m.schema_version} is older than v{supported}; "
            "rebuild it with this vlpipe"
        )
    return artifact


def resolve(
    ref: str | Path, kind: str | tuple[str, ...] | None = None, root: Path | str | None = None
) -> Artifact:
    """Find an artifact by path or by name under ``root`` and check its kind and schema."""
    root = Path(root) if root is not None else default_root()
    p = Path(ref)
    if p.name == MANIFEST:
        p = p.parent
    if (p / MANIFEST).exists():
        art = Artifact(p, read_manifest(p))
        return check(art, kind) if kind else art
    kinds = (kind,) if isinstance(kind, str) else (kind or tuple(KINDS))
    found = [
        kind_dir(root, k) / str(ref)
        for k in kinds
        if "/" not in str(ref) and (kind_dir(root, k) / str(ref) / MANIFEST).exists()
    ]
    if not found and kind:
        # Name exists under another kind: say so rather than "not found".
        others = [
            kind_dir(root, k) / str(ref)
            for k in KINDS
            if "/" not in str(ref) and (kind_dir(root, k) / str(ref) / MANIFEST).exists()
        ]
        if others:
            return check(Artifact(others[0], read_manifest(others[0])), kind)
    if not found:
        want = " or ".join(kinds) if kind else "any kind"
        raise ArtifactError(
            f"{ref}: no artifact of {want} by that name or path under {root} "
            "(see `vlpipe artifacts ls`, or pass a path to an artifact folder)"
        )
    if len(found) > 1:
        raise ArtifactError(
            f"{ref}: ambiguous name, found {', '.join(map(str, found))} (pass the path instead)"
        )
    art = Artifact(found[0], read_manifest(found[0]))
    return check(art, kind) if kind else art


def list_artifacts(root: Path | str | None = None) -> list[Artifact]:
    """Every published artifact under ``root`` (staging folders are skipped)."""
    root = Path(root) if root is not None else default_root()
    out = []
    for k in KINDS:
        d = kind_dir(root, k)
        if not d.is_dir():
            continue
        for child in sorted(d.iterdir()):
            if child.name.startswith(".") or not (child / MANIFEST).exists():
                continue
            try:
                out.append(Artifact(child, read_manifest(child)))
            except ArtifactError:
                continue
    return out
