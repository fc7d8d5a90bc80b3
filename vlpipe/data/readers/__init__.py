"""Readers of upstream caption datasets: each yields :class:`Record` / :class:`Reject` in order.

=============  ========================================================================
format         reader
=============  ========================================================================
coco           :func:`read_coco` (``captions_{train,val}2014.json``)
karpathy       :func:`read_karpathy` (``dataset_{coco,flickr30k}.json`` and ALBEF lists)
csv / jsonl    :func:`read_csv`, :func:`read_jsonl`
folder         :func:`read_folder` (images + ``.txt`` sidecars)
webdataset     :func:`read_webdataset` (img2dataset tar shards)
cc3m           :func:`read_cc3m` (Conceptual Captions TSV)
=============  ========================================================================

Downstream-task readers yield :class:`~vlpipe.data.task_tables.TaskRecord` / :class:`Reject`
rows of a task table (:mod:`vlpipe.data.task_tables`):

=============  ===========  ===============================================================
format         task table   reader
=============  ===========  ===============================================================
vqa            vqa          :func:`read_vqa` (VQA v2 questions + annotations, ALBEF vqa/vg lists)
ve             ve           :func:`read_snli_ve` (``snli_ve_*.jsonl``, ALBEF ve lists)
nlvr2          nlvr2        :func:`read_nlvr2` (NLVR2 JSON Lines, ALBEF nlvr lists)
refcoco        grounding    :func:`read_refcoco` (``refs(unc).p`` + ``instances.json`` + ``dets.json``,
                            ALBEF ``refcoco+_*.json``)
=============  ===========  ===============================================================
"""

from .base import Record, Records, Reject
from .cc3m import read_cc3m
from .coco import read_coco
from .folder import read_folder
from .karpathy import albef_image_id, read_karpathy
from .nlvr2 import read_nlvr2
from .refcoco import read_refcoco
from .snli_ve import read_snli_ve
from .tables import read_csv, read_jsonl
from .vqa import read_vqa
from .webdataset import read_webdataset

#: format name -> reader; every reader is called as ``reader(inputs, images, split, **options)``.
READERS = {
    "coco": read_coco,
    "karpathy": read_karpathy,
    "csv": read_csv,
    "jsonl": read_jsonl,
    "folder": read_folder,
    "webdataset": read_webdataset,
    "cc3m": read_cc3m,
}

#: task format name -> (task table, reader); called as ``reader(inputs, images, split, **options)``.
TASK_READERS = {
    "vqa": ("vqa", read_vqa),
    "ve": ("ve", read_snli_ve),
    "nlvr2": ("nlvr2", read_nlvr2),
    "refcoco": ("grounding", read_refcoco),
}

__all__ = [
    "READERS", "TASK_READERS", "Record", "Records", "Reject", "albef_image_id", "read_cc3m", "read_coco",
    "read_csv", "read_folder", "read_jsonl", "read_karpathy", "read_nlvr2", "read_refcoco", "read_snli_ve",
    "read_vqa", "read_webdataset",
]
