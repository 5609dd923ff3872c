"""The Lightning callbacks of a stage.

Configurable ones come from ``conf/callbacks/`` as ``_target_`` nodes (``callbacks.<name>: null``
switches one off); ``stage_checkpoints`` and ``progress_bar`` are the targets xfer ships there.
``EpochSeed`` and ``StageTimer`` are always on: resuming and results.json depend on them; so is
``ProcessGroupTeardown``, which ends a distributed worker cleanly.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from xfer.machine import rss_mib
from xfer.seeding import epoch_seed

# Trainer.test(ckpt_path="best") uses the first ModelCheckpoint, the best-validation one; LastEveryEpoch
# comes after it, so Lightning's warning about several ModelCheckpoint callbacks says nothing here.
warnings.filterwarnings("ignore", message=r".*configured with multiple `ModelCheckpoint` callbacks.*")


class LastEveryEpoch(ModelCheckpoint):
    """``last.ckpt`` at the end of every epoch. Lightning 2.6 writes ``save_last`` only when the
    monitored checkpoint improves, so without this a resumed run would restart from the best epoch
    instead of the latest one. Runs after the best-checkpoint callback, so its state is current."""

    def __init__(self, dirpath: str | os.PathLike):
        super().__init__(dirpath=str(dirpath), filename="last", monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False)
        self.epochs_saved = 0  # the epochs last.ckpt holds: where a resume continues (an interrupted run says it)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.epochs_saved = trainer.current_epoch + 1  # saved at an epoch's end, before Lightning counts it


def stage_checkpoints(dirpath: str | os.PathLike, monitor: str, mode: str, save_last: bool | str
                      ) -> list[ModelCheckpoint]:
    """``best.ckpt`` (the best ``monitor`` so far, what the stage is tested with) and, with ``save_last``,
    ``last.ckpt`` at every epoch end, so a resumed run loses at most one epoch. ``dirpath`` is the
    stage's own folder, ``<run>/checkpoints/<stage>``."""
    every_epoch = bool(save_last)
    best = ModelCheckpoint(dirpath=str(dirpath), filename="best", monitor=monitor, mode=mode,
                           auto_insert_metric_name=False, save_last=False if every_epoch else save_last)
    return [best, *([LastEveryEpoch(dirpath)] if every_epoch else [])]


def progress_bar(refresh_rate: int) -> Callback:
    """Rich's bar where rich is installed, else tqdm's, redrawn every ``refresh_rate`` steps (Lightning's
    default, every step, costs 1-2 ms a step on a CPU)."""
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
    from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

    return RichProgressBar(refresh_rate=refresh_rate) if _RICH_AVAILABLE else TQDMProgressBar(refresh_rate=refresh_rate)


class ProcessGroupTeardown(Callback):
    """Destroys the process group when a distributed worker process exits.

    Lightning destroys it at exit only for NCCL. A gloo (CPU) worker of ``ddp_spawn`` then exits with its
    group alive, and the group's C++ threads can be torn down unjoined during interpreter shutdown:
    ``terminate called without an active exception``, the rank dies of SIGABRT and the job fails after it
    had finished (one DDP sweep test in about 30 did). Registered in ``setup``, inside each worker, after
    the group exists; ``atexit`` runs before the interpreter's own teardown."""

    _registered_pid: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        import atexit

        import torch.distributed as dist

        pid = os.getpid()
        if ProcessGroupTeardown._registered_pid != pid and dist.is_available() and dist.is_initialized():
            ProcessGroupTeardown._registered_pid = pid
            atexit.register(destroy_process_group)


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class EpochSeed(Callback):
    """Reseeds every RNG at the start of each training epoch from (seed, epoch): dropout and any other
    randomness then do not depend on what ran before, so a run resumed from an epoch-end checkpoint
    ends with the same weights as an uninterrupted one."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)


class StageTimer(Callback):
    """Where a stage's time goes: training steps (data included), validation, the first step's wall
    clock time (start-up is measured against it) and the process's resident memory once that step is
    done (Linux; what start-up left in memory, the optimizer's first step included), and the samples
    trained on."""

    def __init__(self) -> None:
        self.first_step_unix: float | None = None
        self.first_step_rss_mib: float | None = None
        self.train_s = self.val_s = 0.0
        self.steps = self.samples = 0
        self._epoch_start = self._val_start = 0.0
        self._val_in_epoch = 0.0
        self._start_step = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._val_in_epoch = time.perf_counter(), 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_unix is None:
            self.first_step_unix = time.time()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_step = trainer.global_step  # a resumed run starts past 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.first_step_rss_mib is None and trainer.global_step > self._start_step:
            self.first_step_rss_mib = rss_mib()  # once the optimizer stepped (accumulate_grad_batches: the Nth batch)
        self.steps += 1
        self.samples += _batch_len(batch)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        spent = time.perf_counter() - self._val_start
        self.val_s += spent
        self._val_in_epoch += spent

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_s += time.perf_counter() - self._epoch_start - self._val_in_epoch

    def summary(self) -> dict[str, float | int | None]:
        rate = self.samples / self.train_s if self.train_s > 0 else None
        return {"first_step_unix": self.first_step_unix, "first_step_rss_mib": self.first_step_rss_mib,
                "train_s": round(self.train_s, 3),
                "val_s": round(self.val_s, 3), "steps": self.steps, "samples": self.samples,
                "samples_per_s": None if rate is None else round(rate, 1)}


def _batch_len(batch: Any) -> int:
    """Samples in a batch: (x, y), or a dict of those (joint training counts its target batch)."""
    if isinstance(batch, dict):
        batch = batch.get("target", next(iter(batch.values())))
    return len(batch[-1]) if isinstance(batch, (list, tuple)) else len(batch)


def stage_timing(trainer: pl.Trainer) -> dict[str, Any]:
    """The stage's StageTimer figures; empty where this process did not train (under ddp_spawn the
    worker processes train copies of the callbacks)."""
    timer = next((c for c in trainer.callbacks if isinstance(c, StageTimer)), None)
    return {} if timer is None or timer.steps == 0 else timer.summary()


class WeightDrift(Callback):
    """How far each trunk block moved: ``|w - w0| / |w0|`` over the block's parameters, w0 the weights the
    stage starts from (pretrained, source-trained or re-initialised; taken when the callback is built, before
    any checkpoint is loaded, so a resumed run measures from the same w0), after every training epoch. Logged
    as ``drift/block<i>`` and kept per epoch for results.json; the history is part of the checkpoint, so a
    resumed run keeps the epochs before it."""

    def __init__(self, trunk: Any) -> None:
        import torch

        self.blocks = [list(block.parameters()) for block in trunk.blocks]
        self.start = [[p.detach().clone() for p in params] for params in self.blocks]
        self.start_norm = [float(torch.sqrt(sum((w.double() ** 2).sum() for w in ws))) if ws else 0.0
                           for ws in self.start]
        self.names = [f"{i}:{type(block).__name__}" for i, block in enumerate(trunk.blocks)]
        self.history: list[dict[str, Any]] = []

    def drift(self) -> list[float | None]:
        import torch

        out: list[float | None] = []
        with torch.no_grad():
            for params, start, norm in zip(self.blocks, self.start, self.start_norm):
                if norm <= 0.0:
                    out.append(None)  # no parameters, or all zero at the start: no relative distance
                    continue
                moved = sum(((p.detach().double() - w.to(p.device).double()) ** 2).sum() for p, w in zip(params, start))
                out.append(float(torch.sqrt(moved)) / norm)
        return out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        values = self.drift()
        self.history.append({"epoch": trainer.current_epoch, "drift": values})
        logged = {f"drift/block{i}": v for i, v in enumerate(values) if v is not None}
        if logged and trainer.loggers:
            for logger in trainer.loggers:
                logger.log_metrics(logged, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a resume starts with no history and takes the checkpoint's; testing the best checkpoint after fit
        # loads an earlier epoch's state, which must not cut the history short
        saved = list(state_dict.get("history", []))
        if len(saved) > len(self.history):
            self.history = saved

    def summary(self) -> dict[str, Any]:
        return {"blocks": self.names, "from": "the weights the target stage started from",
                "per_epoch": self.history}
