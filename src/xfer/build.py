"""Turn config nodes into objects: data modules, models, strategies, trainers."""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from torch import nn

from xfer.data.module import SplitDataModule
from xfer.data.spec import DataSpec
from xfer.models.module import TransferModule, default_param_groups
from xfer.freezing import FreezingCallback, Freezing, param_groups


def to_dict(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def datamodule(cfg: DictConfig, seed: int) -> SplitDataModule:
    dm = instantiate(cfg, seed=seed, _convert_="all")
    dm.setup()
    return dm


def strategy(cfg: DictConfig) -> Freezing:
    return instantiate(cfg, _convert_="all")


def adapter_and_head(spec: DataSpec, trunk: nn.Module, adapter_cfg: DictConfig, head_cfg: DictConfig
                     ) -> tuple[nn.Module, nn.Module]:
    adapter = instantiate(adapter_cfg, spec=spec, out_channels=trunk.in_channels)
    head = instantiate(head_cfg, in_features=trunk.out_features, num_classes=spec.num_classes)
    return adapter, head


def model(spec: DataSpec, trunk: nn.Module, adapter_cfg: DictConfig, head_cfg: DictConfig,
          optim: dict[str, Any], strat: Freezing | None = None, cls: type[TransferModule] = TransferModule,
          **extra: Any) -> TransferModule:
    """adapter (for this data) -> ``trunk`` -> new head; the strategy, if any, supplies the groups."""
    adapter, head = adapter_and_head(spec, trunk, adapter_cfg, head_cfg)
    # a partial, not a lambda: ddp_spawn pickles the module into its worker processes
    groups = default_param_groups if strat is None else partial(param_groups, strategy=strat, optim=optim, epoch=0)
    return cls(adapter, trunk, head, spec.num_classes, optim, groups, **extra)


def strategy_callbacks(strat: Freezing, optim: dict[str, Any]) -> list[Callback]:
    return [FreezingCallback(strat, optim), *strat.callbacks()]


class EpochSeed(Callback):
    """Reseeds every RNG at the start of each training epoch from (seed, epoch): dropout and any other
    randomness then do not depend on what ran before, so a run resumed from an epoch-end checkpoint
    ends with the same weights as an uninterrupted one."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed * 1009 + trainer.current_epoch, workers=True, verbose=False)


def _progress_bar(refresh_rate: int) -> Callback:
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
    from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

    return RichProgressBar(refresh_rate=refresh_rate) if _RICH_AVAILABLE else TQDMProgressBar(refresh_rate=refresh_rate)


class StageTimer(Callback):
    """Where a stage's time goes: training steps (data included), validation, the first step's wall
    clock time (start-up is measured against it), and the samples trained on."""

    def __init__(self) -> None:
        self.first_step_unix: float | None = None
        self.train_s = self.val_s = 0.0
        self.steps = self.samples = 0
        self._epoch_start = self._val_start = 0.0
        self._val_in_epoch = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start, self._val_in_epoch = time.perf_counter(), 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_unix is None:
            self.first_step_unix = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
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
        return {"first_step_unix": self.first_step_unix, "train_s": round(self.train_s, 3),
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


def trainer(cfg: DictConfig, run_dir: Path, stage: str, callbacks: list[Callback],
            **overrides: Any) -> pl.Trainer:
    """The Trainer of one stage, with every callback a run uses (``callbacks``: the strategy's)."""
    from xfer.evaluate import LastEveryEpoch

    logger: Any = False
    if cfg.get("logger"):
        logger = instantiate(cfg.logger, save_dir=str(run_dir), name="tb", version=stage)
    ck = cfg.callbacks.checkpoint
    ckpt_dir = run_dir / "checkpoints" / stage
    # last.ckpt at every epoch end (resume loses <= 1 epoch) comes from LastEveryEpoch, placed after the
    # best-checkpoint callback; that one then keeps save_last off, or it would save the same file twice
    every_epoch = bool(ck.get("save_last")) and not cfg.trainer.get("fast_dev_run")
    all_callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor=ck.monitor, mode=ck.mode,
                        auto_insert_metric_name=False, save_last=False if every_epoch else ck.save_last),
        EpochSeed(int(cfg.seed)),
        StageTimer(),
        *callbacks,
        *([LastEveryEpoch(ckpt_dir)] if every_epoch else []),
    ]
    if cfg.trainer.get("enable_progress_bar", True):
        # Lightning's default bar redraws every step: 1-2 ms a step on a CPU (10% of a step here)
        all_callbacks.append(_progress_bar(int(cfg.callbacks.get("progress_bar_refresh", 1))))
    if cfg.callbacks.lr_monitor and logger:
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.callbacks.get("early_stopping"):
        all_callbacks.append(instantiate(cfg.callbacks.early_stopping))
    return instantiate(cfg.trainer, logger=logger, callbacks=all_callbacks, default_root_dir=str(run_dir),
                       **overrides)
