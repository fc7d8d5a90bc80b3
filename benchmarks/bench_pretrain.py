"""Pre-training throughput: samples/s, peak memory, model FLOPs per sample, achieved TFLOP/s.

    python benchmarks/bench_pretrain.py                 # albef-tiny on CPU (+ albef-base on CUDA if present)
    python benchmarks/bench_pretrain.py --preset albef-small --batch-size 16 --steps 5

Random images and token ids (the data pipeline is measured by the loader, not here). FLOPs are
counted by torch's FlopCounterMode over one full training step (forward + backward, momentum
encoders included); TFLOP/s = FLOPs per step / seconds per step. The ratio column compares each
run with the first one measured in the same invocation.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlpipe.config import load_config
from vlpipe.models.albef import ALBEF
from vlpipe.train.loop import make_optimizer


def batch(cfg, b: int, device: str, length: int = 30):
    size = cfg.model.vision.image_size
    ids = torch.randint(5, cfg.model.text.vocab_size, (b, length), device=device)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    image_ids = torch.arange(b, device=device) // 2  # two captions per image, as COCO-like data
    return torch.randn(b, 3, size, size, device=device), ids, mask, image_ids


def run(preset: str, device: str, b: int, steps: int, precision: str, grad_ckpt: bool) -> dict:
    cfg = load_config(preset, ["model.text.vocab_size=8000"] + (["model.grad_checkpointing=true"] if grad_ckpt else []))
    torch.manual_seed(0)
    model = ALBEF(cfg.model).to(device).train()
    opt = make_optimizer(model, 1e-4, 0.02)
    data = batch(cfg, b, device)
    dtype = torch.bfloat16 if precision == "bf16" else None
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def step():
        with torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
            losses = model(*data, alpha=0.4)
        losses["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2):
        step()
    if dev_type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev_type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev_type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "preset": preset, "device": device, "batch": b, "precision": precision or "fp32",
        "s_per_step": dt, "samples_per_s": b / dt, "peak_gib": peak,
        "gflops_per_sample": flops / b / 1e9, "tflops": flops / dt / 1e12,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="only this preset (default: tiny on CPU, base on CUDA)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--grad-checkpointing", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plans = []
    if args.preset:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        plans.append((args.preset, dev, args.batch_size or 32, "bf16" if dev == "cuda" else None))
    else:
        plans.append(("albef-tiny", "cpu", args.batch_size or 32, None))
        if torch.cuda.is_available():
            plans.append(("albef-tiny", "cuda", 256, "bf16"))
            plans.append(("albef-base", "cuda", 64, "bf16"))
    rows = [run(p, d, b, args.steps, prec, args.grad_checkpointing) for p, d, b, prec in plans]
    base = rows[0]["samples_per_s"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    head = f"{'preset':12} {'device':6} {'batch':>5} {'prec':>5} {'s/step':>8} {'samples/s':>10} {'ratio':>6} {'peak GiB':>9} {'GFLOP/sample':>13} {'TFLOP/s':>8}"
    print(head)
    for r in rows:
        print(f"{r['preset']:12} {r['device']:6} {r['batch']:>5} {r['precision']:>5} {r['s_per_step']:>8.3f} "
              f"{r['samples_per_s']:>10.1f} {r['samples_per_s'] / base:>6.2f} {r['peak_gib']:>9.2f} "
              f"{r['gflops_per_sample']:>13.2f} {r['tflops']:>8.3f}")


if __name__ == "__main__":
    main()
