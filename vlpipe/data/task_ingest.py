"""Task ingest: a task reader's rows -> task-table Parquet shards (+ ``rejects.parquet``), resumably.

The downstream-task counterpart of :func:`vlpipe.data.ingest.ingest`, with the same discipline:
rows go in reader order into ``part-NNNNN.parquet`` shards of the task's schema
(:data:`vlpipe.data.task_tables.TASK_SCHEMAS`); refused rows go to ``rejects.parquet``
(:data:`~vlpipe.data.task_tables.TASK_REJECTS_SCHEMA`) with a reason; after every shard the
builder's state records how far the reader was consumed, so ``--resume`` equals a clean run.

Checks, in order (first failure wins):

``duplicate_example``                the example id was already seen (first occurrence kept)
``non_utf8`` / ``empty_<text col>``  the text (question, hypothesis, sentence, text) is not UTF-8,
                                     missing, empty or only whitespace; kept text is stripped and
                                     whitespace runs become one space
``unknown_label``                    ve: not entailment/neutral/contradiction; nlvr2: not True/False
``bad_box``                          grounding: a box that is not [x, y, w, h] with w, h > 0
``missing_image`` ... ``corrupt_image``  as caption ingest, for the image and NLVR2's second image
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlpipe.artifacts import ArtifactBuilder
from vlpipe.data.ingest import (
    REJECTS_FILE,
    ColumnShardWriter,
    IngestStats,
    _Images,
    _pooled,
    _utf8,
    default_workers,
    resume_point,
    skip_consumed,
)
from vlpipe.data.readers.base import Reject, as_text
from vlpipe.data.shards import list_shards
from vlpipe.data.task_tables import TASK_REJECTS_SCHEMA, TASK_SCHEMAS, TASK_SCHEMA_VERSION, TEXT_COLUMN, VE_LABELS, TaskRecord
from vlpipe.progress import NullProgress, Progress

TASK = "ingest"


@dataclass
class TaskIngestStats(IngestStats):
    task: str = ""
    task_schema: str = ""


def _reject_row(rec: TaskRecord | Reject, reason: str, detail: str) -> dict[str, Any]:
    if isinstance(rec, Reject):
        example_id, text = rec.caption_id, rec.caption
    else:
        example_id, text = rec.example_id, rec.caption
    return {
        "example_id": as_text(example_id), "image_id": as_text(rec.image_id),
        "text": as_text(text) if isinstance(text, (str, bytes)) else None,
        "image_path": as_text(rec.image_path), "source": as_text(rec.source), "reason": reason, "detail": detail,
    }


def _clean_text(value: Any, column: str) -> tuple[str | None, str | None, str | None]:
    """(clean text, reject reason, detail)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, "non_utf8", f"{column} is not UTF-8 (byte {e.start})"
    if not isinstance(value, str):
        return None, f"empty_{column}", f"no {column} string"
    if not _utf8(value):
        return None, "non_utf8", f"{column} is not valid UTF-8"
    text = " ".join(value.split())
    if not text:
        return None, f"empty_{column}", f"{column} is {'empty' if not value else 'only whitespace'}"
    return text, None, None


def _nlvr_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _valid_box(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and value[2] > 0 and value[3] > 0)


def _check_fields(task: str, fields: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """Task-specific checks and normalisation of a record's fields."""
    out = dict(fields)
    if task == "ve":
        label = out.get("label")
        label = label.strip().lower() if isinstance(label, str) else label
        if label not in VE_LABELS:
            return None, "unknown_label", f"label {fields.get('label')!r} is not one of {', '.join(VE_LABELS)}"
        out["label"] = label
        if out.get("premise") is not None and not (isinstance(out["premise"], str) and _utf8(out["premise"])):
            out["premise"] = None
    elif task == "nlvr2":
        label = _nlvr_label(out.get("label"))
        if label is None:
            return None, "unknown_label", f"label {fields.get('label')!r} is not True or False"
        out["label"] = label
    elif task == "grounding":
        box = out.get("box")
        if box is not None and not _valid_box(box):
            return None, "bad_box", f"box {box!r} is not [x, y, w, h] with positive width and height"
        out["proposals"] = None if out.get("proposals") is None else [b for b in out["proposals"] if _valid_box(b)]
    elif task == "vqa":
        for name in ("question_type", "answer_type", "multiple_choice_answer"):
            if out.get(name) is not None and not _utf8(out[name]):
                out[name] = None
        if not all(isinstance(a, str) and _utf8(a) for a in out.get("answers") or []):
            return None, "non_utf8", "an answer is not valid UTF-8"
    return out, None, None


def _write_rejects(folder: Path, rejects: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rejects, schema=TASK_REJECTS_SCHEMA)
    tmp = folder / (REJECTS_FILE + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / REJECTS_FILE)


def _distinct_images(shards: list[Path], columns: list[str]) -> int:
    ids: set[str] = set()
    for p in shards:
        t = pq.read_table(p, columns=columns)
        for c in columns:
            ids.update(x for x in t.column(c).to_pylist() if x is not None)
    return len(ids)


def ingest_task(
    records: Iterable[TaskRecord | Reject],
    builder: ArtifactBuilder,
    task: str,
    *,
    shard_rows: int = 10_000,
    shard_bytes: int = 256 << 20,
    store_images: bool = False,
    verify_images: bool = True,
    total: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> TaskIngestStats:
    """Validate task ``records`` and write them as ``task``-table shards into ``builder.dir``."""
    if task not in TASK_SCHEMAS:
        raise ValueError(f"unknown task table {task!r} (known: {', '.join(TASK_SCHEMAS)})")
    t0 = time.perf_counter()
    progress = progress or NullProgress()
    folder = Path(builder.dir)
    schema = TASK_SCHEMAS[task]
    text_col = TEXT_COLUMN[task]
    skip, start_shard, rejects, kept = resume_point(builder)

    writer = ColumnShardWriter(folder, schema=schema, max_rows=shard_rows, max_bytes=shard_bytes,
                               start_index=start_shard)
    images = _Images(verify_images, store_images)
    progress.start(TASK, total, unit="rows")
    seen: set[str] = set()

    items: Iterator = iter(records)
    if skip:  # re-read, unchecked, only to know the ids already taken
        skip_consumed(items, skip, folder, lambda rec: seen.add(rec.example_id) if rec.__class__ is TaskRecord else None)
        progress.advance(TASK, skip, kept=kept, rejected=len(rejects))
    if workers is None:
        workers = default_workers(verify_images, total)
    if workers > 0 and verify_images:
        items = _pooled(items, images, workers)

    cols = writer.columns
    task_cols = [f.name for f in schema if f.name not in (
        "example_id", "split", "image_id", "image", "image_path", "width", "height", "source",
        "image_id2", "image2", "image_path2", "width2", "height2")]
    pos = skip
    since = 0
    pending_bytes = 0
    last_path: str | None = None
    last: tuple = (None, None, None, None, None)

    for rec in items:
        pos += 1
        since += 1
        if since >= 2048:
            progress.advance(TASK, since, kept=kept, rejected=len(rejects))
            since = 0
        if rec.__class__ is Reject:
            rejects.append(_reject_row(rec, rec.reason, rec.detail))
            continue
        if rec.example_id in seen:
            rejects.append(_reject_row(rec, "duplicate_example", f"example id {rec.example_id!r} appeared before"))
            continue
        seen.add(rec.example_id)
        text, reason, detail = _clean_text(rec.fields.get(text_col), text_col)
        if reason is None:
            fields, reason, detail = _check_fields(task, rec.fields)
        if reason is not None:
            rejects.append(_reject_row(rec, reason, detail))
            continue
        fields[text_col] = text
        # the image(s)
        data, path = rec.image_bytes, rec.image_path
        if data is not None:
            reason, detail, w, h = images.of_data(path, data)
        elif path is None:
            reason, detail, w, h = "missing_image", "the record names no image", None, None
        else:
            if path != last_path:
                last = images.of_path(path)
                last_path = path
            reason, detail, w, h, data = last
        if reason is not None:
            rejects.append(_reject_row(rec, reason, detail))
            continue
        second: tuple = ()
        if task == "nlvr2":
            if rec.image_path2 is None:
                rejects.append(_reject_row(rec, "missing_image", "the record names no second image"))
                continue
            r2, d2, w2, h2, data2 = images.of_path(rec.image_path2)
            if r2 is not None:
                rejects.append(_reject_row(rec, r2, f"second image: {d2}"))
                continue
            second = (rec.image_id2 or rec.image_path2, data2, rec.image_path2, w2, h2)
        if not (_utf8(rec.image_id) and _utf8(path) and _utf8(rec.example_id)):
            rejects.append(_reject_row(rec, "non_utf8", "the image's file name or the example id is not valid UTF-8"))
            continue
        if w is None:
            w, h = rec.width, rec.height
        cols["example_id"].append(rec.example_id)
        cols["split"].append(rec.split)
        cols["image_id"].append(rec.image_id)
        cols["image"].append(data)
        cols["image_path"].append(path)
        cols["width"].append(w)
        cols["height"].append(h)
        cols["source"].append(rec.source)
        if second:
            for name, value in zip(("image_id2", "image2", "image_path2", "width2", "height2"), second):
                cols[name].append(value)
            if second[1] is not None:
                pending_bytes += len(second[1])
        for name in task_cols:
            cols[name].append(fields.get(name))
        kept += 1
        if data is not None:
            pending_bytes += len(data)
        if len(cols["example_id"]) >= shard_rows or pending_bytes >= shard_bytes:
            writer.flush(pending_bytes)
            pending_bytes = 0
            builder.save_state({
                "records_consumed": pos, "shards": writer.index, "rejects": rejects,
                "counts": {"rows": kept, "rejected": len(rejects)},
            })
    writer.flush(pending_bytes)
    progress.advance(TASK, since, kept=kept, rejected=len(rejects))
    _write_rejects(folder, rejects)
    progress.finish(TASK)

    shards = list_shards(folder)
    by_reason = Counter(r["reason"] for r in rejects)
    return TaskIngestStats(
        rows=kept,
        rejected=len(rejects),
        rejects=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        images=_distinct_images(shards, ["image_id", "image_id2"] if task == "nlvr2" else ["image_id"]),
        images_checked=images.checked,
        shards=len(shards),
        bytes=sum(p.stat().st_size for p in shards) + (folder / REJECTS_FILE).stat().st_size,
        seconds=time.perf_counter() - t0,
        records=pos,
        resumed_from=skip,
        store_images=store_images,
        verify_images=verify_images,
        task=task,
        task_schema=f"{task}/{TASK_SCHEMA_VERSION}",
    )
