"""Measure xfer side by side on this machine: Lightning against a plain loop, throughput against the
machine's matmul rate, the data path, end-to-end runs, a parallel sweep, and memory.

    python scripts/bench.py                 # everything (about 8 minutes on 2 cores); make bench
    python scripts/bench.py --only lightning,data
    python scripts/bench.py --quick         # a smoke run of every section (about 2 minutes)

Writes bench.json (every figure) and bench.md (the table), and prints the table.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("startup", "metrics", "lightning", "backbones", "data", "images", "diagnostics", "e2e", "sweep")
SWEEP_STRATEGIES = ("linear_probe", "finetune", "gradual_unfreeze", "lp_ft")
# The sweep section trains shorter than the recipe: its question is the launcher, not accuracy.
SWEEP_SHORT = ["trainer.max_epochs=2", "source_stage.max_epochs=1"]
LIGHTNING_EPOCHS = 12
# torchvision's resnet18, random weights, on the img2img target's digits: the pretrained_image adapter resizes
# them to each size (and repeats the one channel to three), as it does for a user's photos.
BACKBONE = ["experiment=img2img", "strategy=scratch", "trunk=torchvision", "trunk.arch=resnet18", "trunk.weights=null",
            "adapter@source_adapter=pretrained_image", "adapter@target_adapter=pretrained_image",
            "target.samples_per_class=null", "target.batch_size=64"]  # every digit 5-9, the default batch
BACKBONE_SIZES = (32, 64)
BACKBONE_PLAIN_S = 20.0  # the Lightning/plain pairs train for at least this long (full bench)
QUICK = ["source_stage.max_epochs=1", "source.fraction=0.2", "trainer.max_epochs=1", "target.fraction=0.2"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    import xfer  # noqa: F401 - registers the configs' resolvers

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


# -- 1-3: in this process --------------------------------------------------------------------
def target_stage(cfg, dm) -> tuple[Any, Any, Any]:
    """A fresh target-stage module (random trunk: the same FLOPs as a pretrained one) on the data
    module ``dm`` (set up once per section: tokenising is not what is measured)."""
    from xfer import build
    from xfer.freezing.groups import apply_plan, plan_for
    from xfer.results import freezing_name
    from xfer.target_stage import build_target

    strat = build.freezing(cfg.strategy, freezing_name(cfg))
    optim = build.to_dict(cfg.optim)
    module, dm, _ = build_target(cfg, strat, dm)
    apply_plan(module, plan_for(module, strat, optim, 0))  # what FreezingCallback does at setup
    return module, dm, strat


def lightning_fit(cfg, dm, workdir: Path, keep: bool = False) -> dict[str, Any]:
    from xfer import build
    from xfer.callbacks import stage_timing

    module, dm, strat = target_stage(cfg, dm)
    trainer = build.trainer(cfg, workdir, "target", build.freezing_callbacks(strat, build.to_dict(cfg.optim)))
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=dm)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, **stage_timing(trainer), **({"module": module} if keep else {})}


def plain_fit(cfg, dm, workdir: Path) -> dict[str, Any]:
    from xfer.perf import plain_fit as loop

    module, dm, _ = target_stage(cfg, dm)
    limit = cfg.trainer.limit_train_batches
    workdir.mkdir(parents=True)
    cpu = time.process_time()
    t = loop(module, dm, int(cfg.trainer.max_epochs), int(cfg.seed), cfg.trainer.get("gradient_clip_val"),
             limit_batches=limit if isinstance(limit, int) else None, ckpt_dir=workdir)
    return {"wall_s": t.wall_s, "cpu_s": time.process_time() - cpu, "train_s": t.train_s, "val_s": t.val_s,
            "steps": t.steps, "samples": t.samples, "samples_per_s": t.samples / t.train_s}


def fit_pairs(cfg, dm, tmp: Path, reps: int, label: str) -> dict[str, list[dict[str, Any]]]:
    """``reps`` pairs of the target stage under Lightning and under the plain loop, the order alternating so
    that drift in the machine hits both."""
    runs: dict[str, list[dict[str, Any]]] = {"lightning": [], "plain": []}
    for rep in range(reps):
        for kind in (("lightning", "plain") if rep % 2 == 0 else ("plain", "lightning")):
            workdir = tmp / f"{kind}{rep}"
            r = lightning_fit(cfg, dm, workdir) if kind == "lightning" else plain_fit(cfg, dm, workdir)
            runs[kind].append(r)
            print(f"  {label}{kind:9s} rep {rep}: {r['wall_s']:.1f} s, {r['samples_per_s']:.0f} samples/s", flush=True)
    return runs


def where_apart(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Where the two loops' wall times differ: the ratio of their training steps alone (each loop's own
    clock around its epochs' batches), and each one's median seconds outside them (validation, checkpoint
    writes, setup and teardown)."""
    pairs = list(zip(runs["lightning"], runs["plain"]))
    return {"train_ratio": statistics.median(a["train_s"] / b["train_s"] for a, b in pairs),
            "outside_train_s": {k: statistics.median(r["wall_s"] - r["train_s"] for r in v) for k, v in runs.items()}}


class AsFloat(nn.Module):
    """Token ids as float features: the input side of a model that does almost nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def framework_cost(overrides: list[str], dm, tmp: Path, reps: int, epochs: int = 2) -> dict[str, float]:
    """Lightning's own cost per training step: both loops on a model that does almost nothing
    (token ids -> one linear layer), with the data, callbacks and logging of a run."""
    from xfer import build
    from xfer.callbacks import stage_timing
    from xfer.models.module import TransferModule
    from xfer.perf import plain_fit as loop

    cfg = compose([*overrides, f"trainer.max_epochs={epochs}"])
    optim = build.to_dict(cfg.optim)

    def tiny() -> TransferModule:
        return TransferModule(AsFloat(), nn.Linear(dm.spec.seq_len, dm.spec.num_classes), nn.Identity(),
                              dm.spec.num_classes, optim)

    spans: dict[str, list[float]] = {"lightning": [], "plain": []}
    for rep in range(reps):
        trainer = build.trainer(cfg, tmp / f"tiny-l{rep}", "target", [])
        trainer.fit(tiny(), datamodule=dm)
        spans["lightning"].append(stage_timing(trainer)["train_s"])
        (tmp / f"tiny-p{rep}").mkdir()
        spans["plain"].append(loop(tiny(), dm, epochs, int(cfg.seed), cfg.trainer.get("gradient_clip_val"),
                                   ckpt_dir=tmp / f"tiny-p{rep}").train_s)
    steps = epochs * len(dm.train_dataloader())
    lightning, plain = statistics.median(spans["lightning"]), statistics.median(spans["plain"])
    return {"lightning_ms_per_step": 1e3 * lightning / steps, "plain_ms_per_step": 1e3 * plain / steps,
            "overhead_ms_per_step": 1e3 * (lightning - plain) / steps}


def bench_lightning(args, out: dict[str, Any]) -> None:
    from xfer import build
    from xfer.perf import matmul_gflops, step_rate, train_step_flops

    try:
        from xfer.models.fastconv import reference_convs
    except ImportError:  # an older xfer (before/after figures): its convs are the reference
        reference_convs = contextlib.nullcontext

    # the default target stage, run for 12 epochs instead of 8: the plain loop must take >= 20 s
    overrides = ["experiment=img2txt", "trainer.enable_progress_bar=true", f"trainer.max_epochs={LIGHTNING_EPOCHS}"]
    if args.quick:
        overrides += ["trainer.max_epochs=1", "trainer.limit_train_batches=40"]
    cfg = compose(overrides)
    dm = build.datamodule(cfg.target, cfg.seed)
    with tempfile.TemporaryDirectory(prefix="xfer-bench-") as tmp:
        runs = fit_pairs(cfg, dm, Path(tmp), args.reps, "")
        cost = framework_cost(overrides, dm, Path(tmp), reps=1 if args.quick else 3)
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["lightning"], runs["plain"])]
    step_ms = 1e3 * statistics.median(r["train_s"] / r["steps"] for r in runs["lightning"])
    out["lightning"] = {
        "epochs": int(cfg.trainer.max_epochs), "runs": runs, "ratios": ratios, "ratio": statistics.median(ratios),
        "ratio_of_best": min(r["wall_s"] for r in runs["lightning"]) / min(r["wall_s"] for r in runs["plain"]),
        "cpu_ratio": statistics.median(a["cpu_s"] / b["cpu_s"] for a, b in zip(runs["lightning"], runs["plain"])),
        "plain_wall_s": statistics.median(r["wall_s"] for r in runs["plain"]), "goal": 1.10, **where_apart(runs),
        "framework": {**cost, "step_ms": step_ms, "share_of_step": cost["overhead_ms_per_step"] / step_ms},
    }
    print(f"  Lightning's own cost: {cost['overhead_ms_per_step']:.2f} ms a step of {step_ms:.1f} ms", flush=True)

    # throughput: the best Lightning run, in samples/s and in the FLOPs the step executes
    best = max(runs["lightning"], key=lambda r: r["samples_per_s"])
    module, _, _ = target_stage(cfg, dm)
    x, y = dm.datasets["train"].tensors
    batch = dm.batch_size
    flops = train_step_flops(module, (x[:batch], y[:batch])) / batch
    with reference_convs():  # the model as plain convolutions, zero-padding taps included
        nominal = train_step_flops(module, (x[:batch], y[:batch])) / batch
    mm = matmul_gflops()
    achieved = flops * best["samples_per_s"] / 1e9
    curve = {}
    for size in (64, 128, 256):  # the bare step at other batch sizes: where the machine's rate is
        rate = step_rate(target_stage(cfg, dm)[0], x, y, size, steps=20 if args.quick else 60)
        curve[str(size)] = {"samples_per_s": rate, "share_of_matmul": flops * rate / 1e9 / mm}
    out["throughput"] = {
        "samples_per_s": best["samples_per_s"], "steps_per_s": best["steps"] / best["train_s"],
        "batch_size": batch, "train_flops_per_sample": flops, "nominal_flops_per_sample": nominal,
        "gflops": achieved, "nominal_gflops": nominal * best["samples_per_s"] / 1e9, "matmul_gflops": mm,
        "share_of_matmul": achieved / mm, "goal": 0.30, "threads": torch.get_num_threads(), "batch_curve": curve,
    }


def bench_backbones(args, out: dict[str, Any]) -> None:
    """torchvision resnet18 at 32x32 and 64x64: the bare training step's samples/s with channels-last off and
    on, its executed GFLOP/s against the measured matmul peak, and at 32x32 the Lightning/plain-loop ratio
    on a target stage the plain loop takes at least BACKBONE_PLAIN_S to train (the epochs follow from the
    measured step rate)."""
    import math

    from xfer import build
    from xfer.perf import matmul_gflops, step_rate, train_step_flops

    mm = matmul_gflops()
    steps, warmup = (4, 2) if args.quick else (30, 5)
    sizes: dict[str, Any] = {}
    for size in BACKBONE_SIZES:
        cfg = compose([*BACKBONE, f"trunk.input_size=[{size},{size}]"])
        dm = build.datamodule(cfg.target, cfg.seed)
        x, y = dm.datasets["train"].tensors
        batch = min(dm.batch_size, len(y))
        flops = train_step_flops(target_stage(cfg, dm)[0], (x[:batch], y[:batch])) / batch
        rates = {}
        for layout in ("contiguous", "channels_last"):
            module = target_stage(cfg, dm)[0]
            if layout == "channels_last":  # the 4-D weights; the activations follow them
                module = module.to(memory_format=torch.channels_last)
            rates[layout] = step_rate(module, x, y, batch, steps=steps, warmup=warmup)
        best = max(rates.values())
        sizes[str(size)] = {
            "batch_size": batch, "train_examples": len(y), "train_flops_per_sample": flops,
            "samples_per_s": rates, "channels_last_speedup": rates["channels_last"] / rates["contiguous"],
            "gflops": flops * best / 1e9, "share_of_matmul": flops * best / 1e9 / mm}
        print(f"  resnet18 {size}x{size}: {rates['contiguous']:.0f} samples/s contiguous, "
              f"{rates['channels_last']:.0f} channels-last; {100 * flops * best / 1e9 / mm:.0f}% of matmul", flush=True)

    # Lightning against the plain loop, at 32x32, as bench_lightning does for the default stage
    size = str(BACKBONE_SIZES[0])
    epoch_s = sizes[size]["train_examples"] / sizes[size]["samples_per_s"]["contiguous"]
    epochs = 1 if args.quick else max(2, math.ceil(BACKBONE_PLAIN_S / epoch_s))
    overrides = [*BACKBONE, f"trunk.input_size=[{size},{size}]", f"trainer.max_epochs={epochs}",
                 "trainer.enable_progress_bar=true"]
    if args.quick:
        overrides.append("trainer.limit_train_batches=3")
    cfg = compose(overrides)
    dm = build.datamodule(cfg.target, cfg.seed)
    with tempfile.TemporaryDirectory(prefix="xfer-bench-backbones-") as tmp:
        runs = fit_pairs(cfg, dm, Path(tmp), args.reps, f"resnet18 {size}x{size} ")
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["lightning"], runs["plain"])]
    out["backbones"] = {"arch": "resnet18", "matmul_gflops": mm, "goal_share_of_matmul": 0.40, "sizes": sizes,
                        "lightning": {"size": int(size), "epochs": epochs, "ratios": ratios,
                                      "ratio": statistics.median(ratios), "goal": 1.05,
                                      "plain_wall_s": statistics.median(r["wall_s"] for r in runs["plain"]),
                                      **where_apart(runs)}}


def bench_data(args, out: dict[str, Any]) -> None:
    from xfer import build
    from xfer.perf import loader_rate, timed

    # the read and encode caches off: the setup timed is what a cold run pays (a warm one takes both from them)
    cfg = compose(["experiment=img2txt", "target.read_cache_dir=null"])
    dm, setup_s = timed(lambda: build.datamodule(cfg.target, cfg.seed))
    ids = dm.datasets["train"].tensors[0]
    rate, batches = loader_rate(dm, epochs=1 if args.quick else 5)
    steps = out.get("throughput", {}).get("steps_per_s")
    out["data"] = {
        "setup_s": setup_s, "tokenised_at_setup": bool(ids.dtype.is_floating_point is False and ids.ndim == 2),
        "train_tensor": list(ids.shape), "batches_per_s": rate, "batches_timed": batches,
        "step_rate": steps, "ratio_to_steps": None if not steps else rate / steps, "goal": 10.0,
    }


IMAGE_FILES = {"files": 3000, "file_size": 96, "image_size": 64, "classes": 10, "batch_size": 64, "epochs": 2}


def _write_jpegs(folder: Path, n: int, classes: int, size: int) -> None:
    """Smooth random photos (a blurred noise field), so JPEG decoding does a photo's work, not noise's."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    for i in range(n):
        cls = folder / f"c{i % classes}"
        cls.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).filter(ImageFilter.GaussianBlur(2)).save(cls / f"{i}.jpg", quality=90)


def _images_per_s(dm, epochs: int) -> tuple[float, float]:
    """Training images per second of the data module's loader alone: its first epoch (workers starting,
    when any) and the epochs after it."""
    loader = dm.train_dataloader()
    rates = []
    for epoch in range(1 + epochs):
        loader.sampler.set_epoch(epoch)
        n, start = 0, time.perf_counter()
        for x, _ in loader:
            n += len(x)
        rates.append(n / (time.perf_counter() - start))
    return rates[0], statistics.median(rates[1:])


def bench_images(args, out: dict[str, Any]) -> None:
    """An image_folder of JPEGs read in memory (decoded at setup) and lazily (decoded per batch, by 0 and
    2 DataLoader workers), and augmented (flip_crop): images/s of the train loader, side by side."""
    from functools import partial

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from xfer.data import ImageDataModule
    from xfer.data.readers_image import read_image_folder
    from xfer.perf import timed

    spec = dict(IMAGE_FILES, files=300, epochs=1) if args.quick else dict(IMAGE_FILES)
    flip_crop = instantiate(OmegaConf.load(ROOT / "conf" / "augment" / "flip_crop.yaml"), _convert_="all")
    size = [spec["image_size"]] * 2
    cases = {"in memory": (True, 0, None), "lazy, 0 workers": (False, 0, None), "lazy, 2 workers": (False, 2, None),
             "in memory + flip_crop": (True, 0, flip_crop), "lazy, 2 workers + flip_crop": (False, 2, flip_crop)}
    with tempfile.TemporaryDirectory(prefix="xfer-bench-images-") as tmp:
        folder = Path(tmp)
        _write_jpegs(folder, spec["files"], spec["classes"], spec["file_size"])
        rows = {}
        for name, (in_memory, workers, augment) in cases.items():
            dm = ImageDataModule("image_folder", reader=partial(read_image_folder, str(folder), in_memory=in_memory),
                                 image_size=size, batch_size=spec["batch_size"], num_workers=workers, augment=augment)
            _, setup_s = timed(dm.setup)
            first, steady = _images_per_s(dm, spec["epochs"])
            rows[name] = {"setup_s": setup_s, "first_epoch_images_per_s": first, "images_per_s": steady,
                          "train_images": len(dm.datasets["train"])}
            print(f"  {name}: setup {setup_s:.2f} s, {steady:.0f} images/s (first epoch {first:.0f})", flush=True)
    out["images"] = {**spec, "cases": rows}


# -- 4-6: as a user runs it, in child processes ----------------------------------------------------
def bench_diagnostics(args, out: dict[str, Any]) -> None:
    """``analyze.py transfer``'s work (both trunks' warm-up, features at every depth, every score) and a run's
    end-of-run CKA (analysis.similarity: start vs fine-tuned per block, features saved, heatmap drawn) against
    one target training epoch (fit with validation), on img2txt's full target data, side by side; data setup
    is left out of all three."""
    import copy

    from omegaconf import OmegaConf

    from xfer import build
    from xfer.analysis import similarity
    from xfer.analysis.transfer import transfer_scores

    overrides = ["experiment=img2txt", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    if args.quick:
        overrides += ["target.fraction=0.2"]
    cfg = compose(overrides)
    dm = build.datamodule(cfg.target, cfg.seed)
    epochs, diagnostics, ckas = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(1 if args.quick else 3):  # interleaved: the machine's noise hits all alike
            fit = lightning_fit(cfg, dm, Path(tmp) / f"fit{rep}", keep=True)
            epochs.append(fit["wall_s"])
            start = time.perf_counter()
            transfer_scores(OmegaConf.merge(cfg, {"paths": {"output_dir": tmp}}), None, target=dm)
            diagnostics.append(time.perf_counter() - start)
            start = time.perf_counter()  # the source model's pass is left out: img2txt is cross-modal (n/a)
            similarity.measure(cfg, Path(tmp) / f"fit{rep}", fit["module"], dm, copy.deepcopy(fit["module"].trunk),
                               None, lambda: None)
            ckas.append(time.perf_counter() - start)
    epoch, diag, cka = statistics.median(epochs), statistics.median(diagnostics), statistics.median(ckas)
    out["diagnostics"] = {"command": "python analyze.py transfer experiment=img2txt", "epoch_s": epochs,
                          "transfer_s": diagnostics, "ratio": diag / epoch, "goal": 1.0,
                          "cka_s": ckas, "cka_ratio": cka / epoch, "cka_examples": similarity.examples_of(cfg),
                          "train_examples": len(dm.datasets["train"])}
    print(f"  analyze.py transfer {diag:.1f} s vs one target epoch {epoch:.1f} s = {diag / epoch:.2f}x", flush=True)
    print(f"  end-of-run CKA {cka:.1f} s vs one target epoch = {cka / epoch:.2f}x", flush=True)


def run_cli(args: list[str], home: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run train.py in a child process; wall time, CPU time, peak memory of its process tree."""
    from xfer.perf import PeakRSS

    env = {**os.environ, "XFER_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_unix, start = time.time(), time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakRSS(proc.pid) as mem:
        output, _ = proc.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"error: train.py {' '.join(args)} failed ({proc.returncode}):\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results = [json.loads(p.read_text()) for p in sorted((home / "logs").rglob("results.json"))]
    return {"wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall, "peak_rss_mb": mem.peak_total / 2**20,
            "peak_rss_single_mb": mem.peak_single / 2**20, "start_unix": start_unix, "results": results,
            "output_tail": output[-2000:]}


def first_step_after(run: dict[str, Any]) -> float:
    r = run["results"][0]
    stamps = [r["target"]["timing"].get("first_step_unix")]
    if r.get("source") and r["source"].get("timing"):
        stamps.append(r["source"]["timing"].get("first_step_unix"))
    return min(s for s in stamps if s) - run["start_unix"]


# A warm run cut to one step of each kind: what it measures is the time before the first step.
FIRST_STEP = ["experiment=img2txt", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
              "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "analysis.similarity.examples=0",
              "trainer.enable_progress_bar=false"]
EAGER = {"XFER_EAGER_TORCHMETRICS": "1"}  # before: torchmetrics imported whole, as Lightning alone does


# The child's resident memory now, in KiB: VmRSS, not ru_maxrss, which on Linux starts a spawned child at
# its parent's size (the bench's own process, torch and Lightning loaded) and so hid everything under it.
RSS_NOW = ("import re; print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")


def _child(code: str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall time of ``python -c code`` in a fresh process, and the number it printed last (KiB) in MiB."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: python -c {code!r} failed:\n{proc.stderr[-2000:]}")
    return wall, float(proc.stdout.strip().splitlines()[-1]) / 1024  # what the child printed, in KiB


def import_tree(module: str = "xfer.pipeline", env: dict[str, str] | None = None, min_s: float = 0.1,
                depth: int = 4) -> list[tuple[int, float, str]]:
    """``python -X importtime -c "import <module>"``: (depth, cumulative s, name) of every import that took
    at least ``min_s``, at most ``depth`` levels down, in import order (a parent after its children)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        level = (len(name) - len(name.lstrip()) - 1) // 2
        if int(cumulative) >= min_s * 1e6 and level <= depth:
            rows.append((level, int(cumulative) / 1e6, name.strip()))
    return rows


# The least a training process does: import torch, build an optimizer (torch.optim imports torch._dynamo
# there, about 2 s: every run pays it, whatever xfer imports) and take one step.
TORCH_STEP = ("import torch; m = torch.nn.Linear(8, 2); o = torch.optim.AdamW(m.parameters()); "
              "m(torch.randn(4, 8)).sum().backward(); o.step()")


def bench_startup(args, out: dict[str, Any]) -> None:
    """Start-up against torch's own import, side by side: the reps interleave ``import torch``, ``import
    xfer.pipeline`` (deferred torchmetrics, and eager: before), and a warm run's launch-to-first-step."""
    reps = 1 if args.quick else max(3, args.reps)
    rss = RSS_NOW
    keys = ("torch", "torch_step", "xfer", "xfer_eager", "first_step", "first_step_eager")
    wall: dict[str, list[float]] = {k: [] for k in keys}
    mem: dict[str, list[float]] = {k: [] for k in (*keys[:4], "first_step")}
    with tempfile.TemporaryDirectory(prefix="xfer-bench-") as tmp:
        home = Path(tmp)
        run_cli([*FIRST_STEP, *QUICK[:2]], home)  # trains and caches the source trunk: later runs are warm
        for _ in range(reps):
            for key, code, env in (("torch", "import torch", None), ("torch_step", TORCH_STEP, None),
                                   ("xfer", "import xfer.pipeline", None),
                                   ("xfer_eager", "import xfer.pipeline", EAGER)):
                w, m = _child(f"{code}; {rss}", env)
                wall[key].append(w)
                mem[key].append(m)
            for key, env in (("first_step", None), ("first_step_eager", EAGER)):
                run = run_cli([*FIRST_STEP, *QUICK[:2]], home, env)
                newest = max(run["results"], key=lambda r: r["started_unix"])
                assert newest["source"]["cached"] is True, "the start-up runs must reuse the cached trunk"
                wall[key].append(first_step_after({**run, "results": [newest]}))
                if key == "first_step" and newest["target"]["timing"].get("first_step_rss_mib") is not None:
                    mem[key].append(newest["target"]["timing"]["first_step_rss_mib"])
    med = {k: statistics.median(v) for k, v in wall.items()}
    rss_med = {k: statistics.median(v) for k, v in mem.items() if v}
    out["startup"] = {
        "reps": reps, "wall_s": wall, "rss_mib": mem, "median_s": med, "median_rss_mib": rss_med,
        "first_step_over_torch": med["first_step"] / med["torch"],
        "first_step_over_torch_eager": med["first_step_eager"] / med["torch"],
        "first_step_over_torch_step": med["first_step"] / med["torch_step"],
        "rss_over_torch_mib": rss_med["xfer"] - rss_med["torch"],
        "rss_over_torch_eager_mib": rss_med["xfer_eager"] - rss_med["torch"],
        "rss_over_torch_step_mib": rss_med["torch_step"] - rss_med["torch"],
        # at the first step, against a bare training process after its first step: what xfer adds to torch's own
        **({"first_step_rss_over_torch_step_mib": rss_med["first_step"] - rss_med["torch_step"]}
           if "first_step" in rss_med else {}),
        "command": "python train.py " + " ".join([*FIRST_STEP, *QUICK[:2]]) + " (warm)",
    }
    out["startup"]["import_tree"] = import_tree()
    out["startup"]["import_tree_eager"] = import_tree(env=EAGER)
    s = out["startup"]
    print(f"  import torch {med['torch']:.2f} s (and an AdamW step {med['torch_step']:.2f} s); import "
          f"xfer.pipeline {med['xfer']:.2f} s (eager torchmetrics "
          f"{med['xfer_eager']:.2f} s); first step after {med['first_step']:.2f} s = {s['first_step_over_torch']:.2f}x"
          f" torch (eager {s['first_step_over_torch_eager']:.2f}x); RSS +{s['rss_over_torch_mib']:.0f} MiB over "
          f"torch (eager +{s['rss_over_torch_eager_mib']:.0f})", flush=True)


def bench_metrics(args, out: dict[str, Any]) -> None:
    """xfer's epoch scores (models/scores.py: one confusion-matrix update a step) against the torchmetrics
    MetricCollection that would replace them (accuracy, macro-F1, mean loss, confusion matrix), updated
    every step and computed once an epoch, on the target stage's batches (64 examples, 2 classes). Their
    cost is put against a measured training step of the default target stage."""
    from torchmetrics import MeanMetric, MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

    from xfer.models.scores import EpochStats

    classes, batch, steps = 2, 64, 50 if args.quick else 400
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(batch, classes, generator=gen) for _ in range(steps)]
    targets = [torch.randint(0, classes, (batch,), generator=gen) for _ in range(steps)]
    losses = [torch.rand((), generator=gen) for _ in range(steps)]

    def ours() -> dict[str, float]:
        m = EpochStats(classes)
        for x, y, loss in zip(logits, targets, losses):
            m.update(x, y, loss)
        r = m.compute()
        return {"acc": float(r["acc"]), "f1": float(r["f1"]), "loss": float(r["loss"])}

    def collection() -> dict[str, float]:
        m = MetricCollection({"acc": MulticlassAccuracy(classes, average="micro"),
                              "f1": MulticlassF1Score(classes, average="macro"),
                              "confusion": MulticlassConfusionMatrix(classes)})
        mean = MeanMetric()
        for x, y, loss in zip(logits, targets, losses):
            m.update(x, y)
            mean.update(loss, weight=y.numel())
        r = m.compute()
        return {"acc": float(r["acc"]), "f1": float(r["f1"]), "loss": float(mean.compute())}

    times: dict[str, list[float]] = {"ours": [], "collection": []}
    results = {}
    for _ in range(1 if args.quick else max(3, args.reps)):
        for name, fn in (("ours", ours), ("collection", collection)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append((time.perf_counter() - start) / steps)
    step_s = _target_step_s(args)
    med = {k: statistics.median(v) for k, v in times.items()}
    out["metrics"] = {
        "steps": steps, "batch": batch, "classes": classes, "per_step_s": times, "median_per_step_s": med,
        "target_step_s": step_s, "share_ours": med["ours"] / step_s, "share_collection": med["collection"] / step_s,
        "extra_share": (med["collection"] - med["ours"]) / step_s,
        "agree": all(abs(results["ours"][k] - results["collection"][k]) < 1e-6 for k in ("acc", "f1", "loss")),
    }
    m = out["metrics"]
    print(f"  scores per step: ours {1e3 * med['ours']:.3f} ms, MetricCollection {1e3 * med['collection']:.3f} ms;"
          f" a target step {1e3 * step_s:.1f} ms; the collection costs {100 * m['extra_share']:+.1f}% of a step;"
          f" same scores: {m['agree']}", flush=True)


def _target_step_s(args) -> float:
    """Median seconds of one training step of the default target stage (img2txt finetune, batch 64), in a
    plain loop: the step the scores would ride on."""
    from xfer import build

    cfg = compose(["experiment=img2txt", *(QUICK if args.quick else [])])
    dm = build.datamodule(cfg.target, cfg.seed)
    module, dm, _ = target_stage(cfg, dm)
    dm.setup("fit")
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    laps = []
    for i, (x, y) in enumerate(dm.train_dataloader()):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(module(x), y)
        loss.backward()
        opt.step()
        laps.append(time.perf_counter() - start)
        if i == 40:
            break
    return statistics.median(laps[5:])


def bench_e2e(args, out: dict[str, Any]) -> None:
    extra = QUICK if args.quick else []
    with tempfile.TemporaryDirectory(prefix="xfer-bench-") as tmp:
        home = Path(tmp)
        cold = run_cli(["experiment=img2txt", *extra], home)
        warm = run_cli(["experiment=img2txt", *extra], home)
    assert cold["results"][0]["source"]["cached"] is False
    warm_result = max(warm["results"], key=lambda r: r["started_unix"])
    warm = {**warm, "results": [warm_result]}
    for name, run in (("cold", cold), ("warm", warm)):
        print(f"  e2e {name}: {run['wall_s']:.1f} s, first step after {first_step_after(run):.1f} s", flush=True)
    assert warm_result["source"]["cached"] is True, "the second run did not reuse the cached trunk"
    out["e2e"] = {
        "command": "python train.py experiment=img2txt" + (" " + " ".join(extra) if extra else ""),
        "cold_s": cold["wall_s"], "warm_s": warm["wall_s"],
        "cold_first_step_s": first_step_after(cold),
        "warm_first_step_s": first_step_after(warm),
        "target_test_acc": warm_result["target"]["test"]["test/acc"],
        "peak_rss_mb": max(cold["peak_rss_mb"], warm["peak_rss_mb"]),
        "target_samples_per_s": warm_result["target"]["timing"]["samples_per_s"],
    }


def bench_sweep(args, out: dict[str, Any]) -> None:
    from xfer.perf import available_cores

    sweep = ["-m", "experiment=img2txt", f"strategy={','.join(SWEEP_STRATEGIES)}", "seed=0,1", *SWEEP_SHORT]
    if args.quick:
        sweep += ["source.fraction=0.2", "target.fraction=0.2"]
    cores = available_cores()
    runs = {}
    for name, launcher in (("sequential", []), ("joblib", ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={cores}"])):
        with tempfile.TemporaryDirectory(prefix="xfer-bench-") as tmp:
            runs[name] = run_cli([*sweep, *launcher], Path(tmp))
        trained = sum(1 for r in runs[name]["results"] if r["source"] and not r["source"]["cached"])
        runs[name]["source_trained"] = trained
        print(f"  sweep {name}: {runs[name]['wall_s']:.1f} s, {len(runs[name]['results'])} runs, "
              f"source stage trained {trained} times", flush=True)
    par = runs["joblib"]
    out["sweep"] = {
        "command": "python train.py " + " ".join(sweep) + " [hydra/launcher=joblib]",
        "jobs": len(par["results"]), "n_jobs": cores,
        "threads_per_job": sorted({r["threads"] for r in par["results"]}),
        "sequential_s": runs["sequential"]["wall_s"], "joblib_s": par["wall_s"],
        "speedup": runs["sequential"]["wall_s"] / par["wall_s"],
        "cores_busy": {k: v["cores_busy"] for k, v in runs.items()}, "cores": cores,
        "source_trained": {k: v["source_trained"] for k, v in runs.items()},
        "peak_rss_mb": par["peak_rss_mb"], "peak_rss_single_mb": par["peak_rss_single_mb"],
        "sequential_peak_rss_mb": runs["sequential"]["peak_rss_mb"],
        "overhead": {k: job_overhead(v, 1 if k == "sequential" else cores) for k, v in runs.items()},
    }
    for k, o in out["sweep"]["overhead"].items():
        print(f"  {k}: per job {o['in_job_s']:.1f} s in the job outside training, {o['outside_s']:.1f} s outside"
              f" any job (start-up, launcher)", flush=True)


def _training_s(run: dict[str, Any]) -> float:
    """Seconds a job spent in training and validation steps (its stages' ``timing``)."""
    total = 0.0
    for stage in ("source", "target"):
        timing = (run.get(stage) or {}).get("timing") or {}
        if stage == "source" and (run.get("source") or {}).get("cached"):
            continue
        total += float(timing.get("train_s") or 0) + float(timing.get("val_s") or 0)
    return total


def job_overhead(sweep: dict[str, Any], slots: int) -> dict[str, float]:
    """Per job: wall time minus training time inside the job (setup, test, analysis, writes), and the
    sweep's wall time over its parallel slots not spent inside any job (process start, imports, the pool)."""
    results = sweep["results"]
    in_job = statistics.median(r["wall_s"] - _training_s(r) for r in results)
    outside = (sweep["wall_s"] * slots - sum(r["wall_s"] for r in results)) / len(results)
    return {"in_job_s": in_job, "outside_s": outside, "jobs": len(results), "slots": slots}


# -- report ----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import torch

    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from xfer.perf import available_cores

    return {"cpu": model, "cores": available_cores(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")}


def _ok(value: float | None, goal: float, higher: bool) -> str:
    if value is None:
        return ""
    return "yes" if (value >= goal if higher else value <= goal) else "**no**"


def trees(st: dict[str, Any]) -> str:
    """The import trees of the startup section, after and before, as indented lists (a child above its parent,
    as -X importtime prints them)."""
    parts = []
    for key, title in (("import_tree", "after (deferred torchmetrics)"), ("import_tree_eager", "before (eager)")):
        parts += [f"`python -X importtime -c \"import xfer.pipeline\"`, {title}: imports of 0.1 s or more, "
                  "4 levels deep, cumulative seconds", "", "```"]
        parts += [f"{'  ' * level}{sec:6.2f}  {name}" for level, sec, name in st[key]] + ["```", ""]
    return "\n".join(parts)


def table(out: dict[str, Any]) -> str:
    m = out["machine"]
    rows = [f"Machine: {m['cpu']}, {m['cores']} cores ({m['capability']}), {m['memory_gb']} GiB, torch "
            f"{m['torch']}, {m['threads']} threads; {m['date']}{' (--quick)' if out.get('quick') else ''}", "",
            "| measure | figure | goal | met |", "|---|---|---|---|"]
    if "lightning" in out:
        lt, tp = out["lightning"], out["throughput"]
        fw = lt["framework"]
        rows.append(f"| Lightning / plain loop, wall time ({lt['epochs']} epochs, plain {lt['plain_wall_s']:.1f} s;"
                    f" pairs {', '.join(f'{r:.3f}' for r in lt['ratios'])}; CPU time {lt['cpu_ratio']:.3f}) |"
                    f" {lt['ratio']:.3f} | <= 1.10 | {_ok(lt['ratio'], 1.10, False)} |")
        rows += apart_row(lt)
        rows.append(f"| Lightning's own cost per step (a do-nothing model) | {fw['overhead_ms_per_step']:.2f} ms"
                    f" = {100 * fw['share_of_step']:.0f}% of a {fw['step_ms']:.1f} ms step | | |")
        rows.append(f"| Target-stage training throughput (batch {tp['batch_size']}) | {tp['samples_per_s']:.0f}"
                    f" samples/s, {tp['steps_per_s']:.1f} steps/s | | |")
        rows.append(f"| Achieved GFLOP/s ({tp['train_flops_per_sample'] / 1e6:.2f} MFLOP/sample executed, fwd+bwd)"
                    f" vs fp32 matmul {tp['matmul_gflops']:.0f} GFLOP/s | {tp['gflops']:.1f} GFLOP/s ="
                    f" {100 * tp['share_of_matmul']:.0f}% | >= 30% | {_ok(tp['share_of_matmul'], 0.30, True)} |")
        curve = ", ".join(f"{b}: {c['samples_per_s']:.0f}/s = {100 * c['share_of_matmul']:.0f}%"
                          for b, c in tp["batch_curve"].items())
        rows.append(f"| Bare training step by batch size (samples/s = share of matmul) | {curve} | | |")
    if "backbones" in out:
        bb = out["backbones"]
        for size, c in bb["sizes"].items():
            r = c["samples_per_s"]
            rows.append(f"| {bb['arch']} (torchvision, random weights) at {size}x{size}, batch {c['batch_size']}: bare "
                        f"training step, contiguous / channels-last | {r['contiguous']:.0f} / {r['channels_last']:.0f}"
                        f" samples/s ({c['channels_last_speedup']:.2f}x) | | |")
            rows.append(f"| same, executed GFLOP/s of the faster layout ({c['train_flops_per_sample'] / 1e9:.3f} "
                        f"GFLOP/sample, fwd+bwd) vs fp32 matmul {bb['matmul_gflops']:.0f} GFLOP/s | {c['gflops']:.1f}"
                        f" GFLOP/s = {100 * c['share_of_matmul']:.0f}% | >= 40% |"
                        f" {_ok(c['share_of_matmul'], bb['goal_share_of_matmul'], True)} |")
        lt = bb["lightning"]
        rows.append(f"| {bb['arch']} at {lt['size']}x{lt['size']}: Lightning / plain loop, wall time ({lt['epochs']} "
                    f"epochs, plain {lt['plain_wall_s']:.1f} s; pairs {', '.join(f'{r:.3f}' for r in lt['ratios'])}) |"
                    f" {lt['ratio']:.3f} | <= 1.05 | {_ok(lt['ratio'], lt['goal'], False)} |")
        rows += apart_row(lt)
    if "data" in out:
        d = out["data"]
        vs = "" if d["ratio_to_steps"] is None else f" = {d['ratio_to_steps']:.0f}x the step rate"
        rows.append(f"| Data path alone (train loader) | {d['batches_per_s']:.0f} batches/s{vs} | >= 10x |"
                    f" {_ok(d['ratio_to_steps'], 10.0, True)} |")
        rows.append(f"| Text read and tokenised once, at setup (caches off: a cold run) | {d['setup_s']:.2f} s for every split |"
                    f" once | {'yes' if d['tokenised_at_setup'] else '**no**'} |")
    if "images" in out:
        im = out["images"]
        base = im["cases"]["lazy, 0 workers"]["images_per_s"]
        for name, c in im["cases"].items():
            rows.append(f"| image_folder, {im['files']} JPEGs {im['file_size']}px -> {im['image_size']}px, {name}:"
                        f" train loader | {c['images_per_s']:.0f} images/s = {c['images_per_s'] / base:.2f}x lazy with"
                        f" 0 workers; setup {c['setup_s']:.1f} s | | |")
    if "diagnostics" in out:
        d = out["diagnostics"]
        rows.append(f"| `{d['command']}` (its work, data setup excluded) / one target epoch with validation "
                    f"({d['train_examples']} examples; epochs {', '.join(f'{x:.1f}' for x in d['epoch_s'])} s) |"
                    f" {d['ratio']:.2f} | <= 1.00 | {_ok(d['ratio'], 1.0, False)} |")
        if "cka_ratio" in d:
            rows.append(f"| a run's end-of-run CKA (analysis.similarity, {d['cka_examples']} val examples; "
                        f"{', '.join(f'{x:.2f}' for x in d['cka_s'])} s) / the same target epoch | "
                        f"{d['cka_ratio']:.2f} | <= 1.00 | {_ok(d['cka_ratio'], 1.0, False)} |")
    if "startup" in out:
        st = out["startup"]
        m, r = st["median_s"], st["median_rss_mib"]
        rows.append(f"| Launch to first step, warm (`{st['command']}`), median of {st['reps']}, / `python -c "
                    f"\"import torch\"` ({m['torch']:.2f} s) in the same run: after (deferred torchmetrics) |"
                    f" {m['first_step']:.2f} s = {st['first_step_over_torch']:.2f}x | <= 2.00x |"
                    f" {_ok(st['first_step_over_torch'], 2.0, False)} |")
        rows.append(f"| same, / a bare PyTorch training process (`import torch`, an AdamW, one step: "
                    f"{m['torch_step']:.2f} s; torch.optim imports torch._dynamo) | "
                    f"{st['first_step_over_torch_step']:.2f}x | | |")
        rows.append(f"| same, before (XFER_EAGER_TORCHMETRICS=1: torchmetrics imported whole) |"
                    f" {m['first_step_eager']:.2f} s = {st['first_step_over_torch_eager']:.2f}x | | |")
        rows.append(f"| `import xfer.pipeline`, after / before | {m['xfer']:.2f} s / {m['xfer_eager']:.2f} s | | |")
        rows.append(f"| Resident memory after `import xfer.pipeline` over `import torch` ({r['torch']:.0f} MiB): "
                    f"after / before | +{st['rss_over_torch_mib']:.0f} / +{st['rss_over_torch_eager_mib']:.0f} MiB |"
                    f" <= +150 MiB | {_ok(st['rss_over_torch_mib'], 150, False)} |")
        if "rss_over_torch_step_mib" in st:
            rows.append(f"| same, a bare PyTorch training process (import torch, an AdamW, one step) over `import "
                        f"torch` | +{st['rss_over_torch_step_mib']:.0f} MiB | | |")
        if "first_step_rss_over_torch_step_mib" in st:
            rows.append(f"| Resident memory of the warm run once its first step is done ({r['first_step']:.0f} MiB; "
                        f"results.json `first_step_rss_mib`) over the bare PyTorch training process after its step "
                        f"({r['torch_step']:.0f} MiB): what the run adds (its imports, the model with its gradients and AdamW "
                        f"state, the data) to what torch itself holds to train | "
                        f"+{st['first_step_rss_over_torch_step_mib']:.0f} MiB | <= +150 MiB |"
                        f" {_ok(st['first_step_rss_over_torch_step_mib'], 150, False)} |")
    if "metrics" in out:
        mt = out["metrics"]
        md = mt["median_per_step_s"]
        rows.append(f"| Epoch scores, per step: torchmetrics MetricCollection (accuracy, macro-F1, confusion; mean loss)"
                    f" vs xfer's EpochStats (models/scores.py), as a share of a {1e3 * mt['target_step_s']:.1f} ms target "
                    f"step | {1e3 * md['collection']:.3f} ms vs {1e3 * md['ours']:.3f} ms: "
                    f"{100 * mt['extra_share']:+.1f}% of a step; same scores: {'yes' if mt['agree'] else '**no**'} |"
                    f" <= +2.0% (then it would replace scores.py) | {_ok(mt['extra_share'], 0.02, False)} |")
    if "e2e" in out:
        e = out["e2e"]
        rows.append(f"| `{e['command']}`, cold (trains the source trunk) | {e['cold_s']:.1f} s; first step after"
                    f" {e['cold_first_step_s']:.1f} s | | |")
        rows.append(f"| same, warm (cached trunk) | {e['warm_s']:.1f} s; first step after"
                    f" {e['warm_first_step_s']:.1f} s | | |")
        rows.append(f"| Peak RSS, one run | {e['peak_rss_mb']:.0f} MiB | | |")
    if "sweep" in out:
        s = out["sweep"]
        rows.append(f"| Sweep {len(SWEEP_STRATEGIES)} strategies x 2 seeds ({', '.join(SWEEP_SHORT)}): "
                    f"sequential vs joblib ({s['n_jobs']} jobs x {s['threads_per_job']} threads) |"
                    f" {s['sequential_s']:.0f} s vs {s['joblib_s']:.0f} s = {s['speedup']:.2f}x; cores busy"
                    f" {s['cores_busy']['sequential']:.1f} vs {s['cores_busy']['joblib']:.1f} of {s['cores']} | | |")
        rows.append(f"| Source stage trained, of {s['jobs']} jobs (sequential, joblib) |"
                    f" {s['source_trained']['sequential']}, {s['source_trained']['joblib']} | 2 |"
                    f" {'yes' if set(s['source_trained'].values()) == {2} else '**no**'} |")
        for k, o in s.get("overhead", {}).items():
            rows.append(f"| Per-job overhead, {k} ({o['jobs']} jobs, {o['slots']} at a time): in the job outside "
                        f"training (median) / outside any job (start-up, launcher) | {o['in_job_s']:.1f} s / "
                        f"{o['outside_s']:.1f} s | | |")
        rows.append(f"| Peak RSS, parallel sweep (all processes; largest one) | {s['peak_rss_mb']:.0f} MiB;"
                    f" {s['peak_rss_single_mb']:.0f} MiB | | |")
    return "\n".join(rows)


def apart_row(lt: dict[str, Any]) -> list[str]:
    """The row under a Lightning / plain ratio that says where the two differ (none for older figures)."""
    if "train_ratio" not in lt:
        return []
    o = lt["outside_train_s"]
    return [f"| same, training steps alone; seconds outside them (validation, checkpoints, setup), Lightning vs"
            f" plain | {lt['train_ratio']:.3f}; {o['lightning']:.1f} s vs {o['plain']:.1f} s | | |"]


def sections(only: str, allowed: tuple[str, ...]) -> list[str] | None:
    """The sections ``--only`` names, in its order; None (and the error on stderr) for an unknown one."""
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    bad = [s for s in chosen if s not in allowed]
    if bad or not chosen:
        print(f"error: --only {only!r}: unknown section {bad}; allowed: {', '.join(allowed)}", file=sys.stderr)
        return None
    return chosen


def writable(out: Path) -> bool:
    """Whether ``out``'s folder takes a file (made if missing); checked before minutes of measuring, not
    after: the figures must have somewhere to go. False with the error on stderr."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".bench-"):
            pass
    except OSError as err:
        print(f"error: --out {out}: cannot write there ({err.strerror}); allowed: a file in a writable folder",
              file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, from: {', '.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=3, help="Lightning/plain pairs (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny workloads: checks the bench, not the speed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench.json", help="where bench.json goes")
    args = parser.parse_args(argv)
    chosen = sections(args.only, SECTIONS)
    if chosen is None:
        return 2
    if args.reps < 1:
        print(f"error: --reps {args.reps}; allowed: an integer >= 1", file=sys.stderr)
        return 2
    if not writable(args.out):
        return 2
    sys.path.insert(0, str(ROOT / "src"))
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    out: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    for name, fn in (("startup", bench_startup), ("metrics", bench_metrics), ("lightning", bench_lightning), ("backbones", bench_backbones), ("data", bench_data), ("images", bench_images),
                     ("diagnostics", bench_diagnostics), ("e2e", bench_e2e),
                     ("sweep", bench_sweep)):
        if name in chosen:
            print(f"[{name}]", flush=True)
            fn(args, out)
    text = table(out)
    from xfer.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(args.out, out)  # a run stopped while writing never leaves half a file
    if "startup" in out:
        text += "\n\n" + trees(out["startup"])
    atomic_write_bytes(args.out.with_suffix(".md"), (text + "\n").encode())
    print(text)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
