"""The synthetic "pictogram world": procedurally drawn images with captions and full ground truth.

Each image is a background (beach, grass, snow, road, water, plain) with 1-4 objects: OpenMoji
pictograms of ~28 categories (dog, cat, car, tree...) or coloured shapes (circle, square, triangle,
star in 8 colours), each small or large, placed without overlap. Five captions per image are
generated from the ground truth (categories and synonyms, exact counts, shape colours, size words,
spatial relations, background phrases), so every caption is true of its image. Image ``i``
depends only on (seed, i): same seed, same bytes, whatever the number of worker processes.

Modules, one job each: :mod:`.vocab` (words and things), :mod:`.scene` (sampling, relations),
:mod:`.render` (pixels), :mod:`.captions` (templates), :mod:`.tasks` (task writers, ``TASKS``),
:mod:`.generate` (the process pool, ``generate()``).

Output folder (task "captions", the default; upstream schemas)::

    train2014/COCO_train2014_{id:012d}.jpg     train split images (ids are 1-based)
    val2014/COCO_val2014_{id:012d}.jpg         val and test split images
    annotations/captions_train2014.json        COCO captions: info, licenses, images, annotations
    annotations/captions_val2014.json          (val + test images, as in the Karpathy split)
    dataset_coco.json                          Karpathy split file (filepath, filename, imgid,
                                               split, sentences[tokens, raw, imgid, sentid],
                                               cocoid, sentids), "dataset": "coco"
    coco_train.json                            ALBEF: [{caption, image, image_id: "coco_{id}"}]
    coco_val.json, coco_test.json              ALBEF: [{image, caption: [5 captions]}]
    scenes.json                                ground truth (below), always written

``scenes.json``::

    {
      "world": "vlpipe-synth", "version": 1, "seed": int, "image_size": int,
      "splits": {"train": int, "val": int, "test": int},            # images per split
      "vocabulary": {"categories": {name: {"nouns": [..], "codepoint": "U+1F415"}},
                     "shapes": [..], "colors": {name: [r, g, b]},
                     "backgrounds": {name: [caption phrases]}},
      "images": [                                                    # ordered by image_id
        {"image_id": int (1-based), "index": int (0-based), "file_name": "train2014/...jpg",
         "split": "train" | "val" | "test", "width": int, "height": int,
         "background": "beach" | "grass" | "snow" | "road" | "water" | "plain",
         "objects": [{"id": int (index in this list),
                      "kind": "pictogram" | "shape",
                      "category": category name ("dog") or shape name ("circle"),
                      "color": colour name for shapes, null for pictograms,
                      "size": "small" | "large",
                      "bbox": [x, y, w, h] (pixels, tight around the drawn pixels),
                      "flip": bool (pictogram mirrored)}],
         "relations": [{"subject": object id, "predicate": "left of" | "right of" | "above"
                        | "below" | "next to", "object": object id}],   # subject predicate object
         "captions": [5 str],
         "variant": int (seed of the background's random variation)}
      ]
    }

Adding a task (VQA, SNLI-VE, NLVR2, RefCOCO+...): write ``writer(scenes, rng, out_dir) ->
[relative file names]`` and register it in :data:`vlpipe.data.synth.tasks.TASKS`.
"""

from .generate import generate, split_sizes
from .scene import Relation, Scene, SceneObject, sample_scene
from .tasks import TASKS

__all__ = ["TASKS", "Relation", "Scene", "SceneObject", "generate", "sample_scene", "split_sizes"]
