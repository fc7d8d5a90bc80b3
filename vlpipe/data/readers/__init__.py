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
"""

from .base import Record, Records, Reject
from .cc3m import read_cc3m
from .coco import read_coco
from .folder import read_folder
from .karpathy import albef_image_id, read_karpathy
from .tables import read_csv, read_jsonl
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

__all__ = [
    "READERS", "Record", "Records", "Reject", "albef_image_id", "read_cc3m", "read_coco", "read_csv",
    "read_folder", "read_jsonl", "read_karpathy", "read_webdataset",
]
