"""The real inputs of ``vlpipe reproduce``, checked before anything runs.

Each check raises a one-line :class:`~vlpipe.errors.InputError` naming the missing file, where to
download it (official URLs) and where to put it; the stage turns it into exit code 2.
"""

from __future__ import annotations

from pathlib import Path

from vlpipe.errors import InputError

# Official download locations (text only: vlpipe never downloads anything).
COCO_PAGE = "https://cocodataset.org/#download"
COCO_ZIPS = {"train2014": "http://images.cocodataset.org/zips/train2014.zip",
             "val2014": "http://images.cocodataset.org/zips/val2014.zip"}
KARPATHY_ZIP = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
ALBEF_README = "https://github.com/salesforce/ALBEF#download"
ALBEF_DATA = "https://storage.googleapis.com/sfr-pcl-data-research/ALBEF/data.tar.gz"
ALBEF_4M = "https://storage.googleapis.com/sfr-pcl-data-research/ALBEF/ALBEF_4M.pth"
ALBEF_14M = "https://storage.googleapis.com/sfr-pcl-data-research/ALBEF/ALBEF.pth"
BERT_PAGE = "https://huggingface.co/google-bert/bert-base-uncased"
DEIT_PTH = "https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth"
DEIT_PAGE = "https://github.com/facebookresearch/deit"
FLICKR_PAGE = "https://shannon.cs.illinois.edu/DenotationGraph/"

_ANN_DIRS = ("", "annotations", "data")  # where split files are looked for, relative to the root


def _find(root: Path, names: tuple[str, ...]) -> list[Path] | None:
    """The first folder among root, root/annotations, root/data holding all ``names``."""
    for sub in _ANN_DIRS:
        files = [root / sub / n for n in names]
        if all(f.is_file() for f in files):
            return files
    return None


def coco_files(root: Path | None, flag: str = "--coco-root") -> list[Path]:
    """Check a COCO 2014 root (train2014/, val2014/, Karpathy or ALBEF split files); the split files."""
    where = f"and pass {flag} DIR"
    if root is None:
        raise InputError(flag, "no COCO root given",
                         f"download the COCO 2014 images from {COCO_PAGE} ({COCO_ZIPS['train2014']}, "
                         f"{COCO_ZIPS['val2014']}) into DIR/train2014/ and DIR/val2014/ and dataset_coco.json "
                         f"from {KARPATHY_ZIP} into DIR/, {where}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "COCO root not found",
                         f"download {COCO_ZIPS['train2014']} and {COCO_ZIPS['val2014']} ({COCO_PAGE}) and unzip "
                         f"both into {root}/ so it holds train2014/ and val2014/, {where}")
    for folder, url in COCO_ZIPS.items():
        if not (root / folder).is_dir():
            raise InputError(root / folder, "COCO image folder not found",
                             f"download {url} ({COCO_PAGE}) and unzip it into {root}/")
    files = _find(root, ("dataset_coco.json",)) or _find(root, ("coco_train.json", "coco_val.json", "coco_test.json"))
    if files is None:
        raise InputError(root / "dataset_coco.json", "Karpathy split file not found",
                         f"download {KARPATHY_ZIP} and put its dataset_coco.json into {root}/, or ALBEF's "
                         f"coco_train.json, coco_val.json, coco_test.json from {ALBEF_DATA} ({ALBEF_README}) "
                         f"into {root}/")
    return files


def flickr_files(root: Path | None, flag: str = "--flickr-root") -> list[Path]:
    """Check a Flickr30K root (flickr30k-images/, Karpathy or ALBEF split files); the split files."""
    if root is None:
        raise InputError(flag, "no Flickr30K root given",
                         f"request the Flickr30K images at {FLICKR_PAGE} and unzip them into DIR/flickr30k-images/, "
                         f"put dataset_flickr30k.json from {KARPATHY_ZIP} into DIR/, and pass {flag} DIR")
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "Flickr30K root not found",
                         f"request the Flickr30K images at {FLICKR_PAGE}, unzip them into {root}/flickr30k-images/, "
                         f"and pass {flag} {root}")
    if not (root / "flickr30k-images").is_dir():
        raise InputError(root / "flickr30k-images", "Flickr30K image folder not found",
                         f"request flickr30k-images.tar.gz at {FLICKR_PAGE} and unpack it into {root}/")
    files = (_find(root, ("dataset_flickr30k.json",))
             or _find(root, ("flickr30k_train.json", "flickr30k_val.json", "flickr30k_test.json")))
    if files is None:
        raise InputError(root / "dataset_flickr30k.json", "Karpathy split file not found",
                         f"download {KARPATHY_ZIP} and put its dataset_flickr30k.json into {root}/, or ALBEF's "
                         f"flickr30k_train.json, flickr30k_val.json, flickr30k_test.json from {ALBEF_DATA} "
                         f"({ALBEF_README}) into {root}/")
    return files


def check_albef_checkpoint(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "ALBEF checkpoint not found",
                         f"download ALBEF_4M.pth ({ALBEF_4M}) or the 14M ALBEF.pth ({ALBEF_14M}), listed at "
                         f"{ALBEF_README}, and pass its path with --albef-ckpt (make: ALBEF_CKPT=)")
    return path


def check_deit(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "DeiT-B/16 weights not found",
                         f"download {DEIT_PTH} ({DEIT_PAGE}) and pass its path with --deit-ckpt (make: DEIT_CKPT=)")
    return path


def check_bert(path: Path | None, weights: bool) -> Path:
    """A local bert-base-uncased folder: its tokenizer always, its weights when pre-training from it."""
    need = "config.json, vocab.txt, tokenizer.json" + (", model.safetensors" if weights else "")
    fix = f"download {need} from {BERT_PAGE} into one folder and pass it with --bert-dir (make: BERT_DIR=)"
    if path is None:
        raise InputError("--bert-dir", "no bert-base-uncased folder given", fix)
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "bert-base-uncased folder not found", fix)
    if not ((path / "vocab.txt").is_file() or (path / "tokenizer.json").is_file()):
        raise InputError(path / "vocab.txt", "bert-base-uncased tokenizer not found", fix)
    if weights and not any((path / n).is_file() for n in ("model.safetensors", "pytorch_model.bin")):
        raise InputError(path / "model.safetensors", "bert-base-uncased weights not found", fix)
    return path


def no_start_weights() -> InputError:
    return InputError("--albef-ckpt", "no starting weights given",
                      f"pass --albef-ckpt ALBEF_4M.pth ({ALBEF_4M}, or the 14M ALBEF.pth {ALBEF_14M}) to fine-tune "
                      f"the released model, or --deit-ckpt deit_base_patch16_224-b5f2ef4d.pth ({DEIT_PTH}) with "
                      f"--bert-dir bert-base-uncased/ ({BERT_PAGE}) to pre-train first")
