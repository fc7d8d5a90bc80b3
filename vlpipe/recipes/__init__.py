"""The paper's recipes as checked-in YAML files: ONE place for ALBEF's hyper-parameters and figures.

Each ``*.yaml`` here is a normal vlpipe config file (``preset:``, ``model:``, ``train:``; ``vlpipe pretrain
--config FILE`` reads it) plus a ``reproduce:`` section with what ``vlpipe reproduce`` needs beyond the
config: the GPU count, the evaluation protocol (split, k_test), the paper's figures, and the ``smoke:``
size overrides. Every line carries its source (paper section/table, or the public ALBEF configs).

    r = load_recipe("albef-coco-retrieval")
    r.config.train.lr            # 1e-5
    r.assignments()              # ["model.vision.image_size=384", ..., "train.lr=1e-5", ...]
    r.evaluate["k_test"]         # 256
    r.paper["finetuned"]["ALBEF 4M"]   # {"tr_r1": 73.1, ...}
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpipe.config import Config, apply_override, from_dict, preset, read_yaml_mapping, validate
from vlpipe.errors import InputError, VlpipeError

RECIPES_DIR = Path(__file__).resolve().parent
PRETRAIN = "albef-coco-pretrain"
COCO = "albef-coco-retrieval"
FLICKR = "albef-flickr-retrieval"

#: The order of the paper's retrieval columns (its tables list TR R@1/5/10 then IR R@1/5/10).
RECALL_KEYS = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10")


def recipe_path(name: str | Path) -> Path:
    """A recipe name (``albef-coco-retrieval``) or a YAML path -> the file."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    cand = RECIPES_DIR / f"{name}.yaml"
    if cand.is_file():
        return cand
    known = ", ".join(sorted(q.stem for q in RECIPES_DIR.glob("*.yaml")))
    raise InputError(name, "no such recipe", f"known recipes: {known}, or a YAML file path")


def flatten(data: dict[str, Any], prefix: str = "") -> list[str]:
    """``{"model": {"vision": {"image_size": 384}}}`` -> ``["model.vision.image_size=384"]`` (file order)."""
    out: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, path + ".")
        elif isinstance(value, bool):
            out.append(f"{path}={'true' if value else 'false'}")
        elif isinstance(value, (list, tuple)):
            out.append(f"{path}=[{','.join(str(v) for v in value)}]")
        else:
            out.append(f"{path}={value}")
    return out


def paper_rows(section: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"ALBEF 4M": [six numbers]}`` -> ``{"ALBEF 4M": {"tr_r1": .., ..., "r_mean": ..}}``."""
    rows: dict[str, dict[str, float]] = {}
    for model, values in section.items():
        if not isinstance(values, (list, tuple)) or len(values) != len(RECALL_KEYS):
            raise InputError(model, f"paper figures must be six numbers {list(RECALL_KEYS)}")
        row = {k: float(v) for k, v in zip(RECALL_KEYS, values)}
        row["r_mean"] = round(sum(row.values()) / len(RECALL_KEYS), 2)
        rows[str(model)] = row
    return rows


@dataclass
class Recipe:
    """One recipe file: ``raw`` is the YAML mapping, ``config`` the Config it describes (preset +
    model/train, plus the smoke overrides when loaded with ``smoke=True``)."""

    name: str
    path: Path
    raw: dict[str, Any]
    config: Config
    smoke: bool = False
    reproduce: dict[str, Any] = field(default_factory=dict)

    @property
    def preset(self) -> str:
        """The base preset the run starts from (the smoke preset under ``--smoke``)."""
        if self.smoke and self.smoke_section.get("preset"):
            return str(self.smoke_section["preset"])
        return str(self.raw.get("preset", "albef-base"))

    @property
    def smoke_section(self) -> dict[str, Any]:
        return dict(self.reproduce.get("smoke") or {})

    def assignments(self) -> list[str]:
        """The recipe's model/train settings as ``--set`` assignments, then the smoke overrides."""
        sets = flatten({k: self.raw[k] for k in ("model", "train") if isinstance(self.raw.get(k), dict)})
        if self.smoke:
            sets += [str(s) for s in self.smoke_section.get("set") or []]
        return sets

    def setting(self, key: str, default: Any = None) -> Any:
        """A ``reproduce:`` value, the smoke section's when ``--smoke`` sets it."""
        if self.smoke and key in self.smoke_section:
            return self.smoke_section[key]
        return self.reproduce.get(key, default)

    @property
    def evaluate(self) -> dict[str, Any]:
        return dict(self.reproduce.get("evaluate") or {})

    @property
    def paper(self) -> dict[str, dict[str, dict[str, float]]]:
        """Section (``finetuned``, ``zero_shot``) -> model -> metric -> value."""
        return {sec: paper_rows(rows) for sec, rows in (self.reproduce.get("paper") or {}).items()}


def load_recipe(name: str | Path, smoke: bool = False) -> Recipe:
    """Read a recipe; its ``config`` is the preset with the file's model/train settings (and, with
    ``smoke``, the smoke preset and size overrides), checked like any vlpipe config."""
    path = recipe_path(name)
    raw = read_yaml_mapping(path, "preset:, model:, train: and reproduce:")
    repro = raw.get("reproduce") or {}
    r = Recipe(path.stem, path, raw, Config(), smoke, dict(repro))
    data = {k: copy.deepcopy(raw[k]) for k in ("model", "train") if k in raw}
    try:
        cfg = from_dict(data, base=preset(r.preset))
        if smoke:
            for s in r.smoke_section.get("set") or []:
                apply_override(cfg, str(s))
        r.config = validate(cfg)
    except InputError:
        raise
    except VlpipeError as e:  # the config checks: name the file
        raise InputError(path, str(e)) from None
    return r


__all__ = ["COCO", "FLICKR", "PRETRAIN", "RECALL_KEYS", "RECIPES_DIR", "Recipe", "flatten", "load_recipe",
           "paper_rows", "recipe_path"]
