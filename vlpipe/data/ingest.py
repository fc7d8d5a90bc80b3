"""Ingest: a reader's records -> validated Parquet shards (+ ``rejects.parquet``), resumably.

:func:`ingest` takes the iterator a reader returns and an :class:`~vlpipe.artifacts.ArtifactBuilder`
that is already entered, and writes into ``builder.dir``:

* ``part-NNNNN.parquet`` with :data:`~vlpipe.data.shards.DATASET_SCHEMA`, one row per kept caption,
  in reader order;
* ``rejects.parquet`` with :data:`~vlpipe.data.shards.REJECTS_SCHEMA`, every refused row and why.

Each caption is checked: bytes that are not UTF-8 -> ``non_utf8``; empty or whitespace-only ->
``empty_caption``; kept captions are stripped and internal whitespace runs become one space. Each
image is checked once per unique path (captions share images): decoded in full when
``verify_images`` (``missing_image``, ``empty_image``, ``truncated_image``, ``corrupt_image``), else
only ``os.stat``-ed (missing / empty). With ``store_images`` the file's bytes go into the ``image``
column (read once for consecutive captions of one image); images a reader holds in memory (tar
shards) are always stored.

Resume: after every completed shard the builder's state records how many reader items were
consumed, the shard count and the rejects so far. A resumed run skips that many items of the
(deterministic) reader, deletes shards beyond the recorded count and ``*.tmp`` files, and goes on
at the next shard index, so interrupted + resumed equals one clean run.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlpipe.artifacts import ArtifactBuilder
from vlpipe.data.images import ImageProblem, check_exists, probe_image, read_image_bytes
from vlpipe.data.readers.base import Record, Reject, as_text
from vlpipe.data.shards import DATASET_SCHEMA, REJECTS_SCHEMA, ShardWriter, list_shards, shard_name
from vlpipe.errors import InputError
from vlpipe.progress import NullProgress, Progress

REJECTS_FILE = "rejects.parquet"
#: ``--store-images auto`` stores image bytes up to this many records (when the count is known).
AUTO_STORE_LIMIT = 100_000
TASK = "ingest"
_VERDICT_CACHE = 16_384  # image path -> verdict, FIFO-bounded (must exceed 2 pool chunks of paths)
_POOL_CHUNK = 2_048  # records per pool round
_POOL_MIN_RECORDS = 5_000  # below this a pool's start-up costs more than it saves


def resolve_store_images(mode: str | bool, total: int | None) -> bool:
    """``yes``/``no``/``auto``: auto stores bytes when the record count is known and <= 100k."""
    if isinstance(mode, bool):
        return mode
    mode = str(mode).lower()
    if mode in ("yes", "true", "on"):
        return True
    if mode in ("no", "false", "off"):
        return False
    if mode == "auto":
        return total is not None and total <= AUTO_STORE_LIMIT
    raise InputError("--store-images", f"unknown value {mode!r}", "use auto, yes or no")


@dataclass
class IngestStats:
    rows: int = 0
    rejected: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    images: int = 0
    images_checked: int = 0
    shards: int = 0
    bytes: int = 0
    seconds: float = 0.0
    records: int = 0
    resumed_from: int = 0
    store_images: bool = False
    verify_images: bool = True
    rejects_file: str = REJECTS_FILE

    @property
    def rows_per_s(self) -> float:
        done = self.records - self.resumed_from
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_s"] = round(self.rows_per_s, 1)
        d["seconds"] = round(self.seconds, 3)
        return d


class ColumnShardWriter(ShardWriter):
    """A :class:`ShardWriter` buffered as column lists (no dict per row); same files, same naming.

    Either :meth:`add` rows, or append values to ``columns[name]`` yourself and call
    :meth:`flush` with the buffered image bytes when a shard is full.
    """

    def __init__(self, folder: Path | str, **kw: Any):
        super().__init__(folder, **kw)
        self.columns: dict[str, list] = {name: [] for name in self.schema.names}

    def add(self, row: dict[str, Any]) -> None:
        for name, col in self.columns.items():
            col.append(row.get(name))
        img = row.get("image")
        self._bytes += len(img) if img else 0
        if self.pending >= self.max_rows or self._bytes >= self.max_bytes:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self.columns[self.schema.names[0]])

    def flush(self, nbytes: int | None = None) -> None:
        """Write the buffered rows as the next shard; ``nbytes``: their image bytes if counted outside."""
        n = self.pending
        if not n:
            return
        if nbytes is not None:
            self._bytes = nbytes
        table = pa.Table.from_pydict(self.columns, schema=self.schema)
        final = self.folder / shard_name(self.index)
        tmp = final.with_name(final.name + ".tmp")
        avg = max(1, self._bytes // n)  # row groups of about row_group_bytes of image data, as ShardWriter
        group_rows = int(min(n, max(64, self.row_group_bytes // avg)))
        pq.write_table(table, tmp, compression=self.compression, row_group_size=group_rows)
        os.replace(tmp, final)
        for col in self.columns.values():
            col.clear()  # in place: callers hold the lists
        self.rows_written += n
        self._bytes = 0
        done = self.index
        self.index += 1
        if self.on_shard is not None:
            self.on_shard(done, n)


# -- image checks -------------------------------------------------------------------------------------
#: (reason | None, detail | None, width | None, height | None)
Verdict = tuple


def _verdict_of_path(path: str) -> Verdict:
    """Full decode of a file (runs in pool workers too)."""
    try:
        w, h = probe_image(path)
        return (None, None, w, h)
    except ImageProblem as p:
        return (p.reason, p.detail, None, None)


def _verdict_of_data(data: bytes) -> Verdict:
    try:
        w, h = probe_image(data=data)
        return (None, None, w, h)
    except ImageProblem as p:
        return (p.reason, p.detail, None, None)


def _probe_job(job: tuple[str, Any]) -> Verdict:
    kind, payload = job
    return _verdict_of_data(payload) if kind == "data" else _verdict_of_path(payload)


class _Images:
    """Checks images once per path and hands out (reason, detail, w, h, bytes) for a record."""

    def __init__(self, verify: bool, store: bool):
        self.verify, self.store = verify, store
        self.verdicts: dict[str, Verdict] = {}
        self.checked = 0

    def remember(self, path: str, verdict: Verdict) -> None:
        v = self.verdicts
        if len(v) >= _VERDICT_CACHE:
            del v[next(iter(v))]
        v[path] = verdict

    def of_path(self, path: str) -> tuple:
        """The verdict for a file plus its bytes when storing."""
        verdict = self.verdicts.get(path)
        data = None
        if verdict is None:
            self.checked += 1
            try:
                if self.verify:
                    if self.store:
                        data = read_image_bytes(path)
                        verdict = (None, None, *probe_image(data=data))
                    else:
                        verdict = (None, None, *probe_image(path))
                elif self.store:
                    data = read_image_bytes(path)
                    verdict = (None, None, None, None)
                else:
                    check_exists(path)
                    verdict = (None, None, None, None)
            except ImageProblem as p:
                verdict = (p.reason, p.detail, None, None)
            self.remember(path, verdict)
        if self.store and data is None and verdict[0] is None:
            try:
                data = read_image_bytes(path)
            except ImageProblem as p:  # vanished since it was checked
                verdict = (p.reason, p.detail, None, None)
        return (*verdict, data)

    def of_data(self, path: str | None, data: bytes) -> Verdict:
        verdict = self.verdicts.pop(path, None) if path is not None else None
        if verdict is None:
            self.checked += 1
            if self.verify:
                verdict = _verdict_of_data(data)
            else:
                verdict = (None, None, None, None) if data else ("empty_image", "image data is 0 bytes", None, None)
        return verdict


def _pooled(items: Iterator, images: _Images, workers: int) -> Iterator:
    """Yield ``items`` unchanged while a process pool decodes their images one chunk ahead."""
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    # fork: workers start in milliseconds and need no importable __main__; they only decode.
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        pending = None  # (records, image keys, async result) of the chunk being decoded
        in_flight: set[str] = set()
        while True:
            chunk = list(islice(items, _POOL_CHUNK))
            submitted = None
            if chunk:
                keys, jobs = [], []
                seen: set[str] = set()
                for rec in chunk:
                    path = rec.image_path
                    if rec.__class__ is Reject or path is None or path in seen or path in in_flight \
                            or path in images.verdicts:
                        continue
                    seen.add(path)
                    keys.append(path)
                    jobs.append(("data", rec.image_bytes) if rec.image_bytes is not None else ("path", path))
                result = pool.map_async(_probe_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))) if jobs else None
                submitted = (chunk, keys, result)
                in_flight = seen
            if pending is not None:
                p_chunk, p_keys, p_result = pending
                if p_result is not None:
                    for key, verdict in zip(p_keys, p_result.get()):
                        images.remember(key, verdict)
                    images.checked += len(p_keys)
                yield from p_chunk
            if submitted is None:
                return
            pending = submitted


def default_workers(verify: bool, total: int | None = None) -> int:
    """Pool processes for verification: one per CPU (at most 8) when verify is on, the machine has
    more than one CPU and the run is not tiny; else 0 (decode in this process).

    Measured on 2 CPUs (benchmarks/bench_ingest.py): 2 processes cut the verify run's time to
    about 0.6x of in-process decoding; threads did not help (Pillow's header parsing holds the GIL).
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not verify or n < 2 or (total is not None and total < _POOL_MIN_RECORDS):
        return 0
    return min(n, 8)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


# -- the run ----------------------------------------------------------------------------------------
def _reject_row(rec: Record | Reject, reason: str, detail: str) -> dict[str, Any]:
    return {
        "image_id": as_text(rec.image_id), "caption_id": as_text(rec.caption_id), "caption": as_text(rec.caption),
        "image_path": as_text(rec.image_path), "source": as_text(rec.source), "reason": reason, "detail": detail,
    }


def _utf8(s: str | None) -> bool:
    """Can ``s`` go into a Parquet string column? (False for surrogate-escaped undecodable bytes.)"""
    if s is None or s.isascii():
        return True
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _clean_staging(folder: Path, shards: int) -> None:
    for p in list_shards(folder):
        try:
            index = int(p.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if index >= shards:
            p.unlink()
    for p in folder.glob("*.tmp"):
        p.unlink()
    (folder / REJECTS_FILE).unlink(missing_ok=True)


def _write_rejects(folder: Path, rejects: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA)
    tmp = folder / (REJECTS_FILE + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / REJECTS_FILE)


def _distinct_images(shards: list[Path]) -> int:
    if not shards:
        return 0
    ids = pa.chunked_array(
        [c for p in shards for c in pq.read_table(p, columns=["image_id"]).column(0).chunks], type=pa.string()
    )
    return int(pc.count_distinct(ids).as_py())


def resume_point(builder: ArtifactBuilder) -> tuple[int, int, list[dict[str, Any]], int]:
    """Where an ingest resumes: (records already consumed, next shard index, rejects so far, rows
    kept so far); a fresh run starts at zero. On resume, staged files past the last finished
    shard are removed."""
    state = builder.load_state() if builder.resumed else {}
    start_shard = int(state.get("shards", 0))
    if builder.resumed:
        _clean_staging(Path(builder.dir), start_shard)
    return (int(state.get("records_consumed", 0)), start_shard, list(state.get("rejects", [])),
            int(state.get("counts", {}).get("rows", 0)))


def skip_consumed(items: Iterator, skip: int, folder: Path, seen: Callable[[Any], None] | None = None) -> None:
    """Read past the ``skip`` records a resumed run already consumed (``seen`` gets each one); a
    one-line error when the inputs now hold fewer."""
    skipped = 0
    for rec in islice(items, skip):
        skipped += 1
        if seen is not None:
            seen(rec)
    if skipped < skip:
        raise InputError(
            folder, f"the inputs now hold {skipped} rows, fewer than the {skip} the interrupted run had read",
            "the inputs changed: pass --overwrite to start over",
        )


def ingest(
    records: Iterable[Record | Reject],
    builder: ArtifactBuilder,
    *,
    shard_rows: int = 10_000,
    shard_bytes: int = 256 << 20,
    store_images: bool = False,
    verify_images: bool = True,
    total: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> IngestStats:
    """Validate ``records`` and write them as dataset shards into ``builder.dir``.

    ``total`` (items the reader will yield, if known) is only used for progress. ``workers``:
    processes decoding images when ``verify_images`` (None: :func:`default_workers`; 0: inline).
    Returns the statistics to pass to ``builder.publish``.
    """
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    folder = Path(builder.dir)
    skip, start_shard, rejects, kept = resume_point(builder)

    writer = ColumnShardWriter(folder, schema=DATASET_SCHEMA, max_rows=shard_rows, max_bytes=shard_bytes,
                               start_index=start_shard)
    images = _Images(verify_images, store_images)
    progress.start(TASK, total, unit="rows")

    items: Iterator = iter(records)
    if skip:
        skip_consumed(items, skip, folder)
        progress.advance(TASK, skip, kept=kept, rejected=len(rejects))
    if workers is None:
        workers = default_workers(verify_images, total)
    if workers > 0 and verify_images:
        items = _pooled(items, images, workers)

    cols = writer.columns
    c_image_id, c_caption_id, c_caption, c_split = cols["image_id"], cols["caption_id"], cols["caption"], cols["split"]
    c_image, c_path, c_width, c_height, c_source = (
        cols["image"], cols["image_path"], cols["width"], cols["height"], cols["source"]
    )
    pos = skip
    last_path: str | None = None
    last: tuple = (None, None, None, None, None)
    since = 0  # items since the last progress report
    pending_bytes = 0  # image bytes buffered in the writer
    of_path, of_data = images.of_path, images.of_data

    def report() -> None:
        progress.advance(TASK, since, kept=kept, rejected=len(rejects))

    for rec in items:
        pos += 1
        since += 1
        if since >= 2048:
            report()
            since = 0
        if rec.__class__ is Reject:
            rejects.append(_reject_row(rec, rec.reason, rec.detail))
            continue
        cap = rec.caption
        if cap.__class__ is bytes:
            try:
                cap = cap.decode("utf-8")
            except UnicodeDecodeError as e:
                rejects.append(_reject_row(rec, "non_utf8", f"caption is not UTF-8 (byte {e.start}: {cap[e.start:e.start + 1]!r})"))
                continue
        elif not cap.isascii():
            try:
                cap.encode("utf-8")
            except UnicodeEncodeError as e:
                rejects.append(_reject_row(rec, "non_utf8", f"caption is not UTF-8 (undecodable at character {e.start})"))
                continue
        cap = " ".join(cap.split())
        if not cap:
            what = "empty" if not rec.caption else "only whitespace"
            rejects.append(_reject_row(rec, "empty_caption", f"caption is {what}"))
            continue
        data = rec.image_bytes
        path = rec.image_path
        if data is not None:
            reason, detail, w, h = of_data(path, data)
        elif path is None:
            reason, detail, w, h = "missing_image", "the record names no image", None, None
        else:
            if path != last_path:
                last = of_path(path)
                last_path = path
            reason, detail, w, h, data = last
        if reason is not None:
            rejects.append(_reject_row(rec, reason, detail))
            continue
        if not (_utf8(rec.image_id) and _utf8(path)):
            rejects.append(_reject_row(rec, "non_utf8", "the image's file name or id is not valid UTF-8"))
            continue
        if w is None:
            w, h = rec.width, rec.height
        c_image_id.append(rec.image_id)
        c_caption_id.append(rec.caption_id)
        c_caption.append(cap)
        c_split.append(rec.split)
        c_image.append(data)
        c_path.append(path)
        c_width.append(w)
        c_height.append(h)
        c_source.append(rec.source)
        kept += 1
        if data is not None:
            pending_bytes += len(data)
        if len(c_image_id) >= shard_rows or pending_bytes >= shard_bytes:
            writer.flush(pending_bytes)
            pending_bytes = 0
            builder.save_state({
                "records_consumed": pos, "shards": writer.index, "rejects": rejects,
                "counts": {"rows": kept, "rejected": len(rejects)},
            })
    writer.flush(pending_bytes)
    report()
    _write_rejects(folder, rejects)
    progress.finish(TASK)

    shards = list_shards(folder)
    by_reason = Counter(r["reason"] for r in rejects)
    return IngestStats(
        rows=kept,
        rejected=len(rejects),
        rejects=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        images=_distinct_images(shards),
        images_checked=images.checked,
        shards=len(shards),
        bytes=sum(p.stat().st_size for p in shards) + (folder / REJECTS_FILE).stat().st_size,
        seconds=time.perf_counter() - t0,
        records=pos,
        resumed_from=skip,
        store_images=store_images,
        verify_images=verify_images,
    )
