"""The synthetic "pictogram world": procedurally drawn images with captions and full ground truth.

Each image is a background (beach, grass, snow, road, water, plain) with 1-4 objects: OpenMoji
pictograms of ~28 categories (dog, cat, car, tree...) or coloured shapes (circle, square, triangle,
star in 8 colours), each small or large, placed without overlap. Five captions per image are
generated from the ground truth (categories and synonyms, exact counts, shape colours, size words,
spatial relations, background phrases), so every caption is true of its image. Image ``i``
depends only on (seed, i): same seed, same bytes, whatever the number of worker processes.

Modules, one job each: :mod:`.vocab` (words and things), :mod:`.scene` (sampling, relations),
:mod:`.render` (pixels), :mod:`.captions` (templates), :mod:`.tasks` (task writers, ``TASKS``),
:mod:`.task_vqa`, :mod:`.task_snli_ve`, :mod:`.task_nlvr2`, :mod:`.task_refcoco` (downstream
tasks), :mod:`.facts` (names and counts of things), :mod:`.files` (deterministic writers),
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

Downstream tasks (``--tasks captions,vqa,snli_ve,nlvr2,refcoco``; upstream schemas, answers and
labels computed from the scene graph; each module's docstring has the details)::

    task "vqa"
    v2_OpenEnded_mscoco_train2014_questions.json   VQA v2 questions {info, task_type, data_type,
    v2_OpenEnded_mscoco_val2014_questions.json       data_subtype, questions: [{image_id, question,
                                                     question_id}], license}; val2014 = val + test
                                                     images (COCO 2014 layout)
    v2_mscoco_train2014_annotations.json           VQA v2 annotations {info, license, data_type,
    v2_mscoco_val2014_annotations.json               data_subtype, annotations: [{question_type,
                                                     multiple_choice_answer, answers: [10 x {answer,
                                                     answer_confidence, answer_id}], image_id,
                                                     answer_type, question_id}]}
    vqa_train.json, vqa_val.json                   ALBEF: [{question_id, question, answer: [10], image, dataset}]
    vqa_test.json                                  ALBEF: [{question_id, question, image, dataset}]
    answer_list.json                               ALBEF: distinct multiple_choice_answers, sorted
    task "snli_ve"
    snli_ve_{train,dev,test}.jsonl                 SNLI-VE lines {Flickr30K_ID, annotator_labels,
                                                     captionID, gold_label, pairID, sentence1(+parses),
                                                     sentence2(+parses)}; Flickr30K_ID = image file stem
    ve_{train,dev,test}.json                       ALBEF: [{image (path without .jpg), sentence, label}]
    task "nlvr2"
    nlvr2_{train,dev,test}.json                    NLVR2 JSON Lines {validation, sentence, left_url,
                                                     writer, label, synset, query, identifier,
                                                     extra_validations, right_url (+ directory)}
    nlvr_{train,dev,test}.json                     ALBEF: [{images: [left, right], sentence, label}]
    task "refcoco"
    refcoco+/instances.json                        COCO instances (every object's box and category)
    refcoco+/refs(unc).p                           REFER refs (pickle): [{sent_ids, file_name, ann_id,
                                                     ref_id, image_id, split (train/val/testA/testB),
                                                     sentences: [{tokens, raw, sent_id, sent}], category_id}]
    refcoco+/dets.json, refcoco+/cocos.json        {str(image_id): [[x, y, w, h]]}: proposals, ground truth
    refcoco+_{train,val,test}.json                 ALBEF grounding lists [{image, text, ref_id}]

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

Adding a task: write ``writer(scenes, rng, out_dir) -> [relative file names]`` (deterministic
given ``rng``, which is seeded from (seed, task name)) and register it in
:data:`vlpipe.data.synth.tasks.TASKS`.
"""

from .generate import generate, split_sizes
from .scene import Relation, Scene, SceneObject, sample_scene
from .tasks import TASKS

__all__ = ["TASKS", "Relation", "Scene", "SceneObject", "generate", "sample_scene", "split_sizes"]
