"""What a pre-trained checkpoint knows about the synthetic world's objects, by kind of thing.

For every object type present in the test split of a `vlpipe synth` world (the 28 pictogram
categories, the colour + shape pairs) and every background, the test images are ranked by the
zero-shot ITC similarity to a short text ("a dog", "a red circle", "a beach") and, separately, by the
ITM match probability of that text with each image; the average precision of each ranking against
the scene ground truth is averaged per group. Chance is each type's prevalence (the mean AP of a
random ranking). Retrieval recall mixes everything; this separates "knows the backgrounds" from
"knows the objects" (see issue #3's notes: albef-tiny's 5-minute recipe learns the former only).

    python benchmarks/probe_objects.py CHECKPOINT_FOLDER SYNTH_FOLDER [--images 500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from vlpipe.data.transforms import to_tensor
from vlpipe.retrieval.rerank import encode_images, encode_texts
from vlpipe.train.pretrain import load_checkpoint

BACKGROUND_TEXT = {"beach": "a beach", "grass": "a grassy field", "snow": "a snowy scene", "road": "a road",
                   "water": "open water", "plain": "a plain background"}


def average_precision(scores: torch.Tensor, positive: list[bool]) -> float:
    hits, total = 0, 0.0
    for rank, i in enumerate(scores.argsort(descending=True).tolist(), 1):
        if positive[i]:
            hits += 1
            total += hits / rank
    return total / max(1, sum(positive))


def groups_of(images: list[dict]) -> dict[str, dict[str, set]]:
    """group -> text -> image ids that hold it."""
    out: dict[str, dict[str, set]] = {"pictogram": {}, "shape": {}, "background": {}}
    for im in images:
        out["background"].setdefault(BACKGROUND_TEXT.get(im["background"], im["background"]), set()).add(im["image_id"])
        for o in im["objects"]:
            if o["kind"] == "pictogram":
                out["pictogram"].setdefault(f"a {o['category']}", set()).add(im["image_id"])
            else:
                out["shape"].setdefault(f"a {o['color']} {o['category']}", set()).add(im["image_id"])
    return out


@torch.no_grad()
def probe(model, cfg, tokenizer, images: list[dict], pixels: torch.Tensor) -> dict[str, dict[str, float]]:
    image_tokens, image_feat = encode_images(model, pixels)
    results = {}
    for group, texts in groups_of(images).items():
        names = sorted(texts)
        tokens, mask, text_feat = encode_texts(model, tokenizer, names, cfg.model.text.max_len)
        sim = text_feat @ image_feat.t()
        itc, itm, chance = [], [], []
        for k, name in enumerate(names):
            positive = [im["image_id"] in texts[name] for im in images]
            logits = model.itm_logits(tokens[k:k + 1].expand(len(images), -1, -1),
                                      mask[k:k + 1].expand(len(images), -1), image_tokens)
            itc.append(average_precision(sim[k], positive))
            itm.append(average_precision(logits.softmax(-1)[:, 1], positive))
            chance.append(sum(positive) / len(positive))
        results[group] = {"types": len(names), "itc_map": 100 * sum(itc) / len(itc),
                          "itm_map": 100 * sum(itm) / len(itm), "chance_map": 100 * sum(chance) / len(chance)}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="checkpoint folder (vlpipe pretrain or finetune retrieval)")
    ap.add_argument("world", type=Path, help="the `vlpipe synth` output folder (holds scenes.json)")
    ap.add_argument("--images", type=int, default=500, help="test images to rank (default 500)")
    args = ap.parse_args()
    model, cfg, tokenizer = load_checkpoint(args.checkpoint)
    model.eval()
    scenes = json.loads((args.world / "scenes.json").read_text())
    images = [im for im in scenes["images"] if im["split"] == "test"][: args.images]
    size = cfg.model.vision.image_size
    pixels = torch.stack([to_tensor(Image.open(args.world / im["file_name"]).convert("RGB").resize((size, size), Image.BICUBIC))
                          for im in images])
    print(f"{args.checkpoint.name}: {len(images)} test images of {args.world}")
    print(f"{'group':<11} {'types':>5} {'ITC mAP':>8} {'ITM mAP':>8} {'chance':>7}")
    for group, r in probe(model, cfg, tokenizer, images, pixels).items():
        print(f"{group:<11} {r['types']:>5} {r['itc_map']:>8.1f} {r['itm_map']:>8.1f} {r['chance_map']:>7.1f}")


if __name__ == "__main__":
    main()
