"""Task tables: the Parquet schemas of downstream-task datasets, and the row type readers yield.

A caption dataset (:data:`vlpipe.data.shards.DATASET_SCHEMA`) has one row per caption. A task
dataset has one row per *example* of a downstream task, in the schema of its task:

========  ==================================================================================
task      schema (common columns + task columns)
========  ==================================================================================
vqa       question_id int64, question, question_type, answer_type, multiple_choice_answer,
          answers list<string> (distinct, first-seen order), answer_counts list<int32>,
          answer_weights list<float32> (ALBEF: count / number of answers; VG answers 0.5)
ve        hypothesis, premise (nullable), label (entailment | neutral | contradiction)
nlvr2     image_id2, image2 (binary), image_path2, width2, height2, sentence, label bool
grounding text, ref_id int64, ann_id int64, category, box fixed_size_list<float64>[4]
          (COCO [x, y, w, h] pixels; null when no annotations were given), proposals
          list<fixed_size_list<float64>[4]> (null when no proposals file was given)
========  ==================================================================================

Common columns, first in every schema: ``example_id`` (unique in the dataset), ``split``,
``image_id``, ``image`` (encoded bytes when stored), ``image_path``, ``width``, ``height``,
``source`` (``<format>:<file name>``). Rejected rows go to ``rejects.parquet`` with
:data:`TASK_REJECTS_SCHEMA`.

The dataset manifest records the task in ``params["task"]`` and ``stats["task"]`` (with
``stats["task_schema"]``, e.g. ``"vqa/1"``); a caption dataset has neither. :func:`task_of`
reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

TASK_SCHEMA_VERSION = 1

COMMON_FIELDS = [
    pa.field("example_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("image", pa.binary()),
    pa.field("image_path", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("source", pa.string(), nullable=False),
]

#: A COCO [x, y, w, h] box in pixels (float64: JSON values round-trip exactly).
BOX = pa.list_(pa.float64(), 4)

VQA_SCHEMA = pa.schema(COMMON_FIELDS + [
    pa.field("question_id", pa.int64()),
    pa.field("question", pa.string(), nullable=False),
    pa.field("question_type", pa.string()),
    pa.field("answer_type", pa.string()),
    pa.field("multiple_choice_answer", pa.string()),
    pa.field("answers", pa.list_(pa.string()), nullable=False),
    pa.field("answer_counts", pa.list_(pa.int32()), nullable=False),
    pa.field("answer_weights", pa.list_(pa.float32()), nullable=False),
])

VE_SCHEMA = pa.schema(COMMON_FIELDS + [
    pa.field("hypothesis", pa.string(), nullable=False),
    pa.field("premise", pa.string()),
    pa.field("label", pa.string(), nullable=False),
])

NLVR2_SCHEMA = pa.schema(COMMON_FIELDS + [
    pa.field("image_id2", pa.string(), nullable=False),
    pa.field("image2", pa.binary()),
    pa.field("image_path2", pa.string()),
    pa.field("width2", pa.int32()),
    pa.field("height2", pa.int32()),
    pa.field("sentence", pa.string(), nullable=False),
    pa.field("label", pa.bool_(), nullable=False),
])

GROUNDING_SCHEMA = pa.schema(COMMON_FIELDS + [
    pa.field("text", pa.string(), nullable=False),
    pa.field("ref_id", pa.int64()),
    pa.field("ann_id", pa.int64()),
    pa.field("category", pa.string()),
    pa.field("box", BOX),
    pa.field("proposals", pa.list_(BOX)),
])

#: task name -> schema
TASK_SCHEMAS: dict[str, pa.Schema] = {
    "vqa": VQA_SCHEMA,
    "ve": VE_SCHEMA,
    "nlvr2": NLVR2_SCHEMA,
    "grounding": GROUNDING_SCHEMA,
}

#: task name -> the column holding the example's text (checked non-empty at ingest)
TEXT_COLUMN = {"vqa": "question", "ve": "hypothesis", "nlvr2": "sentence", "grounding": "text"}

VE_LABELS = ("entailment", "neutral", "contradiction")

#: Rows a task ingest refused, with the reason.
TASK_REJECTS_SCHEMA = pa.schema([
    pa.field("example_id", pa.string()),
    pa.field("image_id", pa.string()),
    pa.field("text", pa.string()),
    pa.field("image_path", pa.string()),
    pa.field("source", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
])


@dataclass(slots=True, kw_only=True)
class TaskRecord:
    """One example of a downstream task, as a reader yields it.

    ``fields`` holds the task columns (``question``, ``answers``, ``label``, ``box``...);
    NLVR2's second image is ``image_id2`` / ``image_path2``. ``image_bytes`` is only set when the
    image exists in memory only. Ingest checks the text, label and box and the image(s).
    """

    example_id: str
    split: str
    image_id: str
    source: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    width: int | None = None
    height: int | None = None
    image_id2: str | None = None
    image_path2: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def caption(self) -> Any:
        """The example's text, for code shared with caption records."""
        for name in ("question", "hypothesis", "sentence", "text"):
            if name in self.fields:
                return self.fields[name]
        return None


def answer_stats(answers: list[str], weight: float | None = None) -> tuple[list[str], list[int], list[float]]:
    """Distinct answers (first-seen order), their counts, and ALBEF's weights.

    ALBEF weights an answer by its count over the number of answers (10 for VQA v2); a fixed
    ``weight`` (ALBEF gives Visual Genome's single answer 0.5) replaces that.
    """
    counts: dict[str, int] = {}
    for a in answers:
        counts[a] = counts.get(a, 0) + 1
    n = len(answers)
    distinct = list(counts)
    weights = [weight if weight is not None else counts[a] / n for a in distinct]
    return distinct, [counts[a] for a in distinct], weights


def task_of(manifest_params: dict[str, Any], stats: dict[str, Any] | None = None) -> str | None:
    """The task a dataset manifest says it holds (None: a caption dataset)."""
    task = manifest_params.get("task") or (stats or {}).get("task")
    return str(task) if task else None


def check_task(artifact: Any, task: str | None) -> Any:
    """Raise :class:`~vlpipe.errors.ArtifactError` unless a dataset artifact holds ``task``
    (None: captions). Stages that read one kind of table call this after ``resolve``."""
    from vlpipe.errors import ArtifactError

    have = task_of(artifact.manifest.params, artifact.manifest.stats)
    if have != task:
        what = {None: "a caption dataset"}.get(have, f"a {have!r} task table")
        want = {None: "a caption dataset"}.get(task, f"a {task!r} task table")
        raise ArtifactError(f"{artifact.path}: is {what}, but {want} is needed here")
    return artifact
