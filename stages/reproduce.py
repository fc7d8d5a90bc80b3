"""`vlpipe reproduce coco|flickr`: the ALBEF paper's retrieval results, end to end, from the checked-in recipes.

The hyper-parameters and the paper's figures live in ONE place, ``vlpipe/recipes/*.yaml``. This stage only
plans and runs the ordinary stages with them (in this process, or pre-training and fine-tuning under
torchrun with ``--gpus N``), prints every command, and ends with a table of the obtained TR/IR R@1/5/10
next to the paper's, also written as a results artifact ``<prefix>-<recipe>-reproduce``.

Every input is checked before anything runs: a missing file is a one-line error naming it, its official
download URL and where to put it (exit 2), and nothing is written. Every step writes an ordinary atomic
artifact; a rerun reuses the finished ones (lineage checked) and resumes an interrupted training step.
``--smoke`` runs the identical plan with the recipes' ``smoke:`` size overrides on miniatures drawn by
``vlpipe synth`` (albef-tiny, a WordPiece tokenizer trained on the miniature, a few steps).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vlpipe.artifacts import ArtifactBuilder, artifact_path, read_manifest, resolve
from vlpipe.errors import InputError, VlpipeError
from vlpipe.recipes import COCO, FLICKR, PRETRAIN, RECALL_KEYS, Recipe, load_recipe
from vlpipe.recipes import inputs as need

from ._common import command_line, console, err_console, root_of, user_errors

app = typer.Typer(
    help="Reproduce the ALBEF paper's image-text retrieval results (COCO 5K, Flickr30K 1K fine-tuned and "
    "zero-shot) from the checked-in recipes in vlpipe/recipes/; --smoke runs the same recipe on a synthetic miniature.",
    no_args_is_help=True,
)

SMOKE_NOTE = ("SMOKE run: albef-tiny trained for a few steps on a synthetic miniature. It proves the recipe runs end "
              "to end; its numbers are not comparable with the paper's.")
Key = tuple[str, str]  # (artifact kind, name)


@dataclass
class Step:
    """One stage call of the plan; it writes the artifact ``key``."""

    title: str
    key: Key
    argv: list[str] | Callable[[], list[str]] = field(default_factory=list)  # vlpipe argv, without --root
    needs: list[Key] = field(default_factory=list)  # artifacts of earlier steps it reads
    train: bool = False  # pre-training / fine-tuning: runs under torchrun with --gpus N > 1
    final: bool = False  # an end product (the reported evaluations)
    python: Callable[[Path], dict[str, Any]] | None = None  # built in-process into a staging folder instead
    why: str = ""  # said with a missing-input error: what needs this step
    run: bool = False
    exists: bool = False
    seconds: float | None = None

    def command(self) -> list[str]:
        return self.argv() if callable(self.argv) else list(self.argv)


@dataclass
class Options:
    root: Path
    smoke: bool
    prefix: str
    gpus: int
    overwrite: bool
    coco_root: Path | None = None
    flickr_root: Path | None = None
    albef_ckpt: Path | None = None
    bert_dir: Path | None = None
    deit_ckpt: Path | None = None
    pretrain_data: list[str] = field(default_factory=list)


def _exists(root: Path, key: Key) -> bool:
    return (artifact_path(root, *key) / "manifest.json").exists()


class Planner:
    """Builds the steps of a recipe; artifact names are ``<prefix>-<what>``."""

    def __init__(self, o: Options):
        self.o = o
        self.steps: list[Step] = []
        self.pretrain = load_recipe(PRETRAIN, o.smoke)
        self.coco = load_recipe(COCO, o.smoke)
        self.flickr = load_recipe(FLICKR, o.smoke)
        self._memo: dict[str, Key] = {}

    def name(self, what: str) -> str:
        return f"{self.o.prefix}-{what}"

    def add(self, step: Step) -> Key:
        if all(s.key != step.key for s in self.steps):
            self.steps.append(step)
        return step.key

    def _flags(self, train: bool = False) -> list[str]:
        if self.o.overwrite:
            return ["--overwrite"]
        return ["--resume"] if train else []  # a rerun continues an interrupted training run

    # -- data -------------------------------------------------------------------------------------
    def coco_dataset(self, why: str = "") -> Key:
        if "coco" in self._memo:
            return self._memo["coco"]
        o, out = self.o, self.name("coco")
        needs: list[Key] = []
        if o.smoke and o.coco_root is None:
            world = self.coco.setting("world")
            wkey = self.add(Step("draw the COCO-layout miniature (vlpipe synth)", ("raw", self.name("world")), [
                "synth", "--out", str(artifact_path(o.root, "raw", self.name("world"))), "--images",
                str(world["images"]), "--size", str(world["size"]), "--seed", str(world["seed"]), *self._flags()]))
            root = artifact_path(o.root, *wkey)
            needs = [wkey]

            def argv() -> list[str]:
                return ["ingest", "karpathy", str(root / "dataset_coco.json"), "--images", str(root), "--out", out,
                        *self._flags()]
        else:
            def argv() -> list[str]:
                files = need.coco_files(o.coco_root)
                return ["ingest", "karpathy", *map(str, files), "--images", str(o.coco_root), "--out", out,
                        *self._flags()]
        self._memo["coco"] = self.add(Step("ingest COCO 2014, Karpathy split", ("dataset", out), argv, needs, why=why))
        return self._memo["coco"]

    def flickr_dataset(self) -> Key:
        o, out = self.o, self.name("flickr")
        needs: list[Key] = []
        if o.smoke and o.flickr_root is None:
            world = self.flickr.setting("world")
            wkey = ("raw", self.name("flickr-world"))

            def draw(folder: Path) -> dict[str, Any]:
                from vlpipe.recipes.smoke import write_flickr_miniature

                return write_flickr_miniature(folder, world["images"], world["seed"], world["size"])

            self.add(Step("draw the Flickr30K-layout miniature (vlpipe synth, rearranged)", wkey, python=draw))
            root = artifact_path(o.root, *wkey)
            needs = [wkey]

            def argv() -> list[str]:
                return ["ingest", "karpathy", str(root / "dataset_flickr30k.json"), "--images", str(root),
                        "--out", out, *self._flags()]
        else:
            def argv() -> list[str]:
                files = need.flickr_files(o.flickr_root)
                return ["ingest", "karpathy", *map(str, files), "--images", str(o.flickr_root), "--out", out,
                        *self._flags()]
        return self.add(Step("ingest Flickr30K, Karpathy split", ("dataset", out), argv, needs))

    # -- the starting checkpoint ------------------------------------------------------------------------
    def start(self) -> Key:
        o = self.o
        if o.albef_ckpt is not None and not o.smoke:
            out = self.name("import")

            def argv() -> list[str]:
                ckpt = need.check_albef_checkpoint(o.albef_ckpt)
                bert = need.check_bert(o.bert_dir, weights=False)
                return ["import", "albef", str(ckpt), "--tokenizer", str(bert), "--out", out, *self._flags()]

            return self.add(Step("import the released ALBEF checkpoint", ("checkpoint", out), argv))
        r, out = self.pretrain, self.name("pretrain")
        if o.pretrain_data:
            shards, needs = list(o.pretrain_data), []
        else:
            data = self.coco_dataset(why="pre-training reads the COCO Karpathy train split (or pass --pretrain-data)")
            shards, needs = [data[1]], [data]
        init: list[str] = []
        if o.smoke:
            tok = self.add(Step("train a WordPiece tokenizer on the miniature (no BERT folder)",
                                ("tokenizer", self.name("wordpiece")),
                                ["tokenizer", "train", "--data", shards[0], "--vocab", str(r.setting("tokenizer_vocab")),
                                 "--min-frequency", "1", "--out", self.name("wordpiece"), *self._flags()], needs))
            init, needs = ["--tokenizer", tok[1]], needs + [tok]

        def argv() -> list[str]:
            extra = list(init)
            if not o.smoke:
                if o.deit_ckpt is None:
                    raise need.no_start_weights()
                extra = ["--init-image", str(need.check_deit(o.deit_ckpt)),
                         "--init-text", str(need.check_bert(o.bert_dir, weights=True))]
            sets = [a for s in r.assignments() for a in ("--set", s)]
            return ["pretrain", *[a for s in shards for a in ("--shards", s)], "--config", r.preset, *sets, *extra,
                    "--workers", str(r.setting("workers", 2)), "--checkpoint-every", str(r.setting("checkpoint_every", 0)),
                    "--out", out, *self._flags(train=True)]

        return self.add(Step(f"pre-train ALBEF ({r.path.name})", ("checkpoint", out), argv, needs, train=True))

    # -- fine-tuning and evaluation ---------------------------------------------------------------------
    def finetune(self, r: Recipe, data: Key, start: Key, what: str, why: str = "") -> Key:
        out = self.name(what)
        sets = [a for s in r.assignments() for a in ("--set", s)]
        argv = ["finetune", "retrieval", "--checkpoint", start[1], "--data", data[1], *sets,
                "--workers", str(r.setting("workers", 2)), "--checkpoint-every", str(r.setting("checkpoint_every", 0)),
                "--eval-split", str(r.setting("eval_split", "val")), "--out", out, *self._flags(train=True)]
        return self.add(Step(f"fine-tune retrieval ({r.path.name})", ("checkpoint", out), argv, [start, data],
                             train=True, why=why))

    def evaluate(self, r: Recipe, ckpt: Key, data: Key, what: str, title: str) -> Key:
        out, ev = self.name(what), r.evaluate
        argv = ["evaluate", "retrieval", "--checkpoint", ckpt[1], "--data", data[1], "--split", str(ev["split"]),
                "--k-test", str(ev["k_test"]), "--batch-size", str(ev["batch_size"]),
                "--workers", str(r.setting("workers", 0)), "--out", out, *self._flags()]
        return self.add(Step(title, ("results", out), argv, [ckpt, data], final=True))


@dataclass
class Setting:
    """One reported comparison: an evaluation next to the paper's figures."""

    key: str
    label: str
    table: str
    evaluation: Key
    paper: dict[str, dict[str, float]]


def plan_coco(o: Options) -> tuple[Planner, list[Setting]]:
    p = Planner(o)
    data = p.coco_dataset()
    ft = p.finetune(p.coco, data, p.start(), "coco-ft")
    ev = p.evaluate(p.coco, ft, data, "coco-test", "evaluate on COCO 5K test (k_test from the recipe)")
    return p, [Setting("coco_finetuned", "COCO 5K test, fine-tuned on COCO", "paper Table 2", ev,
                       p.coco.paper["finetuned"])]


def plan_flickr(o: Options) -> tuple[Planner, list[Setting]]:
    p = Planner(o)
    flickr = p.flickr_dataset()
    why = ("the zero-shot Flickr30K evaluation (paper Table 3) uses the COCO-fine-tuned model: pass --coco-root, "
           "or run `vlpipe reproduce coco` (make reproduce-coco) first with the same --out-prefix")
    coco_key = p.coco_dataset(why=why)
    start = p.start()
    coco_ft = p.finetune(p.coco, coco_key, start, "coco-ft", why=why)
    ft = p.finetune(p.flickr, flickr, start, "flickr-ft")
    ev = p.evaluate(p.flickr, ft, flickr, "flickr-test", "evaluate on Flickr30K 1K test")
    zs = p.evaluate(p.flickr, coco_ft, flickr, "flickr-zeroshot",
                    "evaluate the COCO-fine-tuned model zero-shot on Flickr30K 1K test")
    return p, [Setting("flickr_finetuned", "Flickr30K 1K test, fine-tuned on Flickr30K", "paper Table 2", ev,
                       p.flickr.paper["finetuned"]),
               Setting("flickr_zero_shot", "Flickr30K 1K test, zero-shot (fine-tuned on COCO)", "paper Table 3", zs,
                       p.flickr.paper["zero_shot"])]


def resolve_plan(steps: list[Step], root: Path, overwrite: bool) -> None:
    """Mark what runs, from the end products back: a step runs when its artifact is missing (or
    --overwrite) and a final step or a running step needs it. A reused artifact must have been built
    from the artifacts the plan names (its manifest's inputs), else the run stops before any work."""
    for s in reversed(steps):
        s.exists = _exists(root, s.key)
        wanted = s.final or any(c.run for c in steps if s.key in c.needs)
        s.run = wanted and (overwrite or not s.exists)
    for s in steps:
        if s.exists and not s.run:
            names = {i.get("name") for i in read_manifest(artifact_path(root, *s.key)).inputs}
            stale = [k[1] for k in s.needs if k[0] != "raw" and k[1] not in names]
            if stale:
                raise VlpipeError(f"{artifact_path(root, *s.key)}: was not built from {', '.join(stale)} "
                                  "(pass --overwrite to rebuild, or choose another --out-prefix)")


def check_inputs(steps: list[Step]) -> dict[Key, list[str]]:
    """Every running step's command, built now: a missing input raises its one-line error here."""
    commands = {}
    for s in steps:
        try:
            commands[s.key] = s.command() if s.python is None else []
        except InputError as e:
            if s.run:
                raise VlpipeError(f"{e}; needed because {s.why}") if s.why else e
            commands[s.key] = []
    return commands


def _shown(root: Path, argv: list[str], gpus: int, train: bool) -> str:
    if train and gpus > 1:
        head = ["torchrun", "--standalone", "--nproc_per_node", str(gpus), "-m", "vlpipe.stages.cli"]
    else:
        head = ["vlpipe"]
    return " ".join(shlex.quote(a) for a in [*head, "--root", str(root), *argv])


def _invoke(root: Path, argv: list[str], gpus: int, train: bool) -> int:
    """Run one stage: in this process through the CLI, or under torchrun for training with --gpus > 1."""
    if train and gpus > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
               "-m", "vlpipe.stages.cli", "--root", str(root), *argv]
        return subprocess.run(cmd, check=False).returncode
    from .cli import app as cli_app

    saved = sys.argv
    sys.argv = ["vlpipe", "--root", str(root), *argv]  # manifests record the stage's own command line
    try:
        rv = cli_app(["--root", str(root), *argv], prog_name="vlpipe", standalone_mode=False)
    except SystemExit as e:
        rv = e.code
    finally:
        sys.argv = saved
    return rv if isinstance(rv, int) else 0


def _run_python(step: Step, root: Path, overwrite: bool) -> None:
    with ArtifactBuilder(artifact_path(root, *step.key), step.key[0], params={"step": step.title},
                         command=command_line(), overwrite=overwrite) as b:
        b.publish(step.python(b.dir))


def execute(o: Options, recipe: str, planner: Planner, settings: list[Setting], dry_run: bool) -> None:
    steps = planner.steps
    resolve_plan(steps, o.root, o.overwrite)
    commands = check_inputs(steps)
    mode = "SMOKE (albef-tiny on a synthetic miniature)" if o.smoke else "full"
    console.print(f"[bold]vlpipe reproduce {recipe}[/] ({mode}): {len([s for s in steps if s.run])} of {len(steps)} "
                  f"steps to run, artifacts under {o.root}", highlight=False, soft_wrap=True)
    for i, s in enumerate(steps, 1):
        state = "run" if s.run else ("reuse" if s.exists else "not needed")  # reuse: finished earlier
        line = f"  {i}. [{state}] {s.title} -> {s.key[0]} {s.key[1]}"
        if s.run:
            line += "\n     " + (_shown(o.root, commands[s.key], o.gpus, s.train) if s.python is None
                                 else "(in-process: vlpipe.recipes.smoke)")
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    paper_gpus = planner.pretrain.reproduce.get("gpus", 8)
    if not o.smoke and o.gpus < paper_gpus:
        console.print(f"[yellow]note:[/] the paper trains on {paper_gpus} GPUs (global batch {paper_gpus} x "
                      f"{planner.pretrain.config.train.batch_size} for pre-training, {paper_gpus} x "
                      f"{planner.coco.config.train.batch_size} for fine-tuning; --batch-size is per GPU); this run "
                      f"uses {o.gpus} process(es). Pass --gpus {paper_gpus} to run the training steps under torchrun.",
                      highlight=False, soft_wrap=True)
    if dry_run:
        return
    t_all = time.perf_counter()
    for i, s in enumerate(steps, 1):
        if not s.run:
            continue
        console.rule(f"step {i}/{len(steps)}: {s.title}")
        t0 = time.perf_counter()
        if s.python is not None:
            _run_python(s, o.root, o.overwrite)
        else:
            rc = _invoke(o.root, commands[s.key], o.gpus, s.train)
            if rc != 0:
                err_console.print(f"[bold red]error:[/] step {i} ({s.title}) failed with exit code {rc}; finished "
                                  "artifacts are kept and reused by a rerun", highlight=False, soft_wrap=True)
                raise typer.Exit(rc)
        s.seconds = round(time.perf_counter() - t0, 1)
    summarize(o, recipe, planner, settings, round(time.perf_counter() - t_all, 1))


def _row(d: dict[str, float]) -> list[str]:
    return [f"{d[k]:.1f}" for k in RECALL_KEYS]  # one decimal, as the paper's tables


def summarize(o: Options, recipe: str, planner: Planner, settings: list[Setting], seconds: float) -> None:
    from .evaluate import write_results

    out: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    inputs, tables = [], []
    for st in settings:
        art = resolve(st.evaluation[1], "results", o.root)
        inputs.append(art)
        m = json.loads((art.path / "metrics.json").read_text(encoding="utf-8"))
        got = {k: float(m["headline"][k]) for k in (*RECALL_KEYS, "r_mean")}
        itc = {k: float(m["itc"][k]) for k in (*RECALL_KEYS, "r_mean")}
        out[st.key] = {"label": st.label, "source": st.table, "evaluation": art.name, "checkpoint": m["checkpoint"],
                       "dataset": m["dataset"], "split": m["split"], "images": m["images"], "texts": m["texts"],
                       "k_test": m["k_test"], "image_size": m.get("image_size"), "rerank_score": m["rerank_score"],
                       "obtained": got, "obtained_itc": itc, "paper": st.paper}
        t = Table()
        t.add_column(f"{m['images']} images, {m['texts']} texts", no_wrap=True)
        for label in ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10"):
            t.add_column(label, justify="right", no_wrap=True)
        t.add_row(f"vlpipe ITC+ITM (k {m['k_test']})", *_row(got), style="bold")
        t.add_row("vlpipe ITC only", *_row(itc), style="dim")
        for model, fig in st.paper.items():
            t.add_row(f"paper {model}", *_row(fig))
        tables.append((f"{st.label}: vlpipe vs {st.table} (R@K in %, TR = image->text, IR = text->image)", t))
        for scoring, vals, head in ((f"{st.key}:vlpipe", got, True), (f"{st.key}:vlpipe-itc", itc, False),
                                    *((f"{st.key}:paper {k}", v, False) for k, v in st.paper.items())):
            rows += [{"task": "reproduce", "split": m["split"], "scoring": scoring, "metric": k, "value": float(v),
                      "headline": head} for k, v in vals.items()]
    metrics = {
        "task": "reproduce", "recipe": recipe, "smoke": o.smoke, "prefix": o.prefix, "gpus": o.gpus,
        "recipes": {r.name: str(r.path) for r in (planner.pretrain, planner.coco, planner.flickr)},
        "settings": out,
        "steps": [{"title": s.title, "artifact": f"{s.key[0]}/{s.key[1]}", "ran": s.run, "seconds": s.seconds}
                  for s in planner.steps],
        "seconds": seconds,
        **({"note": SMOKE_NOTE} if o.smoke else {}),
    }
    params = {"recipe": recipe, "smoke": o.smoke, "prefix": o.prefix, "gpus": o.gpus}
    art = write_results(o.root, o.prefix + f"-{recipe}-reproduce", metrics, rows, inputs, params, overwrite=True,
                        stats={k: round(v["obtained"]["r_mean"], 2) for k, v in out.items()})
    for heading, t in tables:
        console.print(heading, style="bold", highlight=False, soft_wrap=True, markup=False)
        console.print(t)
    if o.smoke:
        console.print(f"[yellow]{SMOKE_NOTE}[/]", highlight=False, soft_wrap=True)
    console.print(f"-> {art.path} ({seconds:.0f} s)", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------

_COCO_ROOT = typer.Option(None, "--coco-root", help="COCO 2014 folder: train2014/, val2014/ and dataset_coco.json "
                          "(or ALBEF's coco_train/val/test.json) in it, annotations/ or data/.")
_ALBEF = typer.Option(None, "--albef-ckpt", help="Official ALBEF checkpoint to start from (ALBEF_4M.pth or the 14M "
                      "ALBEF.pth); needs --bert-dir for its tokenizer. Without it: pre-train from --deit-ckpt + --bert-dir.")
_BERT = typer.Option(None, "--bert-dir", help="Local bert-base-uncased folder (tokenizer; weights when pre-training).")
_DEIT = typer.Option(None, "--deit-ckpt", help="DeiT-B/16 weights (deit_base_patch16_224-b5f2ef4d.pth) to pre-train from.")
_DATA = typer.Option([], "--pretrain-data", help="Dataset artifact(s) to pre-train on instead of the COCO train split "
                     "(repeatable; the paper's 4M corpus: COCO, VG, CC3M, SBU).")
_SMOKE = typer.Option(False, "--smoke", help="The same recipe at smoke size: albef-tiny, a few steps, synthetic "
                      "miniatures from `vlpipe synth` (a few minutes on 2 CPU cores).")
_PREFIX = typer.Option(None, "--out-prefix", help="Prefix of every artifact name (default: albef, or smoke with --smoke).")
_GPUS = typer.Option(1, "--gpus", min=1, help="Processes for pre-training and fine-tuning: > 1 runs them under "
                     "torchrun --nproc_per_node N (one per GPU; batch sizes are per GPU).")
_DRY = typer.Option(False, "--dry-run", help="Check the inputs and print the plan and its commands; run nothing.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Rebuild every artifact of the plan instead of reusing finished ones.")


def _options(ctx: typer.Context, smoke: bool, prefix: str | None, gpus: int, overwrite: bool, albef_ckpt, bert_dir,
             deit_ckpt, pretrain_data, **roots: Path | None) -> Options:
    if smoke and (albef_ckpt or deit_ckpt or bert_dir):
        err_console.print("[yellow]note:[/] --smoke trains albef-tiny from scratch with its own tokenizer; "
                          "--albef-ckpt, --deit-ckpt and --bert-dir are not used", highlight=False, soft_wrap=True)
    return Options(root=root_of(ctx), smoke=smoke, prefix=prefix or ("smoke" if smoke else "albef"), gpus=gpus,
                   overwrite=overwrite, albef_ckpt=albef_ckpt, bert_dir=bert_dir, deit_ckpt=deit_ckpt,
                   pretrain_data=list(pretrain_data), **roots)


@app.command("coco")
def coco(
    ctx: typer.Context,
    coco_root: Path = _COCO_ROOT, albef_ckpt: Path = _ALBEF, bert_dir: Path = _BERT, deit_ckpt: Path = _DEIT,
    pretrain_data: list[str] = _DATA, smoke: bool = _SMOKE, out_prefix: str = _PREFIX, gpus: int = _GPUS,
    dry_run: bool = _DRY, overwrite: bool = _OVERWRITE,
) -> None:
    """COCO 5K test, fine-tuned (paper Table 2): ingest COCO (Karpathy split) -> import ALBEF or pre-train
    (albef-coco-pretrain.yaml) -> fine-tune retrieval at 384 px (albef-coco-retrieval.yaml) -> evaluate
    test with k_test 256 -> obtained vs paper table + results artifact <prefix>-coco-reproduce."""
    with user_errors():
        o = _options(ctx, smoke, out_prefix, gpus, overwrite, albef_ckpt, bert_dir, deit_ckpt, pretrain_data,
                     coco_root=coco_root)
        planner, settings = plan_coco(o)
        execute(o, "coco", planner, settings, dry_run)


@app.command("flickr")
def flickr(
    ctx: typer.Context,
    flickr_root: Path = typer.Option(None, "--flickr-root", help="Flickr30K folder: flickr30k-images/ and "
                                     "dataset_flickr30k.json (or ALBEF's flickr30k_train/val/test.json)."),
    coco_root: Path = _COCO_ROOT, albef_ckpt: Path = _ALBEF, bert_dir: Path = _BERT, deit_ckpt: Path = _DEIT,
    pretrain_data: list[str] = _DATA, smoke: bool = _SMOKE, out_prefix: str = _PREFIX, gpus: int = _GPUS,
    dry_run: bool = _DRY, overwrite: bool = _OVERWRITE,
) -> None:
    """Flickr30K 1K test, fine-tuned (paper Table 2, albef-flickr-retrieval.yaml, k_test 128) and zero-shot
    with the COCO-fine-tuned model (paper Table 3). Reuses the artifacts of `reproduce coco` with the same
    --out-prefix; otherwise runs the COCO fine-tuning too (needs --coco-root)."""
    with user_errors():
        o = _options(ctx, smoke, out_prefix, gpus, overwrite, albef_ckpt, bert_dir, deit_ckpt, pretrain_data,
                     coco_root=coco_root, flickr_root=flickr_root)
        planner, settings = plan_flickr(o)
        execute(o, "flickr", planner, settings, dry_run)
