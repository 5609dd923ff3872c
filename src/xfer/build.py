"""Turn config nodes into objects: data modules, parts and models, freezing strategies, trainers."""
from __future__ import annotations

import inspect
import os
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor
from pytorch_lightning.callbacks.progress import ProgressBar
from torch import nn

from xfer.callbacks import EpochSeed, ProcessGroupTeardown, StageTimer
from xfer.checkpoints import write_checkpoints_atomically
from xfer.data.module import SplitDataModule
from xfer.data.spec import DataSpec
from xfer.errors import ConfigError, DataError
from xfer.failure import innermost
from xfer.freezing import Freezing, FreezingCallback, param_groups
from xfer.models.module import TransferModule, default_param_groups


def to_dict(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


_DATA_KEY = re.compile(r"(?<![\w/.~-])(?:source|target)\.(?=reader\.|image_size\b|classes\b|group_column\b|max_len\b|height\b|width\b|font_size\b|wrap\b)")


def modality(cfg: DictConfig) -> str:
    """The modality (``image``, ``text``) of the data module ``cfg`` (a ``source``/``target`` node) names,
    without reading its data."""
    return str(getattr(get_object(str(cfg._target_)), "modality", ""))


def datamodule(cfg: DictConfig, seed: int) -> SplitDataModule:
    """The data module of ``cfg`` (the ``source`` or ``target`` node), set up. A data set can be either: its
    error messages name the settings on the side it is used on (``source.reader.path``, not ``target.``)."""
    try:
        dm = instantiate(cfg, seed=seed, _convert_="all")
        dm.setup()
    except Exception as err:  # noqa: BLE001 - only a DataError or ConfigError is reworded; the rest passes as it is
        side = cfg._key() if isinstance(cfg, DictConfig) else None
        cause = innermost(err)
        if isinstance(cause, (DataError, ConfigError)) and side in ("source", "target"):
            # only config keys (source.reader.path, target.image_size), never a file's name such as /data/source.csv
            raise type(cause)(_DATA_KEY.sub(f"{side}.", str(cause))) from None
        raise
    return dm


def freezing(cfg: DictConfig, name: str) -> Freezing:
    """The freezing strategy of ``cfg`` (the ``strategy`` node), named after its config choice."""
    built = instantiate(cfg, _convert_="all")
    built.name = name
    return built


def trunk(cfg: DictConfig) -> nn.Module:
    return instantiate(cfg)


def adapter_and_head(spec: DataSpec, trunk: nn.Module, adapter_cfg: DictConfig, head_cfg: DictConfig
                     ) -> tuple[nn.Module, nn.Module]:
    extra: dict[str, Any] = {}
    # an adapter for a trunk with its own stem (pretrained_image) gets the trunk's preprocessing
    if "preprocessing" in inspect.signature(get_object(str(adapter_cfg._target_))).parameters:
        extra["preprocessing"] = getattr(trunk, "preprocessing", None)
    try:
        adapter = instantiate(adapter_cfg, spec=spec, out_channels=trunk.in_channels, **extra)
    except Exception as err:  # noqa: BLE001 - an error about one of the adapter's settings names its key
        cause, key = innermost(err), adapter_cfg._key() if isinstance(adapter_cfg, DictConfig) else None
        setting = str(cause).split("=", 1)[0]
        if isinstance(cause, ConfigError) and key and setting.isidentifier() and setting in adapter_cfg:
            raise ConfigError(f"{key}.{cause}") from None  # embed_dim=... -> target_adapter.embed_dim=...
        raise
    head = instantiate(head_cfg, in_features=trunk.out_features, num_classes=spec.num_classes)
    return adapter, head


def model(spec: DataSpec, trunk: nn.Module, adapter_cfg: DictConfig, head_cfg: DictConfig,
          optim: dict[str, Any], freezing: Freezing | None = None, cls: type[TransferModule] = TransferModule,
          **extra: Any) -> TransferModule:
    """adapter (for this data) -> ``trunk`` -> new head; the freezing strategy, if any, supplies the groups."""
    adapter, head = adapter_and_head(spec, trunk, adapter_cfg, head_cfg)
    # a partial, not a lambda: ddp_spawn pickles the module into its worker processes
    groups = default_param_groups if freezing is None else partial(param_groups, freezing=freezing, optim=optim, epoch=0)
    return cls(adapter, trunk, head, spec.num_classes, optim, groups, **extra)


def freezing_callbacks(freezing: Freezing, optim: dict[str, Any]) -> list[Callback]:
    return [FreezingCallback(freezing, optim), *freezing.callbacks()]


def configured_callbacks(cfg: DictConfig, ckpt_dir: Path, logger: Any) -> list[Callback]:
    """``cfg.callbacks``: every node that is not null, built (a node may build one callback or a list). A
    node whose callback needs what this run lacks is left out: progress bars without
    ``trainer.enable_progress_bar``, lr monitors without a logger."""
    out: list[Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        # a callback that writes files (checkpoints) gets the stage's folder
        wants_dir = "dirpath" in inspect.signature(get_object(str(node._target_))).parameters
        built = instantiate(node, **({"dirpath": str(ckpt_dir)} if wants_dir else {}), _convert_="all")
        for cb in built if isinstance(built, (list, tuple)) else [built]:
            if isinstance(cb, ProgressBar) and not cfg.trainer.get("enable_progress_bar", True):
                continue
            if isinstance(cb, LearningRateMonitor) and not logger:
                continue
            out.append(cb)
    return out


def stage_logger_args(node: DictConfig, run_dir: Path, stage: str) -> dict[str, Any]:
    """Where a logger writes one stage of a run, inside the run folder: TensorBoard and CSV (and any logger
    that takes ``save_dir`` and ``version``) in <run>/<name>/<stage>; MLflow a file store <run>/mlruns with a
    run per stage (named after it); Weights & Biases <run>/wandb with a run per stage, its id unique to the
    run folder and stage (so runs never collide when synced); a W&B run still open (the previous stage's, or
    the previous job's in a sweep) is finished first."""
    cls = get_object(node._target_)
    name = getattr(cls, "__name__", "")
    if name == "MLFlowLogger":
        if not node.get("tracking_uri"):  # the local file store: MLflow 3 wants this opt-in for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return {"save_dir": str(run_dir / "mlruns"), "run_name": stage}
    if name == "WandbLogger":
        import wandb

        if wandb.run is not None:  # the last stage's or sweep job's run: a new WandbLogger would log into it
            wandb.finish()
        return {"save_dir": str(run_dir), "version": f"{run_dir.name}-{stage}", "name": f"{run_dir.name}/{stage}"}
    return {"save_dir": str(run_dir), "version": stage}


def trainer(cfg: DictConfig, run_dir: Path, stage: str, callbacks: list[Callback],
            **overrides: Any) -> pl.Trainer:
    """The Trainer of one stage: every logger of ``cfg.logger`` (a mapping of names to ``_target_`` nodes,
    each writing under the run folder, one version per stage), the configured callbacks (checkpoints first: ``Trainer.test(ckpt_path=
    "best")`` uses the first), per-epoch reseeding and timing, then ``callbacks`` (the strategy's). Checkpoints
    are written by ``AtomicCheckpointIO`` (``write_checkpoints_atomically``)."""
    loggers = [instantiate(node, **stage_logger_args(node, run_dir, stage))
               for node in (cfg.get("logger") or {}).values() if node is not None]
    logger: Any = loggers or False
    configured = configured_callbacks(cfg, run_dir / "checkpoints" / stage, logger)
    trainer = instantiate(cfg.trainer, logger=logger, default_root_dir=str(run_dir), **overrides,
                          callbacks=[*configured, EpochSeed(int(cfg.seed)), StageTimer(), ProcessGroupTeardown(),
                                     *callbacks])
    write_checkpoints_atomically(trainer.strategy)
    return trainer
