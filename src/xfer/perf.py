"""Measuring instruments for ``scripts/bench.py``: the machine's matmul rate, a model's FLOPs, a plain
PyTorch training loop to hold Lightning against, the data path alone, and the memory of a process tree.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from xfer.checkpoints import save_atomic
from xfer.machine import vm_rss_bytes
from xfer.seeding import epoch_seed

try:
    from xfer.models.module import clip_grad_norm_  # how TransferModule clips on a CPU
except ImportError:  # an older xfer under the same bench (before/after figures)
    clip_grad_norm_ = torch.nn.utils.clip_grad_norm_


def matmul_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    """fp32 ``torch.mm`` of two n x n matrices, GFLOP/s at the current thread count (best of 3 spans)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            torch.mm(a, b)
            count += 1
        best = max(best, 2 * n**3 * count / elapsed / 1e9)
    return best


def train_step_flops(module: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
    """FLOPs of one training step's forward and backward pass on ``batch`` (the optimizer's
    element-wise update is not counted: torch.utils.flop_counter counts matmuls and convolutions)."""
    x, y = batch
    was_training = module.training
    module.train()
    rng = torch.get_rng_state()
    with FlopCounterMode(display=False) as counter:
        loss = nn.functional.cross_entropy(module(x), y)
        loss.backward()
    torch.set_rng_state(rng)
    module.zero_grad(set_to_none=True)
    module.train(was_training)
    return int(counter.get_total_flops())


@dataclass
class LoopTiming:
    wall_s: float
    train_s: float
    val_s: float
    steps: int
    samples: int
    val_acc: float


def sync(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (a CUDA clock read is only true after it); a no-op on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device | str | None, bf16: bool):
    """What Lightning's ``precision=bf16-mixed`` wraps a step's forward pass in; nothing without ``bf16``."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device or "cpu").type, dtype=torch.bfloat16)


def train_step(module: Any, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], x: torch.Tensor,
               y: torch.Tensor, gradient_clip_val: float | None, forward: Callable[[torch.Tensor], torch.Tensor]
               | None = None, bf16: bool = False) -> None:
    """One training step as TransferModule takes it under Lightning: forward (through ``forward``, a compiled
    one say, else the module; in bf16 autocast with ``bf16``), loss, backward, clipping (as TransferModule
    clips on a CPU), optimizer step."""
    with autocast(x.device, bf16):
        loss = module.criterion((module if forward is None else forward)(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if gradient_clip_val:
        clip_grad_norm_(params, gradient_clip_val)
    optimizer.step()


def step_rate(module: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int, steps: int = 60,
              warmup: int = 10, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
              bf16: bool = False, timings: dict[str, float] | None = None) -> float:
    """Training samples per second of the bare step (``train_step``, clipping at 1.0) at ``batch_size``,
    on batches cut from ``x``/``y`` in order (on their device: the module must be there too); the module's
    weights change. ``timings``, when given, receives ``warmup_s``: the warm-up steps' wall time (a
    compiled ``forward`` compiles there)."""
    optimizer, _ = module.make_optimizer(steps + warmup)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    module.train()
    n = len(y) // batch_size
    start = begin = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            sync(x.device)
            start = time.perf_counter()
        j = i % n * batch_size
        train_step(module, optimizer, params, x[j:j + batch_size], y[j:j + batch_size], 1.0, forward, bf16)
    sync(x.device)
    if timings is not None:
        timings["warmup_s"] = start - begin
    return steps * batch_size / (time.perf_counter() - start)


def step_split(module: Any, loader, device: torch.device | str, steps: int, bf16: bool = False,
               gradient_clip_val: float | None = 1.0) -> dict[str, float]:
    """Where a training step's time goes: ``data_ms``, from asking the loader for a batch until it is on
    ``device``, and ``compute_ms``, the step itself; medians over ``steps`` steps after two of warm-up.
    The device is synchronised between the two, so the sum is a little more than a free-running step."""
    device = torch.device(device)
    optimizer, _ = module.make_optimizer(steps + 2)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    module.train()
    data, compute = [], []
    batches = iter(loader)
    for i in range(steps + 2):
        t0 = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)
        t1 = time.perf_counter()
        train_step(module, optimizer, params, x, y, gradient_clip_val, bf16=bf16)
        sync(device)
        if i >= 2:
            data.append(t1 - t0)
            compute.append(time.perf_counter() - t1)
    return {"data_ms": 1e3 * statistics.median(data), "compute_ms": 1e3 * statistics.median(compute),
            "steps": steps}


def plain_fit(module: Any, dm: pl.LightningDataModule, epochs: int, seed: int,
              gradient_clip_val: float | None, limit_batches: int | None = None,
              ckpt_dir: Path | None = None, device: torch.device | str | None = None,
              bf16: bool = False) -> LoopTiming:
    """The target stage as a hand-written PyTorch loop: the same module, data order, optimizer,
    schedule, clipping and per-epoch reseeding as Lightning's fit, with a validation pass per epoch.
    With ``ckpt_dir`` it writes what a run writes, the way a run writes it (``save_atomic``): the weights,
    optimizer and schedule state as ``best.pt`` when validation accuracy improves and as ``last.pt`` every epoch. No logging, metric
    objects or callbacks. ``limit_batches``: train on that many batches per epoch (as Lightning's
    ``limit_train_batches`` given an int). ``device``: train there, the module moved and the batches
    gathered there as a Trainer on it does (``dm.place``, else a copy of each batch); ``bf16``: in bf16
    autocast, as ``precision=bf16-mixed``."""
    start = time.perf_counter()
    if device is not None:
        module.to(device)
        if hasattr(dm, "place"):
            dm.place(device)
    train_loader = dm.train_dataloader()
    val_loader = dm.val_dataloader()
    per_epoch = len(train_loader) if limit_batches is None else min(limit_batches, len(train_loader))
    optimizer, scheduler = module.make_optimizer(epochs * per_epoch)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    train_s = val_s = 0.0
    steps = samples = 0
    best_acc = -1.0
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        pl.seed_everything(epoch_seed(seed, epoch), workers=True, verbose=False)  # as callbacks.EpochSeed
        train_loader.sampler.set_epoch(epoch)
        module.train()
        for i, (x, y) in enumerate(train_loader):
            if i == per_epoch:
                break
            if device is not None:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            train_step(module, optimizer, params, x, y, gradient_clip_val, bf16=bf16)
            scheduler.step()
            steps, samples = steps + 1, samples + len(y)
        sync(device)
        train_s += time.perf_counter() - epoch_start
        val_start = time.perf_counter()
        acc = evaluate(module, val_loader, device, bf16)
        if ckpt_dir is not None:
            state = {"epoch": epoch, "state_dict": module.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict()}
            if acc > best_acc:  # written as a run writes them (AtomicCheckpointIO): temp file, fsync, rename
                save_atomic(state, ckpt_dir / "best.pt")
            save_atomic(state, ckpt_dir / "last.pt")
        best_acc = max(best_acc, acc)
        val_s += time.perf_counter() - val_start
    return LoopTiming(time.perf_counter() - start, train_s, val_s, steps, samples, best_acc)


@torch.no_grad()
def evaluate(module: nn.Module, loader, device: torch.device | str | None = None, bf16: bool = False) -> float:
    module.eval()
    correct = total = 0
    for x, y in loader:
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(x.device, bf16):
            correct += int((module(x).argmax(dim=1) == y).sum())
        total += len(y)
    module.train()
    return correct / max(1, total)


def loader_rate(dm: pl.LightningDataModule, epochs: int = 3) -> tuple[float, int]:
    """Training batches per second of the data module alone (sampler, indexing, collation), and the
    number of batches timed."""
    loader = dm.train_dataloader()
    batches, start = 0, time.perf_counter()
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for _ in loader:
            batches += 1
    return batches / (time.perf_counter() - start), batches


# -- memory of a process tree ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids




def tree_rss(pid: int) -> tuple[int, int]:
    """(sum, largest) resident set size in bytes of ``pid`` and all its descendants."""
    seen, todo, sizes = set(), [pid], []
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        sizes.append(vm_rss_bytes(p) or 0)  # a process gone meanwhile holds nothing
        todo += _children(p)
    return sum(sizes), max(sizes, default=0)


class PeakRSS:
    """Samples the resident memory of a process tree every ``interval`` s in a background thread;
    ``peak_total`` is the largest sum over the tree seen, ``peak_single`` the largest one process."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak_total = self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            total, single = tree_rss(self.pid)
            self.peak_total, self.peak_single = max(self.peak_total, total), max(self.peak_single, single)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class GpuUtilisation:
    """Samples ``nvidia-smi``'s utilisation.gpu (the share of time a kernel ran, in %) of one GPU every
    ``interval`` s in a background thread; ``mean`` is None where there is no nvidia-smi or no sample."""

    def __init__(self, index: int = 0, interval: float = 0.2):
        self.index, self.interval, self.samples = index, interval, []
        self.tool = shutil.which("nvidia-smi")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        cmd = [self.tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(self.index)]
        while not self._stop.is_set():
            try:
                self.samples.append(float(subprocess.run(cmd, capture_output=True, text=True, timeout=5,
                                                         check=True).stdout.strip()))
            except (OSError, ValueError, subprocess.SubprocessError):
                return
            self._stop.wait(self.interval)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    def __enter__(self) -> "GpuUtilisation":
        if self.tool:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start

