"""Measure xfer on one GPU: trainer=gpu (bf16-mixed) for the img2txt target stage and torchvision resnet18
at 64x64 and 224x224, against a plain PyTorch loop on the same device; the step split into data and compute,
channels-last and torch.compile on and off, and device-resident batches against pinned memory with workers.

    python scripts/bench_gpu.py              # on a machine with a GPU (under 8 minutes); make bench-gpu
    python scripts/bench_gpu.py --dry-run    # on the CPU: every measurement at a toy size, to check the
                                             # script; its figures mean nothing and it never writes docs/

Writes gpu.json (every figure) and gpu.md (the table), by default docs/bench/gpu.{json,md}; a dry run
writes bench-gpu-dry-run.{json,md} unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - scripts/bench.py: compose, target_stage, lightning_fit, machine

SECTIONS = ("img2txt", "resnet18", "loaders")
# one GPU, bf16 mixed precision: conf/trainer/gpu.yaml. A dry run keeps the precision on the CPU.
GPU = ["trainer=gpu"]
DRY = ["trainer=gpu", "trainer.accelerator=cpu", "trainer.benchmark=false"]
RESNET = [o for o in bench.BACKBONE if not o.startswith("target.batch_size")]
RESNET_SIZES = (64, 224)
LOADER_WORKERS = 4
BUDGET_S = 7 * 60  # sections left when it is spent are skipped (and say so): the whole bench stays under 8 min


class Plan:
    """The sizes of every measurement: a real GPU run, or a dry run's toy ones."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.trainer = DRY if dry else GPU
        self.device = torch.device("cpu" if dry else "cuda")
        self.plain_s = 0.0 if dry else 10.0  # Lightning/plain pairs: the plain loop trains at least this long
        self.reps = 1 if dry else 2
        self.steps, self.warmup = (2, 1) if dry else (50, 10)
        self.split_steps = 3 if dry else 30
        self.resnet_batch = 8 if dry else 64
        # a CPU without native bf16 (AVX2) runs bf16 convolutions at a few samples/s: a dry run's images are
        # small enough that the whole check takes a minute or two there, not the 7-minute budget
        self.sizes = (16, 32) if dry else RESNET_SIZES
        self.limit = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=2"] if dry else []
        self.compile_backend = "eager" if dry else "inductor"  # a dry run checks the path, not inductor


def compose(plan: Plan, overrides: list[str]):
    return bench.compose([*overrides, *plan.trainer, *plan.limit])


def is_bf16(cfg) -> bool:
    return "bf16" in str(cfg.trainer.precision)


def pair(plan: Plan, cfg, dm, tmp: Path, label: str) -> dict[str, Any]:
    """Lightning's fit against the plain loop on the same device, precision and data path, alternating
    the order of the pairs; GPU utilisation sampled during each."""
    from xfer.perf import GpuUtilisation, plain_fit

    runs: dict[str, list[dict[str, Any]]] = {"lightning": [], "plain": []}
    for rep in range(plan.reps):
        for kind in (("lightning", "plain") if rep % 2 == 0 else ("plain", "lightning")):
            workdir = tmp / f"{label}-{kind}{rep}"
            with GpuUtilisation() as util:
                if kind == "lightning":
                    r = bench.lightning_fit(cfg, dm, workdir)
                else:
                    module, dm, _ = bench.target_stage(cfg, dm)
                    if is_bf16(cfg) and module.optim.get("fused", "auto") == "auto":
                        module.optim = {**module.optim, "fused": False}  # as under bf16-mixed (module._fused)
                    workdir.mkdir(parents=True)
                    limit = cfg.trainer.limit_train_batches
                    t = plain_fit(module, dm, int(cfg.trainer.max_epochs), int(cfg.seed),
                                  cfg.trainer.get("gradient_clip_val"), ckpt_dir=workdir, device=plan.device,
                                  limit_batches=limit if isinstance(limit, int) else None, bf16=is_bf16(cfg))
                    r = {"wall_s": t.wall_s, "train_s": t.train_s, "steps": t.steps,
                         "samples_per_s": t.samples / t.train_s}
            r["gpu_util_pct"] = util.mean
            runs[kind].append(r)
            print(f"  {label} {kind:9s} rep {rep}: {r['wall_s']:.1f} s, {r['samples_per_s']:.0f} samples/s"
                  + (f", GPU {util.mean:.0f}% busy" if util.mean is not None else ""), flush=True)
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["lightning"], runs["plain"])]
    return {"epochs": int(cfg.trainer.max_epochs), "runs": runs, "ratios": ratios, "ratio": statistics.median(ratios),
            "goal": 1.05, "plain_wall_s": statistics.median(r["wall_s"] for r in runs["plain"]),
            "samples_per_s": max(r["samples_per_s"] for r in runs["lightning"]),
            "gpu_util_pct": _median([r["gpu_util_pct"] for r in runs["lightning"]])}


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def epochs_for(plan: Plan, cfg, dm) -> int:
    """Epochs that make the plain loop train at least ``plan.plain_s``: one timed plain epoch decides."""
    from xfer.perf import plain_fit

    if plan.dry:
        return 1
    module, dm, _ = bench.target_stage(cfg, dm)
    t = plain_fit(module, dm, 1, int(cfg.seed), cfg.trainer.get("gradient_clip_val"), device=plan.device,
                  bf16=is_bf16(cfg))
    return max(2, min(200, math.ceil(plan.plain_s / max(t.wall_s, 1e-3))))


def bench_img2txt(plan: Plan, tmp: Path, out: dict[str, Any]) -> None:
    from xfer import build
    from xfer.perf import step_split

    cfg = compose(plan, ["experiment=img2txt"])
    dm = build.datamodule(cfg.target, cfg.seed)
    epochs = epochs_for(plan, cfg, dm)
    cfg = compose(plan, ["experiment=img2txt", f"trainer.max_epochs={epochs}"])
    result = pair(plan, cfg, dm, tmp, "img2txt")
    module = bench.target_stage(cfg, dm)[0].to(plan.device)
    result["split"] = step_split(module, dm.train_dataloader(), plan.device, plan.split_steps, bf16=is_bf16(cfg))
    result["on_device"] = bool(dm.placed)
    result["precision"] = str(cfg.trainer.precision)
    out["img2txt"] = result


def bench_resnet18(plan: Plan, tmp: Path, out: dict[str, Any]) -> None:
    """The bare step at each size: contiguous and channels-last, eager and compiled (contiguous), in bf16
    autocast; then the Lightning/plain pair at the first size."""
    from xfer import build
    from xfer.perf import step_rate

    sizes: dict[str, Any] = {}
    for size in plan.sizes:
        cfg = compose(plan, [*RESNET, f"trunk.input_size=[{size},{size}]", f"target.batch_size={plan.resnet_batch}"])
        dm = build.datamodule(cfg.target, cfg.seed)
        x, y = (t.to(plan.device) for t in dm.datasets["train"].tensors)
        batch = min(plan.resnet_batch, len(y))
        rates: dict[str, float | None] = {}
        notes: dict[str, Any] = {}
        for variant in ("contiguous", "channels_last", "compiled"):
            module = bench.target_stage(cfg, dm)[0].to(plan.device)
            forward = None
            if variant == "channels_last":
                module = module.to(memory_format=torch.channels_last)
            if variant == "compiled":
                forward = torch.compile(module, backend=plan.compile_backend)
            timings: dict[str, float] = {}
            try:
                rates[variant] = step_rate(module, x, y, batch, steps=plan.steps, warmup=plan.warmup,
                                           forward=forward, bf16=is_bf16(cfg), timings=timings)
            except Exception as err:  # noqa: BLE001 - a compiler that fails is a figure too; the rest goes on
                rates[variant] = None
                notes[f"{variant}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            if variant == "compiled":
                notes["compile_warmup_s"] = timings.get("warmup_s")
        sizes[str(size)] = {"batch_size": batch, "samples_per_s": rates, **notes}
        shown = ", ".join(f"{k} {v:.0f}" if v else f"{k} failed" for k, v in rates.items())
        print(f"  resnet18 {size}x{size}: {shown} samples/s", flush=True)
    size = plan.sizes[0]
    base = [*RESNET, f"trunk.input_size=[{size},{size}]", f"target.batch_size={plan.resnet_batch}"]
    cfg = compose(plan, base)
    dm = build.datamodule(cfg.target, cfg.seed)
    epochs = epochs_for(plan, cfg, dm)
    lightning = pair(plan, compose(plan, [*base, f"trainer.max_epochs={epochs}"]), dm, tmp, f"resnet18-{size}")
    out["resnet18"] = {"sizes": sizes, "lightning": {"size": size, **lightning},
                       "compile_backend": plan.compile_backend}


def bench_loaders(plan: Plan, tmp: Path, out: dict[str, Any]) -> None:
    """One workload's training steps fed three ways: batches gathered on the device (on_device), from the
    CPU through pinned memory with LOADER_WORKERS workers, and from the CPU as they are (pageable, no
    workers). Free-running samples/s over the same steps, and the synchronised data/compute split."""
    from xfer import build
    from xfer.perf import step_split, sync, train_step

    feeds = {"on_device": ["on_device=true"],
             "pinned_workers": ["on_device=false", "pin_memory=true", f"num_workers={1 if plan.dry else LOADER_WORKERS}"],
             "pageable": ["on_device=false", "pin_memory=false", "num_workers=0"]}
    workloads = {"img2txt": ["experiment=img2txt"],
                 f"resnet18_{plan.sizes[0]}": [*RESNET, f"trunk.input_size=[{plan.sizes[0]},{plan.sizes[0]}]",
                                               f"target.batch_size={plan.resnet_batch}"]}
    results: dict[str, Any] = {}
    for name, overrides in workloads.items():
        results[name] = {}
        for feed, settings in feeds.items():
            cfg = compose(plan, [*overrides, *(f"target.{s}" for s in settings)])
            dm = build.datamodule(cfg.target, cfg.seed)
            placed = dm.place(plan.device)
            loader = dm.train_dataloader()
            module = bench.target_stage(cfg, dm)[0].to(plan.device)
            split = step_split(module, loader, plan.device, plan.split_steps, bf16=is_bf16(cfg))
            optimizer, _ = module.make_optimizer(10**6)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            samples, steps, start = 0, 0, time.perf_counter()
            while steps < max(plan.steps, len(loader)):  # at least one epoch: workers start up within it
                for x, y in loader:
                    x, y = x.to(plan.device, non_blocking=True), y.to(plan.device, non_blocking=True)
                    train_step(module, optimizer, params, x, y, 1.0, bf16=is_bf16(cfg))
                    samples, steps = samples + len(y), steps + 1
                    if plan.dry and steps >= plan.steps:
                        break
                if plan.dry:
                    break
            sync(plan.device)
            rate = samples / (time.perf_counter() - start)
            results[name][feed] = {"samples_per_s": rate, "steps": steps, "on_device": placed,
                                   "pin_memory": bool(loader.pin_memory), "num_workers": loader.num_workers, **split}
            print(f"  {name} {feed}: {rate:.0f} samples/s; data {split['data_ms']:.2f} ms, compute "
                  f"{split['compute_ms']:.2f} ms a step", flush=True)
            del loader  # its workers go with it
    out["loaders"] = results


def _fmt(v: float | None, spec: str = ".0f", none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def table(out: dict[str, Any]) -> str:
    m = out["machine"]
    head = (f"Machine: {m.get('gpu', 'no GPU')}; {m['cpu']}, {m['cores']} cores, torch {m['torch']}; {m['date']}")
    rows = [("**DRY RUN on the CPU: checks the script, its figures mean nothing.** " if out["dry_run"] else "") + head,
            "", "| measure | figure | goal | met |", "|---|---|---|---|"]
    for name in ("img2txt", "resnet18"):
        if name not in out:
            continue
        r = out[name] if name == "img2txt" else out[name]["lightning"]
        label = "img2txt target stage" if name == "img2txt" else f"resnet18 at {r['size']}x{r['size']}"
        rows.append(f"| {label}, trainer=gpu: Lightning / plain loop, wall time ({r['epochs']} epochs, plain "
                    f"{r['plain_wall_s']:.1f} s; pairs {', '.join(f'{x:.3f}' for x in r['ratios'])}) | {r['ratio']:.3f}"
                    f" | <= 1.05 | {bench._ok(r['ratio'], 1.05, False)} |")
        rows.append(f"| {label}: training samples/s under Lightning; GPU utilisation (nvidia-smi) | "
                    f"{r['samples_per_s']:.0f}/s; {_fmt(r['gpu_util_pct'])}% | | |")
    if "img2txt" in out:
        s = out["img2txt"]["split"]
        rows.append(f"| img2txt: one step, data / compute (synchronised; batches on the device: "
                    f"{out['img2txt']['on_device']}) | {s['data_ms']:.2f} / {s['compute_ms']:.2f} ms | | |")
    if "resnet18" in out:
        for size, c in out["resnet18"]["sizes"].items():
            r = c["samples_per_s"]
            rows.append(f"| resnet18 at {size}x{size}, batch {c['batch_size']}, bf16: bare step, contiguous / "
                        f"channels-last / torch.compile ({out['resnet18']['compile_backend']}, compiled in "
                        f"{_fmt(c.get('compile_warmup_s'), '.0f')} s) | {_fmt(r['contiguous'])} / "
                        f"{_fmt(r['channels_last'])} / {_fmt(r['compiled'], '.0f', 'failed')} samples/s | | |")
    for name, feeds in out.get("loaders", {}).items():
        cells = " / ".join(f"{f['samples_per_s']:.0f}" for f in feeds.values())
        split = " / ".join(f"{f['data_ms']:.2f}" for f in feeds.values())
        workers = feeds["pinned_workers"]["num_workers"]
        rows.append(f"| {name}: training samples/s with batches on the device / from pinned memory with {workers} "
                    f"workers / from pageable memory; data ms a step (synchronised) | {cells}/s; {split} ms | | |")
    for name, why in out.get("skipped", {}).items():
        rows.append(f"| {name} | skipped: {why} | | |")
    rows.append("")
    rows.append(f"Command: `{out['command']}`; {out['wall_s']:.0f} s in all.")
    return "\n".join(rows)


def machine(plan: Plan) -> dict[str, Any]:
    info = bench.machine()
    if plan.device.type == "cuda":
        props = torch.cuda.get_device_properties(plan.device)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, from: {', '.join(SECTIONS)}")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, toy sizes: checks the script")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile's backend (default inductor; eager for a dry run, which checks the path)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the JSON goes, the table beside it (.md); default docs/bench/gpu.json, "
                             "or bench-gpu-dry-run.json for a dry run")
    args = parser.parse_args(argv)
    chosen = bench.sections(args.only, SECTIONS)
    if chosen is None:
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no GPU is visible to torch (torch.cuda.is_available() is False); allowed: a machine with a "
              "CUDA GPU, or --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    out_path = args.out or (Path("bench-gpu-dry-run.json") if args.dry_run else ROOT / "docs" / "bench" / "gpu.json")
    if not bench.writable(out_path):
        return 2
    sys.path.insert(0, str(ROOT / "src"))
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    plan = Plan(args.dry_run)
    plan.compile_backend = args.compile_backend or plan.compile_backend
    start = time.perf_counter()
    out: dict[str, Any] = {"machine": machine(plan), "dry_run": plan.dry, "skipped": {},
                           "command": "python scripts/bench_gpu.py" + (" --dry-run" if plan.dry else "")
                           + (f" --only {','.join(chosen)}" if len(chosen) < len(SECTIONS) else "")}
    with tempfile.TemporaryDirectory(prefix="xfer-bench-gpu-") as tmp:
        for name, fn in (("img2txt", bench_img2txt), ("resnet18", bench_resnet18), ("loaders", bench_loaders)):
            if name not in chosen:
                continue
            if time.perf_counter() - start > BUDGET_S:
                out["skipped"][name] = f"the {BUDGET_S // 60}-minute budget was spent"
                continue
            print(f"[{name}]", flush=True)
            fn(plan, Path(tmp), out)
    out["wall_s"] = time.perf_counter() - start
    from xfer.io import atomic_write_bytes, atomic_write_json

    text = table(out)
    atomic_write_json(out_path, out)
    atomic_write_bytes(out_path.with_suffix(".md"), (text + "\n").encode())
    print(text)
    print(f"\nwrote {out_path} and {out_path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
