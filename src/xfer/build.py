"""Turn config nodes into objects: data modules, models, strategies, trainers."""
from __future__ import annotations

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
from xfer.strategies import FreezeSchedule, Strategy, param_groups


def to_dict(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def datamodule(cfg: DictConfig, seed: int) -> SplitDataModule:
    dm = instantiate(cfg, seed=seed, _convert_="all")
    dm.setup()
    return dm


def strategy(cfg: DictConfig) -> Strategy:
    return instantiate(cfg, _convert_="all")


def adapter_and_head(spec: DataSpec, trunk: nn.Module, adapter_cfg: DictConfig, head_cfg: DictConfig
                     ) -> tuple[nn.Module, nn.Module]:
    adapter = instantiate(adapter_cfg, spec=spec, out_channels=trunk.in_channels)
    head = instantiate(head_cfg, in_features=trunk.out_features, num_classes=spec.num_classes)
    return adapter, head


def model(spec: DataSpec, trunk: nn.Module, adapter_cfg: DictConfig, head_cfg: DictConfig,
          optim: dict[str, Any], strat: Strategy | None = None, cls: type[TransferModule] = TransferModule,
          **extra: Any) -> TransferModule:
    """adapter (for this data) -> ``trunk`` -> new head; the strategy, if any, supplies the groups."""
    adapter, head = adapter_and_head(spec, trunk, adapter_cfg, head_cfg)
    # a partial, not a lambda: ddp_spawn pickles the module into its worker processes
    groups = default_param_groups if strat is None else partial(param_groups, strategy=strat, optim=optim, epoch=0)
    return cls(adapter, trunk, head, spec.num_classes, optim, groups, **extra)


def strategy_callbacks(strat: Strategy, optim: dict[str, Any]) -> list[Callback]:
    return [FreezeSchedule(strat, optim), *strat.callbacks()]


class EpochSeed(Callback):
    """Reseeds every RNG at the start of each training epoch from (seed, epoch): dropout and any other
    randomness then do not depend on what ran before, so a run resumed from an epoch-end checkpoint
    ends with the same weights as an uninterrupted one."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed * 1009 + trainer.current_epoch, workers=True, verbose=False)


def trainer(cfg: DictConfig, run_dir: Path, stage: str, callbacks: list[Callback],
            **overrides: Any) -> pl.Trainer:
    logger: Any = False
    if cfg.get("logger"):
        logger = instantiate(cfg.logger, save_dir=str(run_dir), name="tb", version=stage)
    ck = cfg.callbacks.checkpoint
    all_callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints" / stage), filename="best", monitor=ck.monitor,
                        mode=ck.mode, save_last=ck.save_last, auto_insert_metric_name=False),
        EpochSeed(int(cfg.seed)),
        *callbacks,
    ]
    if cfg.callbacks.lr_monitor and logger:
        all_callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.callbacks.get("early_stopping"):
        all_callbacks.append(instantiate(cfg.callbacks.early_stopping))
    return instantiate(cfg.trainer, logger=logger, callbacks=all_callbacks, default_root_dir=str(run_dir),
                       **overrides)
